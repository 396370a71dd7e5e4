"""Trust at the boundaries, second round (issue 23): one writer per run folder, task names that cannot leave their
folder, integrity of everything an adapter or run folder says, and clear errors instead of tracebacks."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from conftest import tiny_t5
from safetensors.torch import load_file, save_file
from training_fixtures import make_workspace

import compacter
from compacter.locking import LOCK_FILE, WRITER_FILE, FolderInUse, folder_lock
from compacter.training import TrainConfig, train
from compacter.training.search import train_with_lr_search


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("trust-workspace"))


def run_config(workspace, output, **settings):
    values = dict(model=str(workspace["bert"]), task=str(workspace["csv"]), method="compacter++",
                  text_column="review", label_column="sentiment", epochs=1, batch_size=16, eval_steps=4,
                  output_dir=str(output))
    return TrainConfig(**{**values, **settings})


@contextlib.contextmanager
def held_by_another_process(folder):
    """A separate python process holding ``folder``'s lock until the block ends (it is then killed with SIGKILL)."""
    code = textwrap.dedent(f"""
        import sys, time
        from compacter.locking import folder_lock
        with folder_lock({str(folder)!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# ---------------------------------------------------------------- one writer per run folder

def test_a_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    with held_by_another_process(folder) as holder:
        with pytest.raises(FolderInUse, match=rf"{folder} is in use by another compacter process \(pid "
                                              rf"{holder.pid}, started \d{{4}}-\d\d-\d\d "):
            with folder_lock(folder):
                pass
    # the holder was killed with SIGKILL: its writer file is still there, the lock is free
    assert (folder / WRITER_FILE).is_file()
    with folder_lock(folder):
        assert f"taking over from compacter process {holder.pid}" in capsys.readouterr().err
        assert f'"pid": {os.getpid()}' in (folder / WRITER_FILE).read_text()
        with pytest.raises(FolderInUse):  # the same process writing twice is refused too
            with folder_lock(folder):
                pass
    assert list(folder.iterdir()) == []  # the folder is left as the writer found it


def test_a_lock_on_a_folder_that_stays_empty_leaves_nothing(tmp_path):
    with folder_lock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / LOCK_FILE).exists()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_on_a_file_removed_under_it_is_taken_again(tmp_path, monkeypatch):
    """A writer that opened the lock file just before the previous one removed it locks the new file instead."""
    import compacter.locking as locking

    calls = []
    real = locking._holds_the_file_there

    def first_one_stale(lock):
        calls.append(1)
        return len(calls) > 1 and real(lock)
    monkeypatch.setattr(locking, "_holds_the_file_there", first_one_stale)
    with folder_lock(tmp_path):
        assert len(calls) == 2


def test_train_lr_auto_sweep_and_the_trainer_take_the_lock(workspace, tmp_path):
    from compacter.experiments import read_sweep, run_sweep
    from compacter.integrations import Trainer

    folder = tmp_path / "shared"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"output_dir: {folder}\nmodels: [{workspace['bert']}]\ntasks: [{workspace['csv']}]\n"
                          "methods: [compacter++]\nsettings: {text_column: review, label_column: sentiment, epochs: 1}\n")
    model = compacter.apply(tiny_t5(), "compacter++")
    args = transformers.Seq2SeqTrainingArguments(output_dir=str(folder), max_steps=1, report_to=[], use_cpu=True)
    rows = [{"input_ids": torch.ones(4, dtype=torch.long), "labels": torch.ones(2, dtype=torch.long)}] * 2
    with held_by_another_process(folder) as holder:
        message = f"{folder} is in use by another compacter process \\(pid {holder.pid}"
        with pytest.raises(FolderInUse, match=message):
            train(run_config(workspace, folder, learning_rate=1e-3))
        with pytest.raises(FolderInUse, match=message):
            train_with_lr_search(run_config(workspace, folder), grid=[1e-3, 3e-3])
        with pytest.raises(FolderInUse, match=message):
            run_sweep(read_sweep(sweep_file))
        with pytest.raises(FolderInUse, match=message):
            Trainer(model=model, args=args, train_dataset=rows).train()
        assert {p.name for p in folder.iterdir()} == {LOCK_FILE, WRITER_FILE}  # nothing was written


def test_the_cli_says_the_folder_is_in_use(workspace, tmp_path, capsys):
    from compacter.cli import main

    folder = tmp_path / "run"
    with held_by_another_process(folder) as holder:
        code = main(["train", "--model", str(workspace["bert"]), "--task", str(workspace["csv"]), "--text-column",
                     "review", "--label-column", "sentiment", "--lr", "1e-3", "--output-dir", str(folder)])
    assert code == 2
    assert f"{folder} is in use by another compacter process (pid {holder.pid}" in capsys.readouterr().err


# ---------------------------------------------------------------- task names that cannot escape

BAD_NAMES = ["/abs/path", "sub/dir", "..", "", ".hidden", "a.b", "a b", "tab\t", "x" * 101, "ré"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_task_name_that_is_not_an_identifier_is_refused(name, tmp_path):
    model = tiny_t5()
    with pytest.raises(ValueError, match="may hold only ASCII letters, digits, '-' and '_'"):
        compacter.apply(model, "compacter++", name=name)
    assert compacter.tasks(model) == []


def test_names_are_checked_where_a_user_passes_them():
    model = compacter.apply(tiny_t5(), "compacter++", name="rte")
    compacter.apply(model, "compacter++", name="mrpc-2")
    for call in (lambda: compacter.set_active(model, ""), lambda: compacter.delete(model, "../rte"),
                 lambda: compacter.route(model, ["rte", "/x"]).__enter__()):
        with pytest.raises(ValueError, match="may hold only ASCII letters"):
            call()
    for call, kind in ((lambda: compacter.set_active(model, ["rte"]), "list"),
                       (lambda: compacter.route(model, [None] * 3).__enter__(), "NoneType")):
        with pytest.raises(ValueError, match=f"must be a string, got {kind}"):
            call()
    assert compacter.active_task(model) == "mrpc-2"
    with compacter.route(model, ["rte", "mrpc-2"]):
        with pytest.raises(ValueError, match="set_active\\(\\) inside compacter.route\\(\\)"):
            compacter.set_active(model, "rte")
        with pytest.raises(ValueError, match="Task 'rte' is routed by the compacter.route\\(\\) block"):
            compacter.delete(model, "rte")
    assert compacter.tasks(model) == ["rte", "mrpc-2"] and compacter.active_task(model) == "mrpc-2"


@pytest.mark.parametrize("name", ["/abs/path", "sub/dir", "../up"])
def test_a_name_from_a_file_is_checked_and_nothing_is_written_outside(name, tmp_path):
    from test_inputs_adapters import forge

    from compacter.saving import CONFIG_FILE

    model = compacter.apply(tiny_t5(), "compacter++", name="rte")
    compacter.save(model, tmp_path / "saved")
    description = json.loads((tmp_path / "saved" / CONFIG_FILE).read_text())
    description["name"] = str(tmp_path / "escaped") if name == "/abs/path" else name
    forge(tmp_path / "saved", description)  # sealed again: only the name check stands in the way
    base = tiny_t5()
    for rename in (None, "renamed"):  # the file is refused whole, whatever name the task would get
        with pytest.raises(ValueError, match="its task 'name' may hold only ASCII letters"):
            compacter.load(base, tmp_path / "saved", name=rename)
    assert compacter.tasks(base) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_save_pretrained_writes_each_task_inside_its_folder(tmp_path):
    model = compacter.apply(tiny_t5(), "compacter++")
    compacter.apply(model, "compacter++", name="rte")
    model.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "compacter_config.json",
                                                                     "compacter_model.safetensors", "rte"]


# ---------------------------------------------------------------- integrity of everything an adapter says

def trained_t5(seed=1):
    model = compacter.apply(tiny_t5(seed=seed), "compacter")
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.add_(0.05)
    return model


def outputs(model, seq2seq_batch):
    with torch.no_grad():
        return model(**seq2seq_batch).logits


def test_an_edited_method_setting_is_refused(tmp_path):
    from compacter.saving import CONFIG_FILE

    compacter.save(trained_t5(), tmp_path)
    description = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert description["method"]["activation"] == "gelu"
    description["method"]["activation"] = "relu"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(description, indent=2))
    with pytest.raises(ValueError, match="compacter_config.json was changed after compacter wrote it"):
        compacter.load(tiny_t5(seed=1), tmp_path)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16, torch.bfloat16])
def test_tensors_stored_in_another_dtype_are_refused_even_with_the_manifest_recomputed(dtype, tmp_path):
    from test_inputs_adapters import forge

    from compacter.saving import CONFIG_FILE, WEIGHTS_FILE, _sha256

    compacter.save(trained_t5(), tmp_path)
    tensors = {key: value.to(dtype) for key, value in load_file(str(tmp_path / WEIGHTS_FILE)).items()}
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))
    description = json.loads((tmp_path / CONFIG_FILE).read_text())
    with pytest.raises(ValueError, match=f"is stored as {str(dtype)[6:]}, but compacter_config.json records float32"):
        compacter.load(tiny_t5(seed=1), tmp_path)
    for key, tensor in tensors.items():  # a forger records the new dtype and checksums, and seals again
        description["tensors"][key].update(dtype=str(dtype)[6:], sha256=_sha256(tensor))
    forge(tmp_path, description)
    base = tiny_t5(seed=1)
    with pytest.raises(ValueError, match=f"is stored as {str(dtype)[6:]}, but the method trains it in float32"):
        compacter.load(base, tmp_path)
    assert compacter.tasks(base) == []


def test_an_adapter_written_by_the_previous_version_still_loads(tmp_path, seq2seq_batch):
    """Today's folders (no seal, no header naming the config, no base sample) are read as before."""
    from compacter.saving import CONFIG_FILE, WEIGHTS_FILE

    model = trained_t5()
    compacter.save(model, tmp_path)
    description = json.loads((tmp_path / CONFIG_FILE).read_text())
    for key in ("sha256", "base_weights"):
        del description[key]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(description, indent=2))
    save_file(load_file(str(tmp_path / WEIGHTS_FILE)), str(tmp_path / WEIGHTS_FILE),
              metadata={"format": "compacter-adapter/2"})
    loaded = compacter.load(tiny_t5(seed=1), tmp_path)
    assert torch.equal(outputs(loaded, seq2seq_batch), outputs(model, seq2seq_batch))


