"""The classes of bad inputs of bench/bad_inputs.py: each function builds its inputs with the seeded
generator `rng` on fresh copies of the tiny runs (`work.fresh()`) and checks each (`check`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bad_inputs import Case, check, write_jsonl

BAD_INTS = ["0", "-1", "-999999", str(10**30), str(2**63), str(2**64 + 1), "1" * 5000, "0x10", "1e3", "", " 7"]
BAD_FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e308", "1e-320", "-0.0", "1e400", "", "0x1p3"]
ODD_STRS = ["", " ", "\u00e9\u6f22\U0001f600", "\x00", "a" * 5000, "../../etc", "-1", "\n", "\t\r", "\ud800"]


def _bad_value(rng, kind: str) -> tuple[str, bool]:
    """(text, surely invalid): huge values may be a legitimate (absurd) plan; zero/negative/NaN never are."""
    v = rng.choice({"int": BAD_INTS, "float": BAD_FLOATS, "str": ODD_STRS}[kind])
    sure = v in ("0", "-1", "-999999", "nan", "inf", "-inf", "", "-0.0", "1e400", "\x00", "\ud800")
    return v, sure


def plan_flags(rng, work, tally) -> None:
    ints = ["--d-model", "--layers", "--heads", "--kv-heads", "--d-ff", "--vocab", "--context", "--gpus",
            "--micro-batch", "--loss-chunk"]
    floats, strs = ["--tokens", "--fit-time"], ["--gpu", "--dist", "--preset", "--run"]
    for _ in range(45):
        argv, sure_of = ["plan"], {}
        for flag in rng.sample(ints + floats + strs, rng.randint(1, 3)):
            v, sure = _bad_value(rng, "int" if flag in ints else "float" if flag in floats else "str")
            argv += [flag, v]
            sure_of[flag] = sure and not (flag == "--loss-chunk" and v == "0")  # 0 = whole
        must = any(sure_of.values())
        if rng.random() < 0.3:
            argv.append("--json")
        check(tally, Case("plan flags", argv, must_fail=must, timeout=20))


RUN_COMMANDS = [["eval", "--run", "{R}"], ["report", "--run", "{R}"], ["generate", "--run", "{R}", "--max-new-tokens",
                "3"], ["chat", "--run", "{R}", "--max-new-tokens", "2"], ["export", "hf", "{R}"],
                ["export", "gguf", "{R}"], ["quantize", "{R}", "--bits", "8", "--no-eval"], ["tokenizer", "--run", "{R}"],
                ["data", "stats", "--run", "{R}"], ["pretrain", "--run", "{R}", "--max-steps", "2", "--no-progress"],
                ["sft", "--run", "{R}", "--max-steps", "1", "--no-progress"], ["plan", "--run", "{R}"],
                ["serve", "{R}", "--port", "0"], ["data", "prepare", "--out", "{R}", "--data", "{D}"]]


def run_dir_kinds(rng, work, tally) -> None:
    """--run is something other than a run directory."""
    docs = work.runs["docs"]
    for _ in range(45):
        base = work.fresh().parent
        kind = rng.choice(["missing", "file", "empty dir", "docs folder", "config.toml is a folder",
                           "config.toml empty", "config.toml binary", "NUL in path", "empty string", "run is a link loop",
                           "only config.toml", "/dev/null", "/proc"])
        cmd = list(rng.choice(RUN_COMMANDS))
        target, setup = base / "x", kind
        if kind == "file":
            target.write_text("not a run\n")
        elif kind == "empty dir":
            target.mkdir()
        elif kind == "docs folder":
            target = docs
        elif kind.startswith("config.toml") or kind == "only config.toml":
            target.mkdir()
            c = target / "config.toml"
            if kind == "config.toml is a folder":
                c.mkdir()
            else:
                c.write_bytes({"config.toml empty": b"", "config.toml binary": os.urandom(200),
                               "only config.toml": (base / "run" / "config.toml").read_bytes()}[kind])
        elif kind == "NUL in path":
            target = Path(str(base / "run") + "\x00x")
        elif kind == "empty string":
            target = ""
        elif kind == "run is a link loop":
            os.symlink(base / "y", base / "x")
            os.symlink(base / "x", base / "y")
        elif kind in ("/dev/null", "/proc"):
            if cmd[0] in ("report", "export", "quantize", "data", "tokenizer", "pretrain", "sft", "eval"):
                cmd = ["generate", "--run", "{R}"]  # never let a writer loose on a system folder
            target = Path(kind)
        argv = [str(a).replace("{R}", str(target)).replace("{D}", str(docs)) for a in cmd]
        if cmd[0] == "serve" and kind == "only config.toml":
            continue  # a valid-looking run might start serving in this process
        # prepare creates a new run there, or fills a run that has only its config so far
        must = not (cmd[0] == "data" and kind in ("missing", "empty dir", "only config.toml"))
        must &= not (cmd[0] == "plan" and kind == "only config.toml")  # a valid config is all plan reads
        check(tally, Case("--run not a run", argv, setup=setup, must_fail=must, watch=[base, docs], timeout=30))


def out_paths(rng, work, tally) -> None:
    """--out of export / data prepare / run at places that are no output folder."""
    for _ in range(30):
        run = work.fresh()
        base = run.parent
        docs = shutil.copytree(work.runs["docs"], base / "docs")  # a prepare may write into it: a copy per input
        user = base / "mine"
        user.mkdir()
        (user / "notes.txt").write_text("my notes\n")
        (user / "photo.jpg").write_bytes(os.urandom(100))
        kind = rng.choice(["user folder", "docs folder", "run itself", "run/checkpoints", "run/tokenizer",
                           "run/corpus", "run/shards", "a step dir", "user file", "under a file", "empty string",
                           "NUL", "run/config.toml", "run/checkpoints/pretrain"])
        out = {"user folder": user, "docs folder": docs, "run itself": run, "user file": user / "notes.txt",
               "under a file": user / "notes.txt" / "sub", "empty string": "", "NUL": str(user) + "\x00",
               "a step dir": next((run / "checkpoints" / "pretrain").glob("step-*"))}.get(kind)
        out = run / kind[4:] if out is None else out
        cmd = rng.choice(["hf", "gguf", "prepare", "run"])
        if cmd == "hf":
            argv = ["export", "hf", run, "--out", out]
        elif cmd == "gguf":
            argv = ["export", "gguf", run, "--type", rng.choice(["f32", "q8_0", "q4_0"]), "--out", out]
        elif cmd == "prepare":
            argv = ["data", "prepare", "--out", out, "--data", docs, "--set", "model.vocab_size=300"]
        else:
            argv = ["run", "--out", out, "--data", base / "no-such-folder", "--quick", "--no-progress"]
        must = not (cmd == "prepare" and kind in ("user folder", "docs folder"))  # a new run there may be fine
        must &= not (cmd in ("hf", "gguf") and kind == "empty string")  # --out '' is the default path: fine
        check(tally, Case("--out odd paths", argv, setup=kind, must_fail=must, watch=[base, Path.cwd()], timeout=40))


def _damage(rng, path: Path) -> str:
    """Damage the file at `path` in a way chosen by `rng`; returns what was done."""
    if not path.exists():
        return f"{path.name} absent"
    data = path.read_bytes()
    how = rng.choice(["truncate", "garbage", "empty", "delete", "append", "json other type", "json lies"])
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(max(len(data), 1))])
    elif how == "garbage":
        path.write_bytes(os.urandom(rng.randint(1, 300)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()
    elif how == "append":
        path.write_bytes(data + rng.choice([b"\x00\xff", b"\n{\"step\": NaN}\n", b"garbage\n", b"[1,2]\n"]))
    elif how == "json other type":
        path.write_text(json.dumps(rng.choice([[], 3, "text", None, [{"a": 1}], {"": {}}])))
    else:  # a JSON file whose values are of the wrong type or lie
        try:
            obj = json.loads(data)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj:
            key = rng.choice(sorted(obj))
            obj[key] = rng.choice([-1, 10**30, "many", None, [], {"x": "y"}, float("nan"), True])
            path.write_text(json.dumps(obj))
            return f"{path.name}: {key} set to {obj[key]!r}"
        path.write_bytes(data[:-1] if data else b"x")
        how = "last byte dropped"
    return f"{how} {path.name}"


DAMAGE_TARGETS = {  # file in run A -> commands that read it
    "stages.json": [["eval", "--run", "{R}"], ["pretrain", "--run", "{R}", "--resume", "--max-steps", "3",
                    "--no-progress"], ["report", "--run", "{R}"], ["data", "prepare", "--out", "{R}", "--data", "{D}"]],
    "metrics.jsonl": [["report", "--run", "{R}"], ["eval", "--run", "{R}"]],
    "summary.json": [["report", "--run", "{R}"]],
    "evals/pretrain.json": [["report", "--run", "{R}"]], "evals/sft.json": [["report", "--run", "{R}"]],
    "shards/index.json": [["eval", "--run", "{R}"], ["quantize", "{R}", "--bits", "8"],
                          ["pretrain", "--run", "{R}", "--restart", "--max-steps", "2", "--no-progress"],
                          ["report", "--run", "{R}"]],
    "shards/train-00000.bin": [["pretrain", "--run", "{R}", "--restart", "--max-steps", "2", "--no-progress"],
                               ["pretrain", "--run", "{R}", "--resume", "--max-steps", "3", "--no-progress"]],
    "shards/val-00000.bin": [["eval", "--run", "{R}"], ["quantize", "{R}", "--bits", "4"]],
    "tokenizer/tokenizer.json": [["generate", "--run", "{R}", "--prompt", "hi", "--max-new-tokens", "3"],
                                 ["export", "hf", "{R}"], ["export", "gguf", "{R}"], ["eval", "--run", "{R}"],
                                 ["chat", "--run", "{R}", "--max-new-tokens", "2"]],
    "tokenizer/tokenizer_config.json": [["export", "hf", "{R}"], ["generate", "--run", "{R}", "--max-new-tokens", "2"]],
    "corpus/manifest.json": [["data", "stats", "--run", "{R}"], ["tokenizer", "--run", "{R}"],
                             ["data", "prepare", "--out", "{R}", "--data", "{D}"], ["eval", "--run", "{R}"]],
    "corpus/train.jsonl": [["tokenizer", "--run", "{R}"], ["data", "prepare", "--out", "{R}", "--data", "{D}"]],
    "corpus/report.md": [["data", "stats", "--run", "{R}"]],
    "STEP/optim.pt": [["pretrain", "--run", "{R}", "--resume", "--max-steps", "3", "--no-progress"]],
    "STEP/state.json": [["generate", "--run", "{R}", "--max-new-tokens", "2"], ["export", "gguf", "{R}"],
                        ["pretrain", "--run", "{R}", "--resume", "--max-steps", "3", "--no-progress"]],
    "SFT/state.json": [["chat", "--run", "{R}", "--stage", "sft", "--max-new-tokens", "2"], ["export", "hf", "{R}"],
                       ["report", "--run", "{R}"]],
}


def damaged_files(rng, work, tally) -> None:
    docs = work.runs["docs"]
    for _ in range(55):
        run = work.fresh()
        target = rng.choice(sorted(DAMAGE_TARGETS))
        cmd = rng.choice(DAMAGE_TARGETS[target])
        rel = target.replace("STEP", str(next((run / "checkpoints" / "pretrain").glob("step-*")).relative_to(run)))
        rel = rel.replace("SFT", str(next((run / "checkpoints" / "sft").glob("step-*")).relative_to(run)))
        setup = f"{rel}: " + _damage(rng, run / rel)
        argv = [str(a).replace("{R}", str(run)).replace("{D}", str(docs)) for a in cmd]
        check(tally, Case("damaged run files", argv, setup=setup, must_fail=False, watch=[run.parent], stdin=b"hi\n",
                          timeout=60))


def mixed_runs(rng, work, tally) -> None:
    """A part of run A replaced by run B's (another vocabulary and context)."""
    b = work.runs["B"]
    cmds = [["generate", "--run", "{R}", "--prompt", "the cat sat", "--max-new-tokens", "5"], ["eval", "--run", "{R}"],
            ["chat", "--run", "{R}", "--max-new-tokens", "3"], ["export", "hf", "{R}"], ["export", "gguf", "{R}"],
            ["quantize", "{R}", "--bits", "8"], ["pretrain", "--run", "{R}", "--resume", "--max-steps", "3",
                                                 "--no-progress"],
            ["sft", "--run", "{R}", "--data", "{J}", "--max-steps", "1", "--no-progress"], ["report", "--run", "{R}"]]
    for _ in range(22):
        run = work.fresh()
        part = rng.choice(["tokenizer", "shards", "checkpoints/pretrain", "config.toml", "checkpoint-only"])
        if part == "checkpoint-only":  # B's weights under A's step folder name
            step = sorted((run / "checkpoints" / "pretrain").glob("step-*"))[-1]
            src = sorted((b / "checkpoints" / "pretrain").glob("step-*"))[-1]
            shutil.copy(src / "model.safetensors", step / "model.safetensors")
            setup = "B's model.safetensors copied over A's final pretrain one"
        else:
            shutil.rmtree(run / part) if (run / part).is_dir() else (run / part).unlink()
            (shutil.copytree if (b / part).is_dir() else shutil.copy)(b / part, run / part)
            setup = f"run A with run B's {part}"
        cmd = rng.choice(cmds)
        jsonl = write_jsonl(run.parent / "sft.jsonl", "sft", 6)
        argv = [str(a).replace("{R}", str(run)).replace("{J}", str(jsonl)) for a in cmd]
        loads_model = cmd[0] in ("generate", "eval", "chat", "export", "quantize", "pretrain", "sft")
        reads_shards = cmd[0] in ("eval", "quantize", "pretrain")
        # the pretrain checkpoint is read by these; chat, export and quantize take the final (SFT) model
        reads_pretrain = cmd[0] in ("generate", "eval", "pretrain", "sft")
        must = {"tokenizer": loads_model, "shards": reads_shards or loads_model, "config.toml": cmd[0] == "pretrain",
                "checkpoint-only": reads_pretrain, "checkpoints/pretrain": reads_pretrain}.get(part, loads_model)
        check(tally, Case("mixed runs", argv, setup=setup, must_fail=must, watch=[run.parent],
                          stdin=b"hello\n", timeout=60))


