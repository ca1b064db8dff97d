"""What the fuzz tests share: run a command on a bad input, and check how it failed.

Each fuzz test builds bad inputs from *classes* (a seeded generator picks the instance: which
byte flips, which key gets which wrong type, how deep the nesting goes), so a new seed is a new
set of inputs. For every input the contract is the same (issue 16): the command exits with
status 2, says what is wrong on exactly one line of stderr, prints no traceback, and every file
that existed before is still there, byte for byte (`snapshot` / `assert_nothing_lost`).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from myllm.cli import main

# Each fuzz class runs once per seed: different instances, same contract. MYLLM_FUZZ_SEEDS=50 runs a
# wider sweep (inputs the default suite never saw) without changing the tests.
SEEDS = tuple(range(int(os.environ.get("MYLLM_FUZZ_SEEDS", "2"))))


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run `myllm ARGV` in this process; returns (exit status, stderr). Any uncaught exception fails the test."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse rejects a flag value with status 2 and a usage line
        rc = e.code if isinstance(e.code, int) else 1
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, *, mentions: str | None = None) -> None:
    """Failed cleanly: status 2, one line of explanation (argparse adds its usage line), no traceback."""
    assert rc == 2, f"exit status {rc}, stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usage:")
             and not line.startswith(" ")]  # argparse's usage block is indented after its first line
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    if mentions is not None:
        assert mentions in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def assert_nothing_lost(before: dict[str, str], folder: Path, *, may_change: tuple[str, ...] = ()) -> None:
    """Every file of `before` is still under `folder` with the same bytes (except paths starting with `may_change`)."""
    after = snapshot(folder)
    lost = [p for p in before if p not in after]
    changed = [p for p in before if p in after and after[p] != before[p] and not p.startswith(may_change)]
    assert not lost and not changed, f"lost {lost[:5]}, changed {changed[:5]}"


def rng_for(seed: int, name: str) -> random.Random:
    """A generator per (seed, fuzz class), so adding a class does not change the others' inputs."""
    return random.Random(f"{seed}:{name}")
