"""Checkpoints that survive what happens to files: a last.pt that cannot be read is moved
aside and training restarts from scratch; a temp file a killed writer left
is removed by the next write; atomic writes fsync the file and its folder."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from skillpack import io as sp_io
from skillpack.config import TrainParams
from skillpack.io import atomic_path, load_training_checkpoint, write_text

ROOT = Path(__file__).resolve().parent.parent


def _corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_run():
    from skillpack.train.runs import RunData

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, size=48)
    cfg = TrainParams(model="sp_cnn_s", epochs=2, batch_size=16, threads=1, device="cpu", amp="off",
                      channels_last=False)
    return cfg, RunData((images[:32], labels[:32]), (images[32:], labels[32:]), 2)


@pytest.mark.fault('a truncated, empty or random last.pt: moved aside, training restarts', guards=('crash', 'lost'))
@pytest.mark.parametrize("how", ["truncated", "empty", "random bytes"])
def test_a_corrupt_last_pt_is_moved_aside_and_training_restarts(tmp_path, capsys, tiny_run, how):
    from skillpack.train.runs import train_model

    cfg, data = tiny_run
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")
    _corrupt(checkpoint, how)
    broken = checkpoint.read_bytes()
    capsys.readouterr()
    trained = train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")   # completes, no traceback
    out = capsys.readouterr().out
    assert trained.resumed_from_epoch == 0 and len(trained.history) == cfg.epochs
    (moved,) = (tmp_path / "checkpoints").glob("last.pt.corrupt-*")
    assert moved.read_bytes() == broken                      # kept for a post-mortem, not deleted
    (line,) = [x for x in out.splitlines() if "cannot be read" in x]
    assert f"moved aside to {moved.name}; training from scratch" in line
    assert "weights_only" not in out                        # not PyTorch's advice to load it unsafely
    assert torch.load(checkpoint, weights_only=True)["epoch"] == cfg.epochs   # a good one again


def test_the_reader_names_why_in_one_line(tmp_path):
    path = tmp_path / "last.pt"
    messages = []
    assert load_training_checkpoint(path, log=messages.append) is None and not messages  # none yet: quiet
    torch.save([1, 2], path)   # loads, but is not a checkpoint
    assert load_training_checkpoint(path, log=messages.append) is None
    path.write_bytes(b"")
    assert load_training_checkpoint(path, log=messages.append) is None
    assert [m.split(": cannot be read ")[1].split(";")[0] for m in messages] == [
        "(TypeError: holds a list, not a checkpoint dict", "(EOFError"]
    assert len(list(tmp_path.glob("last.pt.corrupt-*"))) == 2 and not path.exists()


WRITER = """
import sys, time
from skillpack.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"half a checkpoint")
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_a_temp_file_left_by_a_killed_writer_is_removed_at_the_next_write(tmp_path):
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "writing"
    (left,) = tmp_path.glob(".last.pt.*.tmp")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert left.exists() and not target.exists()
    live = tmp_path / f".last.pt.{os.getppid()}@{sp_io._HOST}.abcdefgh.tmp"   # a live writer's: kept
    live.write_bytes(b"")
    old_style = tmp_path / ".last.pt.k3j5h2g1.tmp"                             # before writers were named
    old_style.write_bytes(b"")
    past = time.time() - 600
    os.utime(old_style, (past, past))
    other = tmp_path / ".last.pt.other.k3j5h2g1.tmp"                           # another file's: not ours
    other.write_bytes(b"")
    os.utime(other, (past, past))
    write_text(target, "complete")
    assert target.read_text() == "complete"
    assert not left.exists() and not old_style.exists()
    assert live.exists() and other.exists()


def test_atomic_writes_fsync_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(sp_io.os, "fsync", spy)
    target = tmp_path / "sub" / "file.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        tmp_name = str(tmp)
    assert synced == [tmp_name, str(tmp_path / "sub")]
    assert target.read_text() == "{}" and not list(target.parent.glob("*.tmp"))


@pytest.mark.fault('a checkpoint of this run with a missing or misshapen entry: moved aside once, training from scratch',
                   guards=('crash', 'traceback'))
@pytest.mark.parametrize("damage", ["missing optimizer", "model of another shape"])
def test_a_checkpoint_of_this_run_that_cannot_be_resumed_is_moved_aside_once(tmp_path, capsys, tiny_run, damage):
    from skillpack.train.runs import train_model

    cfg, data = tiny_run
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    fresh = train_model(cfg, data, 0)
    train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")
    state = torch.load(checkpoint, weights_only=True)   # the right fingerprint, a broken entry
    if damage == "missing optimizer":
        del state["optimizer"]
    else:
        state["model"] = {k: v[..., :1] if v.ndim else v for k, v in state["model"].items()}
    torch.save(state, checkpoint)
    capsys.readouterr()
    trained = train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")   # no KeyError
    out = capsys.readouterr().out
    assert trained.resumed_from_epoch == 0
    assert len(list(checkpoint.parent.glob("last.pt.corrupt-*"))) == 1
    (line,) = [x for x in out.splitlines() if "moved aside" in x]
    assert ("has no optimizer" if damage == "missing optimizer" else "does not fit this run") in line
    for a, b in zip(fresh.model.state_dict().values(), trained.model.state_dict().values()):
        assert torch.equal(a, b)                          # from scratch: nothing of the broken file kept
    train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")   # and the next run resumes cleanly
    assert len(list(checkpoint.parent.glob("last.pt.corrupt-*"))) == 1


@pytest.mark.fault('a truncated model.pt: one line naming the file and the fix', guards=('traceback',))
def test_a_truncated_model_file_is_one_line_naming_the_file_and_the_fix(tmp_path, tiny_run):
    from skillpack.config import HeadParams
    from skillpack.io import UnreadableFile
    from skillpack.train.checkpoint import load_classifier, save_classifier
    from skillpack.train.runs import train_model

    cfg, data = tiny_run
    path = tmp_path / "model.pt"
    save_classifier(path, train_model(cfg, data, 0).model, model_name="sp_cnn_s", classes=["a", "b"],
                    image_shape=(28, 28, 1), head=HeadParams())
    load_classifier(path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UnreadableFile) as err:
        load_classifier(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: cannot be read (") and "dvc repro train" in message


@pytest.mark.fault('the disk fills while a checkpoint is written: the previous last.pt stays whole and resumes, '
                   'no temp file left, one line', guards=('lost', 'traceback'))
def test_a_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, tiny_run):
    from skillpack.io import one_line_error
    from skillpack.train.runs import train_model

    cfg, data = tiny_run
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    real_save, written = torch.save, []

    def save_until_the_disk_is_full(state, path, *args, **kwargs):
        real_save(state, path, *args, **kwargs)
        if written:   # the second epoch's write: the disk fills part-way
            Path(path).write_bytes(Path(path).read_bytes()[:1000])
            raise OSError(28, "No space left on device", str(path))
        written.append(Path(path).read_bytes())

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(OSError) as err:
        train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")
    monkeypatch.setattr(torch, "save", real_save)
    line = one_line_error(err.value)
    assert line and "\n" not in line and "no space left on the device" in line and "nothing was replaced" in line
    assert checkpoint.read_bytes() == written[0] and not list(checkpoint.parent.glob(".*.tmp"))
    resumed = train_model(cfg, data, 0, checkpoint=checkpoint, fingerprint="d")   # the epoch-1 checkpoint resumes
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == cfg.epochs
    uninterrupted = train_model(cfg, data, 0)
    for a, b in zip(uninterrupted.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