def checkpoint_flag(rng, work, tally) -> None:
    """--checkpoint of generate/chat at odd places."""
    for _ in range(22):
        run = work.fresh()
        base = run.parent
        step = next((run / "checkpoints" / "pretrain").glob("step-*"))
        kind = rng.choice(["run root", "checkpoints/", "stage folder", "model.safetensors", "state.json",
                           "run B's step", "empty dir", "/dev/null", "FIFO", "tokenizer dir", "empty string",
                           "NUL", "a step dir copy without state.json", "a step with a link loop"])
        target = {"run root": run, "checkpoints/": run / "checkpoints", "stage folder": step.parent,
                  "model.safetensors": step / "model.safetensors", "state.json": step / "state.json",
                  "run B's step": next((work.runs["B"] / "checkpoints" / "pretrain").glob("step-*")),
                  "empty dir": base / "e", "/dev/null": "/dev/null", "FIFO": base / "fifo",
                  "tokenizer dir": run / "tokenizer", "empty string": "", "NUL": f"{step}\x00",
                  "a step dir copy without state.json": base / "copy", "a step with a link loop": base / "loop"}[kind]
        if kind == "empty dir":
            target.mkdir()
        elif kind == "FIFO":
            os.mkfifo(target)
        elif kind.startswith("a step dir copy"):
            shutil.copytree(step, target)
            (target / "state.json").unlink()
        elif kind.endswith("link loop"):
            target.mkdir()
            os.symlink(target / "model.safetensors", target / "model.safetensors")
            shutil.copy(step / "state.json", target / "state.json")
        cmd = rng.choice(["generate", "chat"])
        argv = [cmd, "--run", run, "--checkpoint", target, "--max-new-tokens", "2"]
        check(tally, Case("--checkpoint odd", argv, setup=kind, must_fail=kind not in ("empty string",),
                          watch=[base], stdin=b"hi\n", timeout=20))


