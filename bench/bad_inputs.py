"""Red team for issue 16: bad inputs the fuzz tests do not contain, run through every `myllm` command.

    PYTHONPATH=src python bench/bad_inputs.py [--seed N] [--only CLASS]

It builds two tiny run directories once (run A through the real stages with a short pretraining,
an evaluation and an SFT; run B of another vocabulary and context, to mix into A), then tries
inputs of each class below (a seeded generator picks the instances) and holds every one to the
contract: exit status 2 with one line on stderr (or a success, where the input may be valid), no
"internal error", no traceback, nothing that existed lost or changed, no hang, no HTTP 5xx. It
prints a table per class, the totals, and one reproduction line per failure. Commands run in this
process through `myllm.cli.main` (a SIGALRM turns a hang into a finding); `serve` and `chat` on a
closed or binary stdin run as subprocesses.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from conftest import TINY, write_folder_corpus  # noqa: E402
from fuzzing import snapshot  # noqa: E402
from myllm.cli import main  # noqa: E402

COLUMNS = ["tried", "clean", "ok(rc0)", "internal", "traceback", "crash", "multiline", "lost", "hang", "5xx",
           "accepted", "other"]
FAILURES = {"internal", "traceback", "crash", "multiline", "lost", "hang", "5xx", "accepted", "other"}
# What each command may write (a prefix of a path inside the run): anything else must stay byte for byte.
WRITES = {"eval": ("evals", "summary.json", "stages.json", "report.md", "plots", "metrics.jsonl"),
          "report": ("report.md", "plots"),
          "tokenizer": ("tokenizer", "shards", "stages.json", "config.toml", "corpus/report.md", "corpus/plots"),
          "pretrain": ("checkpoints/pretrain", "metrics.jsonl", "stages.json", "config.toml"),  # it records the flags
          "export": ("export",), "quantize": ("quantized",),
          "data": ("corpus", "tokenizer", "shards", "config.toml", "stages.json")}
for _s in ("sft", "dpo", "grpo"):
    WRITES[_s] = (f"checkpoints/{_s}", "config.toml", "evals", "tasks", "metrics.jsonl", "stages.json", "summary.json", "report.md",
                  "plots")


ROOT: list[str] = []  # the temp folder, shown as $T in reproductions


class Hang(BaseException):
    pass


@dataclass
class Case:
    cls: str
    argv: list[str]
    setup: str = ""  # one line: what was done to the files before the command
    must_fail: bool = True  # a success (rc 0) is a finding
    stdin: bytes | None = None
    watch: list[Path] = field(default_factory=list)  # folders whose files must survive
    timeout: int = 40
    subprocess: bool = False

    def repro(self) -> str:
        cmd = "myllm " + shlex.join(_short(str(a).replace(ROOT[0], "$T") if ROOT else str(a)) for a in self.argv)
        if self.stdin is not None:
            cmd = f"printf %s {shlex.quote(self.stdin[:80].decode('latin-1'))} | " + cmd
        return (f"[{self.setup}] " if self.setup else "") + cmd.replace("\n", "\\n").replace("\x00", "\\x00")


def _short(arg: str) -> str:
    """A long argument as `<N x 'c'>` (or its start), so that a reproduction stays one readable line."""
    if len(arg) <= 100:
        return arg
    return f"<{len(arg)} x {arg[0]!r}>" if len(set(arg)) == 1 else f"<{len(arg)} chars: {arg[:40]!r}...>"


def _alarm(*_):
    raise Hang


def run_inprocess(case: Case) -> tuple[object, str]:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(case.stdin or b""), encoding="utf-8")
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(case.timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in case.argv])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Hang:
        rc = "hang"
    except BaseException:  # noqa: BLE001 - that is the finding
        rc = "traceback"
        err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
        sys.stdin = old_stdin
    return rc, err.getvalue()


def run_subprocess(case: Case) -> tuple[object, str]:
    """`python -m myllm ARGV` (a hang or a signal kills only it); `serve` counts as started (rc 0) once it
    prints its address and is still up a second later."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    p = subprocess.Popen([sys.executable, "-m", "myllm", *map(str, case.argv)], env=env, start_new_session=True,
                         stdin=subprocess.PIPE if case.stdin is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[bytes] = []
    threading.Thread(target=lambda: seen.extend(p.stdout), daemon=True).start()
    if case.stdin is not None:
        threading.Thread(target=lambda: (p.stdin.write(case.stdin), p.stdin.close()), daemon=True).start()
    deadline, served = time.monotonic() + case.timeout, None
    while p.poll() is None and time.monotonic() < deadline:
        if served is None and any(line.startswith(b"serving ") for line in seen):
            served = time.monotonic()
        if served is not None and time.monotonic() > served + 1.0:
            break
        time.sleep(0.1)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return (0 if served is not None else "hang"), p.stderr.read().decode("utf-8", "replace")
    return p.returncode, p.stderr.read().decode("utf-8", "replace")