def test_another_base_with_the_same_architecture_is_detected(tmp_path, recwarn):
    compacter.save(trained_t5(seed=1), tmp_path)
    with pytest.warns(UserWarning, match=r"trained on a base model of this architecture with other weights \(\d of "
                                         r"the 8 weights sampled"):
        compacter.load(tiny_t5(seed=2), tmp_path)
    base = tiny_t5(seed=2)
    with pytest.raises(ValueError, match="with other weights"):
        compacter.load(base, tmp_path, strict=True)
    assert compacter.tasks(base) == []
    recwarn.clear()
    compacter.load(tiny_t5(seed=1).to(torch.bfloat16), tmp_path, strict=True)  # the same base in bf16: no doubt
    compacter.load(tiny_t5(seed=1), tmp_path, strict=True)
    assert not [w for w in recwarn if "other weights" in str(w.message)]


def test_a_reader_sees_the_old_or_the_new_adapter_never_a_mix(tmp_path):
    import threading

    from compacter.saving import read_adapter

    models = [trained_t5(seed=1), trained_t5(seed=1)]
    with torch.no_grad():
        for param in compacter.trainable_parameters(models[1]).values():
            param.mul_(-1)
    versions = [{key: value.detach().clone() for key, value in compacter.trainable_parameters(m).items()}
                for m in models]
    compacter.save(models[0], tmp_path / "adapter")
    stop, failures, reads = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                _, tensors = read_adapter(tmp_path / "adapter")
            except Exception as error:  # noqa: BLE001 - any refusal during a save is the failure this test looks for
                failures.append(error)
                return
            reads.append(tensors["down.s"] if "down.s" in tensors else next(iter(tensors.values())))

    reader = threading.Thread(target=read)
    reader.start()
    for index in range(30):
        compacter.save(models[index % 2], tmp_path / "adapter")
    stop.set()
    reader.join()
    assert not failures and reads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary folder left
    del versions


