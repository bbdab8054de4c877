"""Atomic writes: every file lands complete or not at all (temp file in the same folder,
fsync, rename, fsync of the folder). A temp file left by a writer that was killed mid-write
(SIGKILL, power loss) is removed by the next write of the same file. And the reading side of
the training checkpoint: one that cannot be read is moved aside, not a traceback forever."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
# The writer's identity in its temp file's name: `.<name>.<pid>@<host tag>.<random>.tmp`, so
# that the next writer can tell a dead writer's leftover from a live writer's file.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_OURS = re.compile(r"^(\d+)@([0-9a-f]{6})\.[A-Za-z0-9_]+$")
_OLD_STYLE = re.compile(r"^[a-z0-9_]{8}$")   # `.<name>.<random>.tmp`, before the writer was named
OTHER_HOST_STALE_SECONDS = 3600.0   # a temp of another machine (shared folder): stale after an hour
OLD_STYLE_STALE_SECONDS = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(tmp: Path, target_name: str, now: float) -> bool:
    middle = tmp.name[len(f".{target_name}."):-len(".tmp")]
    try:
        age = now - tmp.lstat().st_mtime
    except FileNotFoundError:
        return False
    match = _OURS.match(middle)
    if match:
        pid, host = int(match.group(1)), match.group(2)
        if host == _HOST:
            return pid != os.getpid() and not _pid_alive(pid)
        return age > OTHER_HOST_STALE_SECONDS
    return bool(_OLD_STYLE.match(middle)) and age > OLD_STYLE_STALE_SECONDS


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temp files an interrupted atomic write of `path` left beside it; returns them."""
    path = Path(path)
    removed = []
    now = time.time()
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if _is_stale(tmp, path.name, now):
            try:
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def fsync_path(path: str | Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`; on success its content is fsynced, it is renamed onto
    `path`, and the folder is fsynced (the rename survives a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent, directory=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step: Linux's renameat2(RENAME_EXCHANGE), which Python's os
    module does not offer (hence ctypes); elsewhere two renames, with a crash between them
    leaving the old folder whole under a's name."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))
    except AttributeError:   # no renameat2 in this C library
        pass
    parked = a.with_name(a.name + ".old")
    os.rename(b, parked)
    os.rename(a, b)
    os.rename(parked, a)


@contextmanager
def atomic_folder(path: str | Path):
    """Yield an empty temp folder beside `path`; on success its files are fsynced and it takes
    `path`'s place in one step, the old folder staying whole until then (and removed after).
    An exception or a crash before that leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)   # mkdtemp makes 0700
        for file in tmp.rglob("*"):
            if file.is_file():
                fsync_path(file)
        fsync_path(tmp, directory=True)
        if path.exists():
            _exchange(tmp, path)          # tmp now holds the old folder
        else:
            os.rename(tmp, path)
        fsync_path(path.parent, directory=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- the training checkpoint's reader (torch imported only here: io stays light) --------------

class UserError(Exception):
    """An error that is the user's to fix (bad params or data, a broken file, a tracking server
    that does not answer): stages and the CLI print it as one line, without a traceback. Each
    wing's errors of that kind subclass it, so this module needs to know none of them."""


class UnreadableFile(UserError, ValueError):
    """A file the project wrote that cannot be read back (truncated, not what it should hold):
    stages print it as one line."""


DISK_ERRNOS = {28: "no space left on the device", 122: "disk quota exceeded", 27: "file too large",
               30: "read-only file system"}   # ENOSPC, EDQUOT, EFBIG, EROFS


def one_line_error(err: BaseException) -> str | None:
    """The line stages and the CLI print (then exit 1) for an error that is the user's to fix:
    bad params or data, a missing or broken file, a tracking server that does not answer, a full
    disk (every write is atomic: what was there stays whole). None: a bug, for a traceback."""
    if isinstance(err, (UserError, FileNotFoundError)):
        return f"error: {err}"
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        why = f"{err.filename or 'a write'}: {DISK_ERRNOS[err.errno]}"
    elif isinstance(err, OSError) and re.fullmatch(r"\d+ requested and \d+ written", str(err)):
        why = f"a write was cut short ({err}: the disk is full or a file-size limit was reached)"   # numpy's tofile
    else:
        return None
    return f"error: {why}; nothing was replaced (writes are atomic): free space and rerun"


def load_torch_file(path: str | Path, map_location="cpu", what: str = "a checkpoint dict", fix: str = "") -> dict:
    """torch.load(weights_only=True) of a dict, or UnreadableFile in one line (why, and `fix`)."""
    import torch

    path = Path(path)
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the safe unpickler's protocol warnings on garbage
            state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not {what}")
    except Exception as err:  # RuntimeError, EOFError, UnpicklingError, KeyError, ... by what is broken
        raise UnreadableFile(f"{path}: cannot be read ({_load_error_reason(err, size)})"
                             f"{'; ' + fix if fix else ''}") from None
    return state


def _load_error_reason(err: BaseException, size: int) -> str:
    """One line for why torch.load failed: the cause, without PyTorch's advice to load with
    weights_only=False (a checkpoint that fails the safe loader must not be loaded unsafely)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        after = text.split("WeightsUnpickler error:", 1)[1]
        text = next((line.strip() for line in after.splitlines() if line.strip()), "")
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.split(". ")[0].rstrip(".")
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}{': ' + text if text else ''}; {size:,} bytes"


def move_aside(path: str | Path) -> Path:
    """Rename `path` to `<name>.corrupt-<time>` (with -2, -3, ... when that name is taken)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    path.rename(target)
    return target


def load_training_checkpoint(path: str | Path, map_location="cpu", log=print) -> dict | None:
    """The training checkpoint at `path` (torch.load with weights_only=True), or None when there
    is none. One that cannot be read (truncated, empty, random bytes, not a dict) is moved aside
    to `<name>.corrupt-<time>` with a one-line message and None is returned, so training starts
    from scratch instead of every later run stopping with a traceback."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load_torch_file(path, map_location)
    except UnreadableFile as err:
        discard_checkpoint(path, str(err).split(": ", 1)[1], log)
        return None


def discard_checkpoint(path: Path, why: str, log=print) -> None:
    """Move a checkpoint that cannot be resumed aside (kept for a look, never read again) with
    one line saying why, so that the next run trains from scratch instead of failing the same way."""
    try:
        where = f"moved aside to {move_aside(path).name}"
    except FileNotFoundError:  # another process (a DDP rank) moved it first
        where = "moved aside by another process"
    log(f"[train] {path}: {why}; {where}; training from scratch")


def counted(n: int, noun: str) -> str:
    """`1 epoch`, `3 epochs`: a count and its noun, for what the project prints."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
