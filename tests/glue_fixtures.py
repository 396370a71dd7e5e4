"""Small GLUE / SuperGLUE folders in the benchmarks' originally released formats."""

import json
from pathlib import Path

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 4)) + f" {i}."


def _tsv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
NLI3 = ["entailment", "neutral", "contradiction"]


def glue_rows(name: str, count: int, offset: int = 0):
    r = range(offset, offset + count)
    if name == "CoLA":
        return None, [["gj04", i % 2, "", sentence(i)] for i in r]
    if name == "SST-2":
        return ["sentence", "label"], [[sentence(i), i % 2] for i in r]
    if name == "MRPC":
        return (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                [[i % 2, i, i + 1, sentence(i), sentence(i + 1)] for i in r])
    if name == "QQP":
        return (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                [[i, i, i + 1, sentence(i), sentence(i + 2), i % 2] for i in r])
    if name == "STS-B":
        return (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                 "score"], [[i, "g", "f", "y", i, "s", "s", sentence(i), sentence(i + 3), f"{(i * 0.37) % 5:.3f}"]
                            for i in r])
    if name == "MNLI":
        return MNLI_HEADER, [[i, i, i, "fiction", "", "", "", "", sentence(i), sentence(i + 1), NLI3[i % 3],
                              NLI3[i % 3]] for i in r]
    if name == "QNLI":
        return (["index", "question", "sentence", "label"],
                [[i, sentence(i), sentence(i + 1), ["entailment", "not_entailment"][i % 2]] for i in r])
    if name == "RTE":
        return (["index", "sentence1", "sentence2", "label"],
                [[i, sentence(i), sentence(i + 1), ["entailment", "not_entailment"][i % 2]] for i in r])
    raise KeyError(name)


def superglue_rows(name: str, count: int, offset: int = 0):
    r = range(offset, offset + count)
    if name == "BoolQ":
        return [{"question": sentence(i), "passage": sentence(i + 5), "idx": i, "label": bool(i % 2)} for i in r]
    if name == "CB":
        return [{"premise": sentence(i), "hypothesis": sentence(i + 1), "idx": i,
                 "label": ["entailment", "contradiction", "neutral"][i % 3]} for i in r]
    if name == "COPA":
        return [{"premise": sentence(i), "choice1": sentence(i + 1), "choice2": sentence(i + 2),
                 "question": ["cause", "effect"][i % 2], "idx": i, "label": i % 2} for i in r]
    if name == "WiC":
        return [{"word": WORDS[i % 12], "sentence1": sentence(i), "sentence2": sentence(i + 1), "start1": 0, "end1": 4,
                 "start2": 0, "end2": 4, "idx": i, "label": bool(i % 2)} for i in r]
    if name == "MultiRC":  # each paragraph: 2 questions of 3 answers
        return [{"idx": i, "passage": {"text": sentence(i), "questions": [
            {"idx": q, "question": sentence(i + q), "answers": [
                {"idx": a, "text": sentence(i + q + a), "label": int((i + q + a) % 2)} for a in range(3)]}
            for q in range(2)]}} for i in r]
    if name == "ReCoRD":  # each passage: 2 queries
        rows = []
        for i in r:
            text = f"Alice met Bob in Paris {i}. Carol stayed home."
            entities = [{"start": 0, "end": 4}, {"start": 10, "end": 12}, {"start": 17, "end": 21},
                        {"start": text.index("Carol"), "end": text.index("Carol") + 4}]
            qas = [{"idx": q, "query": f"@placeholder went to Paris {q}",
                    "answers": [{"start": 0, "end": 4, "text": "Alice"}] + ([{"start": 10, "end": 12, "text": "Bob"}]
                                                                         if q else [])} for q in range(2)]
            rows.append({"idx": i, "passage": {"text": text, "entities": entities}, "qas": qas})
        return rows
    raise KeyError(name)


GLUE = {"CoLA": ["train", "dev"], "SST-2": ["train", "dev"], "MRPC": ["train", "dev"], "QQP": ["train", "dev"],
        "STS-B": ["train", "dev"], "MNLI": ["train", "dev_matched", "dev_mismatched"], "QNLI": ["train", "dev"],
        "RTE": ["train", "dev"]}
SUPERGLUE = ["BoolQ", "CB", "COPA", "WiC", "MultiRC", "ReCoRD"]
TRAIN, VALIDATION = 40, 12


def write_benchmarks(root: Path) -> Path:
    """Every task's original files under root: TRAIN training and VALIDATION validation rows (groups)."""
    for name, splits in GLUE.items():
        for k, split in enumerate(splits):
            header, rows = glue_rows(name, TRAIN if split == "train" else VALIDATION, offset=1000 * k)
            _tsv(root / name / f"{split}.tsv", header, rows)
    for name in SUPERGLUE:
        _jsonl(root / name / "train.jsonl", superglue_rows(name, TRAIN))
        _jsonl(root / name / "val.jsonl", superglue_rows(name, VALIDATION, offset=1000))
    return root