def test_a_killed_writers_temporary_files_are_removed_by_the_next_write(tmp_path):
    from compacter.io import atomic_write

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".adapter.{dead.pid}.abc123").mkdir()  # what replace_folder leaves when killed mid-write
    (tmp_path / f".adapter.{dead.pid}.abc123" / "compacter_model.safetensors").write_bytes(b"half")
    (tmp_path / f".state.{dead.pid}.x").write_bytes(b"half")  # what atomic_write leaves
    mine = tmp_path / f".adapter.{os.getpid()}.live"  # a temporary of a writer still running is left alone
    mine.mkdir()
    compacter.save(trained_t5(), tmp_path / "adapter")
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, f".state.{dead.pid}.x", "adapter"]
    atomic_write(tmp_path / "state", lambda tmp: open(tmp, "w").write("whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "adapter", "state"]


def test_a_full_disk_is_said_in_words_and_the_old_adapter_is_kept(tmp_path, monkeypatch, seq2seq_batch):
    from safetensors import SafetensorError

    import compacter.saving as saving

    model = trained_t5()
    compacter.save(model, tmp_path / "adapter")

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')
    monkeypatch.setattr(saving, "save_file", full)
    with pytest.raises(OSError, match="No space left on the device that holds .*: nothing was written to adapter"):
        compacter.save(trained_t5(seed=3), tmp_path / "adapter")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    loaded = compacter.load(tiny_t5(seed=1), tmp_path / "adapter")
    assert torch.equal(outputs(loaded, seq2seq_batch), outputs(model, seq2seq_batch))


def test_saving_to_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is a file; compacter.save writes a folder there"):
        compacter.save(trained_t5(), tmp_path / "file")


# ---------------------------------------------------------------- a run's folder says one run

class Interrupt(Exception):
    pass


def stop_at(step):
    def on_step(current):
        if current == step:
            raise Interrupt
    return on_step


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory):
    """Two interrupted runs (other learning rates, checkpoints at step 4) and one finished run."""
    root = tmp_path_factory.mktemp("trust-runs")
    for name, rate in (("a", 1e-3), ("b", 3e-3)):
        with pytest.raises(Interrupt):
            train(run_config(workspace, root / name, learning_rate=rate), on_step=stop_at(6))
    train(run_config(workspace, root / "done", learning_rate=1e-3))
    return root


def copied(runs, name, tmp_path):
    return Path(shutil.copytree(runs / name, tmp_path / name, symlinks=True))


def test_a_runs_adapter_must_be_its_own(runs, workspace, tmp_path):
    a, b = copied(runs, "a", tmp_path), copied(runs, "b", tmp_path)
    shutil.rmtree(a / "adapter")
    (a / "adapter").symlink_to(b / "adapter", target_is_directory=True)
    with pytest.raises(ValueError, match="adapter is a symbolic link .* not the run's own adapter folder"):
        train(run_config(workspace, a, learning_rate=1e-3))
    (a / "adapter").unlink()
    shutil.copytree(b / "adapter", a / "adapter")  # a real folder, but another run's adapter
    with pytest.raises(ValueError, match="adapter is not the adapter this run saved at its best step \\(4\\)"):
        train(run_config(workspace, a, learning_rate=1e-3))
    shutil.rmtree(a / "adapter")
    (a / "adapter").mkdir()
    for file in (b / "adapter").iterdir():
        (a / "adapter" / file.name).symlink_to(file)
    with pytest.raises(ValueError, match="holds a symbolic link where the run's own adapter files belong"):
        train(run_config(workspace, a, learning_rate=1e-3))


def test_edited_results_are_refused(runs, workspace, tmp_path):
    done = copied(runs, "done", tmp_path)
    config = run_config(workspace, done, learning_rate=1e-3)
    assert train(config)["test"] == json.loads((done / "results.json").read_text())["test"]  # as it is: returned
    results = json.loads((done / "results.json").read_text())
    results["test"]["score"] = 99.9
    (done / "results.json").write_text(json.dumps(results, indent=2))
    with pytest.raises(ValueError, match="results.json was changed after compacter wrote it"):
        train(config)
    results["test"]["score"] = json.loads((runs / "done" / "results.json").read_text())["test"]["score"]
    (done / "results.json").write_text(json.dumps(results, indent=2))
    other = copied(runs, "b", tmp_path)
    shutil.rmtree(done / "adapter")
    shutil.copytree(other / "adapter", done / "adapter")
    with pytest.raises(ValueError, match="adapter is not the adapter .*results.json was scored with"):
        train(config)


@pytest.mark.parametrize("edit, message", [
    (lambda state: setattr(state, "step", -5), "its step is -5"),
    (lambda state: setattr(state, "step", 10**9), "at step 1000000000, past this run's last step"),
    (lambda state: state.best.update(step=7), "its best step 7 is not one of the steps 1 to 4"),
    (lambda state: next(iter(state.optimizer["state"].values()))["exp_avg"].fill_(float("nan")),
     "optimizer/0/exp_avg holds NaN or infinite values"),
])
def test_a_training_state_out_of_bounds_is_refused(edit, message, runs, workspace, tmp_path):
    from compacter.training.checkpoint import read_state, save_state

    a = copied(runs, "a", tmp_path)
    state = read_state(a)
    edit(state)
    save_state(a, state)
    with pytest.raises(ValueError, match=message):
        train(run_config(workspace, a, learning_rate=1e-3))


def test_a_training_state_that_is_not_a_regular_file_is_refused(runs, workspace, tmp_path):
    from compacter.training.checkpoint import STATE_FILE

    a = copied(runs, "a", tmp_path)
    adapter = (a / "adapter" / "compacter_model.safetensors").read_bytes()
    (a / STATE_FILE).unlink()
    (a / STATE_FILE).symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="training_state.safetensors is not a training state .*not a regular file"):
        train(run_config(workspace, a, learning_rate=1e-3))
    assert (a / "adapter" / "compacter_model.safetensors").read_bytes() == adapter  # not restarted over it