def verdict(case: Case, rc, err: str, lost: list[str]) -> str:
    if rc == "hang":
        return "hang"
    if rc == "traceback" or "Traceback" in err:
        return "traceback"
    if (isinstance(rc, int) and rc < 0) or "stack backtrace:" in err:  # killed by a signal, or a Rust panic
        return "crash"
    if "internal error" in err:
        return "internal"
    if lost:
        return "lost"
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("usage:") and not x.startswith(" ")]
    if rc == 2:
        return "clean" if len(lines) == 1 else "multiline"
    if rc == 0:
        return "accepted" if case.must_fail else "ok(rc0)"
    return "other"


class Tally:
    def __init__(self):
        self.rows: dict[str, dict[str, int]] = {}
        self.failures: list[str] = []

    def add(self, cls: str, kind: str, repro: str, detail: str) -> None:
        row = self.rows.setdefault(cls, dict.fromkeys(COLUMNS, 0))
        row["tried"] += 1
        row[kind] += 1
        if kind in FAILURES:
            detail = detail.replace(ROOT[0], "$T") if ROOT else detail
            self.failures.append(f"{kind:9s} {cls}: {repro}\n          -> {detail}")

    def print(self) -> None:
        width = max(len(c) for c in self.rows) + 2
        print("class".ljust(width) + " ".join(f"{c:>9s}" for c in COLUMNS))
        total = dict.fromkeys(COLUMNS, 0)
        for cls, row in self.rows.items():
            print(cls.ljust(width) + " ".join(f"{row[c]:>9d}" for c in COLUMNS))
            for c in COLUMNS:
                total[c] += row[c]
        print("TOTAL".ljust(width) + " ".join(f"{total[c]:>9d}" for c in COLUMNS))
        fails = sum(total[c] for c in FAILURES)
        print(f"\ntotals: {total['tried']} inputs, {total['clean']} exit-2-one-line, {total['ok(rc0)']} valid "
              f"successes, {total['internal']} internal errors, {total['traceback']} tracebacks, {total['crash']} crashes, {total['multiline']} "
              f"multi-line errors, {total['lost']} lost/changed files, {total['hang']} hangs, {total['5xx']} server "
              f"5xx, {total['accepted']} bad inputs accepted, {total['other']} other exits: {fails} failures")
        for f in self.failures:
            print(f)


def check(tally: Tally, case: Case) -> None:
    before = {w: snapshot(w) for w in case.watch if w.is_dir()}
    rc, err = (run_subprocess if case.subprocess else run_inprocess)(case)
    writes = WRITES.get(str(case.argv[0]), ()) if rc == 0 else ()  # a failed command must change nothing
    lost = []
    for w, snap in before.items():
        after = snapshot(w) if w.is_dir() else {}
        lost += [f"{w.name}/{p}" for p, h in snap.items()
                 if after.get(p) != h and not p.removeprefix("run/").startswith(writes)]
    kind = verdict(case, rc, err, lost)
    lines = err.strip().splitlines()
    last = (lines[0] + " ... " if kind == "crash" else "") + lines[-1] if lines else ""
    detail = f"rc={rc}; " + (f"lost/changed {lost[:4]}; " if lost else "") + (
        f"{len(err.splitlines())} stderr lines; " if kind == "multiline" else "") + last[:260]
    tally.add(case.cls, kind, case.repro(), detail)


