"""Atomic writes: every stage output appears whole or not at all (temp file + rename).

A crash mid-write leaves a `*.tmp*` file behind, never a truncated output, so a stage
whose output exists is complete. A writer that can be killed often (an export) calls
`remove_leftovers` before it writes, so those temps never pile up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from myllm.errors import MyLLMError, brief


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# How a full disk shows when a library, not Python, does the write: safetensors (Rust) and torch.save (C++).
DISK_FULL_TEXT = ("os error 28", "No space left on device", "StorageFull")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Writes into `path`: a full disk, whichever library noticed it, becomes `OSError(ENOSPC)` naming `path`
    (a plain write names no file; safetensors and torch.save raise their own errors)."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except Exception as e:  # SafetensorError derives from Exception only
        if any(text in str(e) for text in DISK_FULL_TEXT) or ("unexpected pos" in str(e) and _nearly_full(path)):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise


def _nearly_full(path: str | Path) -> bool:
    # torch.save's "unexpected pos" means a short write; with under 1 MB free, that is the disk being full.
    try:
        return shutil.disk_usage(Path(path) if Path(path).is_dir() else Path(path).parent).free < 1 << 20
    except OSError:
        return False


OPEN_FLAGS = {"wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
              "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "r+b": os.O_RDWR}


def open_no_follow(path: str | Path, mode: str, **kwargs) -> Any:
    """`open(path, mode)` for a file of the run directory that is written in place (appended, resumed): a
    symlink planted there is refused (ELOOP), never followed to overwrite a file outside the run."""
    return os.fdopen(os.open(path, OPEN_FLAGS[mode] | os.O_NOFOLLOW, 0o644), mode, **kwargs)


def _umask() -> int:
    mask = os.umask(0o022)  # Python can only read the umask by setting it: put it straight back
    os.umask(mask)
    return mask


def public_modes(root: Path) -> None:
    """Give a finished temp file or folder (and everything in it) the modes a plain `open`/`mkdir` would:
    tempfile makes them private (0600 files, 0700 folders), and an export, a checkpoint or a config the
    user shares must not come out unreadable to the others who could read everything else."""
    mask = _umask()
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[Any]:
    """Open a temp file next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with writing(path), open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        public_modes(Path(tmp))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temp sibling; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        with writing(path):
            yield tmp
        public_modes(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, path: Path) -> None:
    """Move the finished directory `new` to `path`, replacing what was there (two renames)."""
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        try:
            new.rename(path)
        except BaseException:
            old.rename(path)  # the earlier output back in place (a kill here: `remove_leftovers` does it)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(path)
    _fsync_dir(path.parent)


def remove_leftovers(path: str | Path) -> list[Path]:
    """Clean up after killed writes of `path`; return what was removed.

    Removes the temps that `atomic_open` / `atomic_dir` name after `path` (`.NAME.XXXXXXXX.tmp`,
    the 8 characters `tempfile` draws: nothing else matches) and finishes a `replace_dir` killed
    between its two renames: `path` gone and `.NAME.old` present means the earlier output is
    whole in `.NAME.old`, so it is put back; beside an existing `path` it is removed. Not for a
    path that two processes write at once (each would remove the other's temp).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink():
        if not path.exists() and not path.is_symlink():
            old.rename(path)  # the earlier output, whole: the kill came before the new one moved in
        else:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    temp = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for stale in path.parent.iterdir():
        if temp.fullmatch(stale.name):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    stale.unlink()
            removed.append(stale)
    return removed


def read_json(path: str | Path) -> Any:
    """A JSON file myllm wrote; a damaged one (bad bytes, bad JSON, absurd nesting) is one line naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise MyLLMError(f"{path} is damaged ({brief(e)}); restore it, or delete it and re-run the command "
                         "that wrote it") from None


class Need:
    """In a `check_shape` mapping: this key must be present (other keys may be missing)."""

    def __init__(self, shape: Any):
        self.shape = shape


class Each:
    """A `check_shape` shape: a mapping of any keys whose every value has `shape`."""

    def __init__(self, shape: Any):
        self.shape = shape


def check_shape(value: Any, shape: Any, where: str = "") -> str | None:
    """Where `value` (read from JSON) first differs from `shape`, e.g. "splits.train.tokens", or None.

    A shape is a type or tuple of types (isinstance), a dict of key -> shape (a mapping holding those
    keys with those shapes, each optional unless wrapped in `Need`), `[shape]` (a list of such items)
    or `Each(shape)`. Records read back are checked this way, so a damaged one is one line naming the
    key, not a TypeError deep in a command."""
    name = where or "the top level"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return name
        for key, sub in shape.items():
            need = isinstance(sub, Need)
            if key not in value:
                if need:
                    return f"{where}.{key}".lstrip(".") + " (missing)"
                continue
            if (bad := check_shape(value[key], sub.shape if need else sub, f"{where}.{key}".lstrip("."))):
                return bad
        return None
    if isinstance(shape, Each):
        if not isinstance(value, dict):
            return name
        return next((bad for k, v in value.items() if (bad := check_shape(v, shape.shape, f"{where}.{k}".lstrip(".")))),
                    None)
    if isinstance(shape, list):
        if not isinstance(value, list):
            return name
        return next((bad for i, v in enumerate(value) if (bad := check_shape(v, shape[0], f"{where}[{i}]"))), None)
    return None if isinstance(value, shape) else name


def read_record(path: str | Path, shape: Any) -> Any:
    """`read_json` of a file that must have `shape` (see `check_shape`); otherwise one line naming the key."""
    data = read_json(path)
    if (bad := check_shape(data, shape)) is not None:
        raise MyLLMError(f"{path} is damaged (unexpected value at {bad}); restore it, or delete it and re-run "
                         "the command that wrote it")
    return data


def require_space(folder: str | Path, nbytes: int, what: str) -> None:
    """Refuse to start writing `what` (about `nbytes`) into `folder` when its filesystem has less free space."""
    folder = Path(folder)
    while not folder.exists():  # the folder may be made by the write itself
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < nbytes:
        raise MyLLMError(f"not enough disk space for {what} in {folder}: needs {nbytes:,} bytes, {free:,} free; "
                         "free some space and re-run (completed work is kept)")
