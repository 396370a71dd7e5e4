"""A manual check, run in an environment with peft (e.g. /tmp/ah-venv: transformers 4.57, peft 0.21): the PEFT-aware
loaders do not take a compacter folder for theirs (our files are compacter_config.json / compacter_model.safetensors).

    PYTHONPATH=src python -c "import compacter as c, transformers as t; m = t.AutoModel.from_pretrained(
        'tests/fixtures/adapterhub/base'); c.apply(m, 'compacter', bottleneck_size=8); m.save_pretrained('/tmp/ours')"
    /tmp/ah-venv/bin/python benchmarks/peft_ignores_our_folders.py /tmp/ours tests/fixtures/adapterhub/base
"""

import sys

import peft
import transformers


def attempt(label: str, load) -> None:
    try:
        load()
        print(f"{label} -> LOADED: a PEFT-aware loader took a compacter folder for its own")
    except Exception as error:  # every refusal is the expected outcome: print it
        print(f"{label} -> {type(error).__name__}: {str(error).splitlines()[0][:200]}")


def main(folder: str, base: str) -> None:
    transformers.logging.set_verbosity_error()
    print("peft", peft.__version__, "transformers", transformers.__version__)
    attempt("AutoModel.from_pretrained(ours)", lambda: transformers.AutoModel.from_pretrained(folder))
    attempt("PeftModel.from_pretrained(base, ours)",
            lambda: peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained(base), folder))
    attempt("AutoPeftModel.from_pretrained(ours)", lambda: peft.AutoPeftModel.from_pretrained(folder))
    attempt("model.load_adapter(ours)", lambda: transformers.AutoModel.from_pretrained(base).load_adapter(folder))


if __name__ == "__main__":
    main(*sys.argv[1:3])
