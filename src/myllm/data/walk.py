"""Walking a data folder so that no folder can trick it: the files `sources.py` reads, each once.

The walk is iterative (a stack of sorted folder listings, never recursion), so a tree thousands
of levels deep is walked like a flat one; a path the system cannot open (ENAMETOOLONG) is
skipped and named. Files come in sorted depth-first order, the same on every machine.

Symbolic links (the rules are in docs/data.md, "Links and odd files"):
- a link is followed only after everything else under its split folder, so a file or folder that
  is reached both directly and through a link is read once, under its own name; the link is then
  named in the report as `same_file`;
- a link whose target lies outside the data folder is skipped and named (`symlink_outside`)
  unless `data.follow_symlinks` is true;
- dangling links, links that resolve to themselves and folder links to an ancestor folder are
  skipped and named; every folder is entered at most once (by device and inode, which catches
  bind mounts and hard links too), so no link can make the walk loop, followed or not;
- anything that is not a regular file or folder (a FIFO, socket or device, directly or through a
  link) is skipped without being opened: opening a FIFO would wait forever for a writer.

Excluded folders (the run directory when it lies inside the data folder) are skipped by identity,
whatever path leads to them, and named once as `output_folder`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from myllm.data.skips import SkipReport

# errno -> skip reason; every other OSError is `unreadable`
ERRNO_REASONS = {errno.ENOENT: "vanished", errno.ENAMETOOLONG: "path_too_long", errno.ELOOP: "symlink_loop"}
SPECIAL_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                 (stat.S_ISBLK, "block device"))


def os_error_reason(e: OSError) -> str:
    return ERRNO_REASONS.get(e.errno, "unreadable")


def os_error_detail(e: OSError) -> str:
    return e.strerror or type(e).__name__


def special_kind(mode: int) -> str:
    return next((name for test, name in SPECIAL_KINDS if test(mode)), "not a regular file")


def rel_id(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The path relative to `root` as a document id: undecodable bytes in a file name (old archives)
    become \\xNN escapes, so the id can always be written as UTF-8."""
    try:
        rel = Path(path).relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class FoundFile:
    """A regular file to read: its path (through any link), its id path, split and size."""

    path: str
    rel: str
    split: str | None
    size: int


def _name_id(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# A folder being listed: its remaining entries, and the id prefix of its entries ("" or "sub/dir/").
# Paths stay strings and ids grow by one name a level: parsing a path per file (pathlib) would make a
# tree thousands of levels deep cost seconds.
Level = tuple[Iterator[os.DirEntry], str]


class FolderWalk:
    """One walk over a data folder; `files(folder, split)` may be called for each split folder, and
    a file or folder seen in an earlier call is not read again (a link from train/ into test/)."""

    def __init__(self, root: Path, report: SkipReport, *, follow_symlinks: bool = False,
                 exclude: tuple[Path, ...] = ()):
        self.root, self.report, self.follow = Path(root), report, follow_symlinks
        self.root_real = os.path.realpath(root)
        self.excluded: set[tuple[int, int]] = set()
        self.excluded_real: list[str] = []  # for links to files inside an excluded folder
        for path in exclude:
            try:
                st = os.stat(path)
            except OSError:  # not there (yet): nothing to skip
                continue
            self.excluded.add((st.st_dev, st.st_ino))
            self.excluded_real.append(os.path.realpath(path))
        self.seen: dict[tuple[int, int], str] = {}  # (device, inode) of every folder and file taken -> its id

    def rel(self, path: str | os.PathLike) -> str:
        return rel_id(path, self.root)

    def is_excluded(self, path: Path) -> bool:
        """Whether `path` (a top-level entry; links followed) is an excluded folder; named if so."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) in self.excluded:
            self._skip_output(self.rel(path))
            return True
        return False

    def _skip_output(self, rel: str) -> None:
        self.report.add("output_folder", rel + "/", "the output folder is inside the data folder; not read")

    def files(self, folder: Path, split: str | None) -> Iterator[FoundFile]:
        """Every regular file under `folder`, in sorted depth-first order, links last."""
        links: list[tuple[str, str]] = []  # (path, id)
        stack: list[Level] = []
        rel = self.rel(folder)
        rel = "" if rel == "." else rel
        try:
            if rel and os.path.islink(folder):  # a split folder that is a link: checked like any link
                links.append((str(folder), rel))
            else:
                self._take(str(folder), rel, os.stat(folder), split, stack)
        except OSError as e:
            self.report.add(os_error_reason(e), (rel or ".") + "/", os_error_detail(e))
        while stack or links:
            if not stack:  # the tree itself is done: now the links found in it, in the order found
                found = self._follow(*links.pop(0), split, stack)
                if found is not None:
                    yield found
                continue
            entries, prefix = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            if entry.name.startswith("."):  # .git, .DS_Store, editor swap files
                continue
            rel = prefix + _name_id(entry.name)
            try:
                if entry.is_symlink():
                    links.append((entry.path, rel))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                self.report.add(os_error_reason(e), rel, os_error_detail(e))
                continue
            found = self._take(entry.path, rel, st, split, stack)
            if found is not None:
                yield found

    def _take(self, path: str, rel: str, st: os.stat_result, split: str | None, stack: list[Level],
              link: bool = False) -> FoundFile | None:
        """A folder is pushed on the stack, a regular file returned, anything else named."""
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            if key in self.excluded:
                self._skip_output(rel)
            elif key in self.seen:
                self.report.add("same_file", rel + "/", f"the same folder as {self.seen[key]}/, read once")
            else:
                self._enter(path, rel, st, stack)
            return None
        if not stat.S_ISREG(st.st_mode):
            self.report.add("special_file", rel, special_kind(st.st_mode) + ("; a link to it" if link else ""))
            return None
        if key in self.seen:
            self.report.add("same_file", rel, f"the same file as {self.seen[key]}, read once")
            return None
        self.seen[key] = rel
        return FoundFile(path, rel, split, st.st_size)

    def _enter(self, path: str, rel: str, st: os.stat_result, stack: list[Level]) -> None:
        self.seen[(st.st_dev, st.st_ino)] = rel or "."
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.report.add(os_error_reason(e), (rel or ".") + "/", os_error_detail(e))
            return
        stack.append((iter(entries), rel + "/" if rel else ""))

    def _follow(self, path: str, rel: str, split: str | None, stack: list[Level]) -> FoundFile | None:
        """A link: checked (dangling, looping, leaving the folder), then taken as its target."""
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self.report.add("dangling_symlink", rel, f"-> {_readlink(path)}")
            else:
                self.report.add(os_error_reason(e), rel, os_error_detail(e))
            return None
        if any(_within(real, folder) for folder in self.excluded_real):
            self._skip_output(rel)
            return None
        inside = _within(real, self.root_real)
        if not inside and not self.follow:
            self.report.add("symlink_outside", rel, f"-> {real}; set data.follow_symlinks = true to read it")
            return None
        try:
            st = os.stat(real)
        except OSError as e:
            self.report.add(os_error_reason(e), rel, os_error_detail(e))
            return None
        if stat.S_ISDIR(st.st_mode) and _within(os.path.realpath(os.path.dirname(path)), real):
            self.report.add("symlink_loop", rel + "/", f"-> {real}, a folder that holds the link")
            return None
        return self._take(path, rel, st, split, stack, link=True)


def _within(path: str, folder: str) -> bool:
    """Whether real path `path` is `folder` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"
