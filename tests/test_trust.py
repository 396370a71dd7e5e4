"""Trust at the boundaries, second round (issue 23): one writer per run folder, task names that cannot leave their
folder, integrity of everything an adapter or run folder says, and clear errors instead of tracebacks."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from conftest import tiny_t5
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