def test_the_trainer_resumes_only_onto_the_base_its_checkpoint_was_saved_on(tmp_path):
    from compacter.integrations import Seq2SeqTrainer

    def trainer(model, max_steps=2):
        args = transformers.Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / "out"), max_steps=max_steps, save_steps=2, per_device_train_batch_size=2, report_to=[],
            use_cpu=True, logging_steps=100, disable_tqdm=True)
        rows = [{"input_ids": torch.arange(2, 10), "labels": torch.arange(3, 6)}] * 4
        return Seq2SeqTrainer(model=model, args=args, train_dataset=rows)

    trainer(compacter.apply(tiny_t5(seed=6), "compacter++")).train()
    other = compacter.apply(tiny_t5(seed=6, d_ff=512), "compacter++")
    with pytest.raises(ValueError, match=r"trained on a different base model[\s\S]*d_ff: saved for 256, this model "
                                         r"has 512"):
        trainer(other, max_steps=4).train(resume_from_checkpoint=True)


# ---------------------------------------------------------------- labels that look the same

def test_labels_in_two_unicode_forms_are_one_class(tmp_path):
    from compacter.data.files import load_files

    rows = [("café", "un bon café"), ("cafe\u0301", "encore un café"), ("thé", "du thé vert"), ("thé", "un thé")] * 5
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{label}\n" for label, t in rows))
    task, splits = load_files(tmp_path, text_column="text", label_column="label")
    assert task.labels == ("café", "thé")


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", "\u00ad", "\u2060"])
def test_labels_that_differ_only_by_invisible_characters_are_refused(invisible, tmp_path):
    from compacter.data.files import load_files
    from compacter.data.loading import DataFileError

    rows = [("pos", "good"), ("neg", "bad")] * 4 + [(f"pos{invisible}", "great")]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{label}\n" for label, t in rows), encoding="utf-8")
    expected = re.escape(f"the labels 'pos' (train.csv, data row 1) and {f'pos{invisible}'!r} (train.csv, data row 9) "
                         "differ only by invisible characters")
    with pytest.raises(DataFileError, match=expected):
        load_files(tmp_path, text_column="text", label_column="label")