def generate_extremes(rng, work, tally) -> None:
    run = work.fresh()
    choices = [("--prompt", "x" * 20000, False), ("--prompt", "\x00\x01\x02", False), ("--prompt", "\ud800", False),
               ("--prompt", "\U0001f600" * 300, False), ("--prompt", "<|endoftext|><|im_start|>", False),
               ("--beams", str(10**6), False), ("--beams", str(2**40), False), ("--beams", "64", False),
               ("--max-new-tokens", str(10**12), False), ("--max-new-tokens", "0", True),
               ("--max-new-tokens", "-5", True), ("--top-k", str(10**18), False), ("--top-k", "-1", True),
               ("--top-p", "1e-300", False), ("--top-p", "0", True), ("--top-p", "1.5", True),
               ("--seed", "-1", False), ("--seed", str(2**64), False), ("--temperature", "1e-300", False),
               ("--temperature", "-1", True), ("--stop", "\x00", False), ("--stop", "s" * 10000, False),
               ("--quantized", "4", True), ("--repetition-penalty", "1e300", False),
               ("--frequency-penalty", "1e300", False), ("--presence-penalty", "-1e300", False)]
    for _ in range(30):
        argv, must = ["generate", "--run", run, "--max-new-tokens", "4"], False
        last = {}  # a repeated flag: argparse keeps its last value
        for flag, value, sure in rng.sample(choices, rng.randint(1, 2)):
            argv += [flag, value]
            last[flag] = sure
        must = any(last.values())
        check(tally, Case("generate extremes", argv, must_fail=must, watch=[run], timeout=15))


def chat_stdin(rng, work, tally) -> None:
    run = work.fresh()
    inputs = [b"\xff\xfe\x00bad utf8\n", b"\x00\x00\x00\n", b"/system\n", b"/sys\n/reset\n", b"x" * 50000 + b"\n",
              b"\n" * 500, b"hi\r\n/quit\r\n", b"/unknown cmd\n", b"\xed\xa0\x80\n", b"\x1b[2J\x07\n",
              b"hello", b"/system " + b"s" * 20000 + b"\nhi\n"]
    for data in rng.sample(inputs, 10):
        argv = ["chat", "--run", run, "--max-new-tokens", "3"]
        check(tally, Case("chat stdin", argv, stdin=data, must_fail=False, watch=[run], timeout=30))
    for data in (None, b"\xff\xfe\xfd\n\x00hi\n"):  # a real process: closed stdin and binary stdin
        argv = ["chat", "--run", run, "--max-new-tokens", "3", "--system", rng.choice(["", "\u00e9" * 100])]
        check(tally, Case("chat stdin", argv, stdin=data, must_fail=False, watch=[run], subprocess=True, timeout=60))