# ---------------------------------------------------------------------------------------- the runs
def build_runs(root: Path) -> dict[str, Path]:
    from conftest import save_trained_like_checkpoint
    from myllm.run import prepare_run_dir, stage_corpus, stage_shards, stage_tokenizer

    docs = write_folder_corpus(root / "docs")
    runs = {"docs": docs}
    for name, extra in (("A", []), ("B", ["model.vocab_size=300", "model.context=32"])):
        out = root / name
        cfg = prepare_run_dir(out, "default", None, TINY + extra, str(docs), None)
        stage_corpus(out, cfg)
        stage_tokenizer(out, cfg)
        stage_shards(out, cfg)
        runs[name] = out
    quiet = Case("setup", [])
    for argv in (["pretrain", "--run", runs["A"], "--max-steps", "2", "--no-progress"], ["eval", "--run", runs["A"]],
                 ["sft", "--run", runs["A"], "--data", write_jsonl(root / "good-sft.jsonl", "sft", 8),
                  "--max-steps", "1", "--no-progress"]):
        quiet.argv = argv
        rc, err = run_inprocess(quiet)
        if rc != 0:
            sys.exit(f"setup failed: myllm {shlex.join(map(str, argv))}: {err.strip()[-400:]}")
    save_trained_like_checkpoint(runs["B"])
    return runs


GOOD = {"sft": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        "dpo": {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
        "grpo": {"prompt": "2+2?", "answer": "4", "verifier": "number"}}


def write_jsonl(path: Path, stage: str, n: int, records: list | None = None) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in (records or [GOOD[stage]] * n)))
    return path


class Work:
    """A fresh copy of run A (or B) per input, under its own folder."""

    def __init__(self, root: Path, runs: dict[str, Path]):
        self.root, self.runs, self.n = root, runs, 0

    def fresh(self, which: str = "A") -> Path:
        self.n += 1
        folder = self.root / f"w{self.n:04d}"
        shutil.copytree(self.runs[which], folder / "run", symlinks=True)
        return folder / "run"


def main_cli() -> int:
    from bad_inputs_more import CLASSES  # the generators of each class (next to this file)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="run one class")
    args = p.parse_args()
    sys.stdout.reconfigure(errors="backslashreplace")  # reproductions may hold lone surrogates
    torch.set_num_threads(1)  # tiny models; leave the other core to whoever shares the machine
    start = time.time()
    root = Path(tempfile.mkdtemp(prefix="myllm-bad-inputs-"))
    ROOT.append(str(root))
    (root / "cwd").mkdir()
    os.chdir(root / "cwd")  # an empty path means the current folder: keep what it writes in the temp folder
    try:
        runs = build_runs(root)
        print(f"built runs A and B in {time.time() - start:.0f}s under $T = {root}", flush=True)
        work, tally = Work(root, runs), Tally()
        for name, make in CLASSES.items():
            if args.only and name != args.only:
                continue
            t = time.time()
            make(random.Random(f"{args.seed}:{name}"), work, tally)
            print(f"  {name}: {tally.rows.get(name, {}).get('tried', 0)} inputs in {time.time() - t:.0f}s", flush=True)
        print()
        tally.print()
        print(f"\n{time.time() - start:.0f}s in all")
        return 1 if tally.failures else 0
    finally:
        os.chdir("/")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.modules["bad_inputs"] = sys.modules["__main__"]  # the class modules import this one: share ROOT
    sys.exit(main_cli())