# ---------------------------------------------------------------- no traceback left

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("line, message", [
    ('{"text": ' + DEEP + "}", "line 2: the JSON nests brackets too deeply to be read"),
    ('{"text": "a", "label": Infinity}', "line 2: Infinity is not a JSON number"),
    ('{"text": "a", "label": NaN}', "line 2: NaN is not a JSON number"),
])
def test_hostile_json_lines_are_refused_naming_the_line_in_every_reader(line, message, tmp_path, capsys):
    from compacter.cli import main
    from compacter.data.files import load_files
    from compacter.data.loading import DataFileError
    from compacter.predict import Served, read_requests

    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "good", "label": "pos"}\n' + line + "\n")
    with pytest.raises(DataFileError, match=re.escape(message)):
        load_files(path, text_column="text", label_column="label")
    with pytest.raises(DataFileError, match=re.escape(message)):
        read_requests(path, {"rte": Served("rte", None)}, default_task="rte")
    assert main(["score", "--task", "sst2", "--predictions", str(path), "--references", str(path)]) == 2
    where, what = message.split(": ", 1)
    assert re.search(rf"train.jsonl, {where}: the predictions file must be JSON lines: {re.escape(what)}",
                     capsys.readouterr().err)


def test_text_that_is_not_utf8_is_refused_naming_file_and_line(tmp_path):
    from compacter.data.files import load_files
    from compacter.data.loading import DataFileError
    from compacter.predict import Served, read_requests

    for name in ("d.jsonl", "d.csv"):
        path = tmp_path / name
        header = b"" if name.endswith("jsonl") else b"text,label\n"
        good = b'{"text": "a", "label": "x"}\n' if name.endswith("jsonl") else b"a,x\n"
        bad = '{"text": "café", "label": "y"}\n' if name.endswith("jsonl") else "café,y\n"
        path.write_bytes(header + good * 3 + bad.encode("latin-1"))
        line = 4 if name.endswith("jsonl") else 5
        with pytest.raises(DataFileError, match=rf"{name}, line {line}.* not UTF-8 text"):
            load_files(path, text_column="text", label_column="label")
    with pytest.raises(DataFileError, match=r"d.jsonl, line 4: not UTF-8 text \(invalid continuation byte at byte 14"):
        read_requests(tmp_path / "d.jsonl", {"x": Served("x", None)}, default_task="x")


