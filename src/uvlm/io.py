"""Atomic file writes (a reader sees the old file or the new one, never half of one) and
folder locks (two processes never write one folder at once)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from uvlm.errors import UvlmError

try:
    import fcntl
except ImportError:  # Windows: no flock, so folders go unlocked there
    fcntl = None


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# mkstemp creates files readable by their owner only; written files get the usual mode.
_MODE = _file_mode()


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    durable=True also fsyncs, so the file survives a power cut; a killed process cannot
    leave half a file either way, so bulk writes (thousands of images) may skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_text_file(path: Path, what: str, wanted: str = "a text file") -> str:
    """The text of a file the user named, or one clear error: missing, a folder, not text."""
    path = Path(path)
    if path.is_dir():
        raise UvlmError(f"{what} {path} is a folder; give {wanted}")
    if not path.is_file():
        raise UvlmError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UvlmError(f"{what} {path} is not UTF-8 text; give {wanted}") from None


def read_json(path: Path, what: str, fix: str):
    """A JSON file the project wrote, or one clear error naming it and the fix."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise UvlmError(f"{what} {path} is missing or corrupt; {fix}") from None


def read_jsonl(path: Path, what: str, fix: str) -> list:
    """A JSON-lines file the project wrote, one object a line, or one clear error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError):
        raise UvlmError(f"{what} {path} is missing or corrupt; {fix}") from None


def die_with_parent() -> None:
    """In a child process, before it runs: be killed when its parent dies (Linux), so a killed
    command leaves no worker or trainer behind to hold its folders."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: children may outlive a killed parent
        pass


# What a writer killed mid-way leaves: atomic writes' temporary files, and the staging folders
# of checkpoints and final weights (uvlm.train.checkpoint).
TEMPORARY_FILE = re.compile(r"^\..+\.tmp$")
TEMPORARY_FOLDER = re.compile(r"^\.(weights|staging)-")


def sweep_temporaries(folder: Path, skip: tuple[str, ...] = ()) -> int:
    """Delete what killed writers left under `folder` (not under its subfolders named in
    `skip`, which others own); call it only while holding `folder` (`exclusive`), when nothing
    else can be writing there. Returns how many were removed."""
    import shutil

    removed = 0
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if path.is_dir() and not path.is_symlink():
            if TEMPORARY_FOLDER.match(path.name):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            elif path.name not in skip:
                removed += sweep_temporaries(path)
        elif TEMPORARY_FILE.match(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def holds_files(folder: Path) -> bool:
    """Whether `folder` holds anything but what killed atomic writes left (their temporary files)."""
    return any(not (TEMPORARY_FILE.match(p.name) and p.is_file() and not p.is_symlink())
               for p in Path(folder).iterdir())


def make_folder(path: Path, what: str) -> None:
    """Create the output folder `--out` names (with its parents); a file there is bad input."""
    if path.exists() and not path.is_dir():
        raise UvlmError(f"--out {path} is a file; give a folder for the {what}")
    path.mkdir(parents=True, exist_ok=True)


@contextmanager
def exclusive(folder: Path, holder: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on an existing `folder` while the block runs; fail at once if
    another process holds it (or, with `wait`, wait for it). The lock is on the folder itself
    (no lock file to go stale): the OS drops it when its process ends, killed or not."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UvlmError(f"{folder} is in use by another {holder}; wait for it to end or stop it") from None
        yield
    finally:
        os.close(fd)