def test_a_request_whose_task_is_not_a_name_is_refused(tmp_path):
    from compacter.predict import RequestError, Served, read_requests

    path = tmp_path / "requests.jsonl"
    path.write_text('{"task": ["rte"], "text": "a"}\n')
    with pytest.raises(RequestError, match=r"request 1: \"task\" must be the name of one of the adapters given \(rte\), "
                                           r"got list \['rte'\]"):
        read_requests(path, {"rte": Served("rte", None)})


def test_predict_refuses_an_output_folder_and_a_results_file_of_no_run(tmp_path, capsys):
    from compacter.cli import main
    from compacter.predict import write_answers

    with pytest.raises(ValueError, match="--output .* is a folder; give the path of the file to write"):
        write_answers(tmp_path, [{"task": "a", "prediction": "x"}])
    for results, message in [({"task": "rte"}, "lacks its \"task\" name or its \"config\""),
                             ({"task": ["rte"], "config": {"model": "t5-small"}}, "lacks its \"task\" name"),
                             ({"task": "rte", "config": {}, "sha256": "0" * 64}, "results.json was changed after")]:
        (tmp_path / "results.json").write_text(json.dumps(results))
        assert main(["predict", "--run", str(tmp_path), "--input", "x", "--output", "y"]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error


@pytest.mark.parametrize("option", ["--batch-size", "--steps", "--source-length", "--target-length", "--new-tokens"])
def test_bench_sizes_below_one_are_refused_by_the_parser(option, capsys):
    from compacter.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", option, "0"])
    assert exit_.value.code == 2
    assert f"{option}: expected a whole number ≥ 1, got '0'" in capsys.readouterr().err


def test_base_folders_that_cannot_be_loaded_say_why(tmp_path):
    from conftest import tiny_bert

    from compacter.models import build_model

    model = tiny_bert()
    model.save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="holds its weights only as pytorch_model.bin, a pickle.*compacter loads "
                                         "safetensors only. Convert it once"):
        build_model(str(tmp_path / "pickled"))
    model.save_pretrained(tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated could not be loaded as a AutoModelForSequenceClassification .*"
                                         "may be truncated"):
        build_model(str(tmp_path / "truncated"))
    model.save_pretrained(tmp_path / "mismatched")
    config = json.loads((tmp_path / "mismatched" / "config.json").read_text())
    (tmp_path / "mismatched" / "config.json").write_text(json.dumps({**config, "intermediate_size": 512}))
    with pytest.raises(ValueError, match="mismatched could not be loaded .*not match its config.json"):
        build_model(str(tmp_path / "mismatched"))
    compacter.apply(tiny_t5(), "compacter++").save_pretrained(tmp_path / "t5-adapter")
    with pytest.raises(ValueError, match="trained on a t5 model \\(T5ForConditionalGeneration\\), and .* is a bert "
                                         "model"):
        compacter.from_pretrained(str(tmp_path / "truncated"), tmp_path / "t5-adapter")


def test_quantizing_twice_says_so():
    pytest.importorskip("torchao")
    model = compacter.quantize_base(tiny_t5(), "int8")
    with pytest.raises(ValueError, match="is quantized already .* quantize_base takes an unquantized base model"):
        compacter.quantize_base(model, "int8")


def test_three_rows_of_data_train_with_a_warning(tmp_path):
    from compacter.data.files import load_files

    (tmp_path / "d.csv").write_text("text,label\ngood,pos\nbad,neg\nfine,pos\n")
    with pytest.warns(UserWarning, match=r"very few examples \(train 1, validation 1, test 1\)"):
        load_files(tmp_path / "d.csv", text_column="text", label_column="label")


def test_a_search_whose_rates_tie_says_so(workspace, tmp_path):
    rows = "review,sentiment\n" + "".join(f"w{i} good,positive\nw{i} bad,negative\n" for i in range(30))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text(rows)
    (tmp_path / "data" / "validation.csv").write_text("review,sentiment\nw1 good,positive\n")
    (tmp_path / "data" / "test.csv").write_text("review,sentiment\nw2 bad,negative\nw3 good,positive\n")
    config = run_config(workspace, tmp_path / "search", task=str(tmp_path / "data"), batch_size=30, eval_steps=None,
                        learning_rate=None)
    with pytest.warns(UserWarning, match=r"learning rates 1e-06, 2e-06 tie at validation score (0|100).00 \(1 "
                                         r"validation examples\): the rule picks 1e-06"):
        train_with_lr_search(config, grid=[1e-6, 2e-6])
    assert "warning: learning rates 1e-06, 2e-06 tie" in (tmp_path / "search" / "search.log").read_text()


def test_a_data_file_copied_under_another_name_is_the_same_run(runs, workspace, tmp_path):
    done = copied(runs, "done", tmp_path)
    renamed = Path(shutil.copy(workspace["csv"], tmp_path / "my-reviews-copy.csv"))
    results = train(run_config(workspace, done, learning_rate=1e-3, task=str(renamed)))
    assert results == json.loads((done / "results.json").read_text())
