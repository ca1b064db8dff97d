"""More classes of bench/bad_inputs.py: config files, post-training flags and data, pretraining,
quantize/export flags, the tokenizer command, `myllm serve` flags and odd HTTP; and CLASSES, the table."""

from __future__ import annotations

import json
import os

from bad_inputs import Case, check, write_jsonl
from bad_inputs_classes import (
    chat_stdin,
    checkpoint_flag,
    damaged_files,
    generate_extremes,
    mixed_runs,
    out_paths,
    plan_flags,
    run_dir_kinds,
)


def toml_shapes(rng, work, tally) -> None:
    """--config files of shapes the config fuzz test does not make."""
    shapes = {
        "UTF-16": "[train]\nlr = 0.01\n".encode("utf-16"), "BOM": b"\xef\xbb\xbf[train]\nlr = 0.01\n",
        "CRLF": b"[train]\r\nlr = 0.01\r\n", "array of tables": b"[[train]]\nlr = 0.1\n",
        "top-level dotted key": b"train.lr = 0.01\n", "inline table": b"train = {lr = 0.01}\n",
        "datetime": b"[train]\nlr = 1979-05-27T07:32:00Z\n", "deep arrays": b"[train]\nlr = " + b"[" * 3000 + b"]" * 3000,
        "deep inline tables": b"x = " + b"{a = " * 600 + b"1" + b"}" * 600, "NUL": b"[train]\nlr = 0.1\x00\n",
        "huge int": b"[train]\nmax_steps = " + b"9" * 4400 + b"\n", "big file": b"# c\n" * 600000,
        "phases garbage": b'[train]\nphases = "shards:0.5,?:x,,"\n', "section = value": b"model = 3\n",
        "duplicate section": b"[train]\nlr = 0.1\n[train]\nlr = 0.2\n", "/dev/null": None, "FIFO": None,
        "a link to itself": None, "empty key": b'[train]\n"" = 1\n', "unicode key": "[train]\nl\u0433 = 1\n".encode(),
        "data.source unicode": b"[data]\nsource = \"\\u0000\"\n", "model preset bad": b"[model]\npreset = 5\n",
    }
    for i, name in enumerate(rng.sample(sorted(shapes), len(shapes))):
        run = work.fresh()
        path = run.parent / f"c{i}.toml"
        if name == "/dev/null":
            path = "/dev/null"
        elif name == "FIFO":
            os.mkfifo(path)
        elif name == "a link to itself":
            os.symlink(path, path)
        else:
            path.write_bytes(shapes[name])
        out = run if rng.random() < 0.5 else run.parent / "fresh"
        argv = rng.choice([["run", "--config", path, "--out", out, "--data", run.parent / "none", "--no-progress"],
                           ["data", "prepare", "--config", path, "--out", out, "--data", run.parent / "none"]])
        check(tally, Case("--config shapes", argv, setup=name, must_fail=True, watch=[run.parent], timeout=20))


def post_flags(rng, work, tally) -> None:
    flags = [("--lora-rank", "-1", True), ("--lora-rank", str(10**9), True), ("--lora-rank", str(2**63), True),
             ("--lora-alpha", "nan", True), ("--lora-alpha", "-1", True), ("--lora-alpha", "inf", True),
             ("--lora-targets", "", True), ("--lora-targets", ",,,", True), ("--lora-targets", "nope", True),
             ("--lora-targets", "q_proj,q_proj", False), ("--lora-targets", "\u00e9", True),
             ("--max-steps", "-1", True), ("--lr", "nan", True), ("--lr", "inf", True), ("--lr", "-1", True),
             ("--lr", "1e300", False), ("--lr", "0", False)]
    for _ in range(16):
        run = work.fresh()
        stage = rng.choice(["sft", "dpo", "grpo"])
        data = write_jsonl(run.parent / f"{stage}.jsonl", stage, 6)
        flag, value, must = rng.choice(flags)
        argv = [stage, "--run", run, "--data", data, "--max-steps", "1", "--no-progress", flag, value]
        if flag in ("--lora-targets", "--lora-alpha"):
            argv += ["--lora-rank", "2"]
        check(tally, Case("post-training flags", argv, must_fail=must, watch=[run.parent], timeout=60))


def post_data(rng, work, tally) -> None:
    """Valid JSON lines of odd meaning for sft/dpo/grpo."""
    user, asst = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    sys_ = {"role": "system", "content": "be brief"}
    odd = {
        "sft": [[{"messages": [asst, user]}], [{"messages": [sys_, asst]}], [{"messages": [sys_, sys_, sys_, user, asst]}],
                [{"messages": [user, {"role": "assistant", "content": "x" * 20000}]}],
                [{"messages": [user, {"role": "assistant", "content": "<|im_start|>system\n<|im_end|>"}]}],
                [{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]}],
                [{"messages": [user, asst], "extra": {"deep": [[[[[[]]]]]]}}], [{"messages": [user, asst, asst, asst]}],
                [{"messages": [{"role": "tool", "content": "x"}, asst]}]],
        "dpo": [[{"prompt": "hi", "chosen": "same", "rejected": "same"}], [{"prompt": "", "chosen": "a", "rejected": "b"}],
                [{"prompt": [user], "chosen": asst, "rejected": {"role": "assistant", "content": "no"}}],
                [{"prompt": "x" * 20000, "chosen": "a", "rejected": "b"}], [{"prompt": [], "chosen": "a", "rejected": "b"}],
                [{"prompt": [asst], "chosen": "a", "rejected": "b"}]],
        "grpo": [[{"prompt": "2+2?", "answer": True}], [{"prompt": "2+2?", "answer": 1e308}],
                 [{"prompt": "2+2?", "answer": 10**400}], [{"prompt": "", "answer": "4"}],
                 [{"prompt": "2+2?", "answer": "4", "verifier": ""}], [{"prompt": "2+2?", "answer": -0.0}],
                 [{"prompt": [user], "answer": "4"}], [{"prompt": "x" * 20000, "answer": "4"}],
                 [{"prompt": "q", "answer": "", "verifier": "exact"}]],
    }
    for _ in range(22):
        run = work.fresh()
        stage = rng.choice(sorted(odd))
        records = rng.choice(odd[stage]) * rng.choice([1, 3])
        path = run.parent / f"{stage}.jsonl"
        text = "".join(json.dumps(r) + "\n" for r in records)
        how = rng.choice(["plain", "BOM", "CRLF", "NaN", "duplicate keys"])
        if how == "BOM":
            text = "\ufeff" + text
        elif how == "CRLF":
            text = text.replace("\n", "\r\n")
        elif how == "NaN":
            text += json.dumps(records[0])[:-1] + ', "n": NaN}\n'
        elif how == "duplicate keys":
            text = text.replace("{", '{"prompt": 1, "messages": 2, ', 1)
        path.write_text(text)
        argv = [stage, "--run", run, "--data", path, "--max-steps", "1", "--no-progress"]
        check(tally, Case("post-training data", argv, setup=f"{how}: {json.dumps(records[0])[:120]}", must_fail=False,
                          watch=[run.parent], timeout=60))


def post_data_paths(rng, work, tally) -> None:
    """--data of sft/dpo/grpo at things that are no JSONL file."""
    for _ in range(14):
        run = work.fresh()
        base = run.parent
        kind = rng.choice(["FIFO", "/dev/null", "link loop", "the run folder", "config.toml", "a shard .bin",
                           "gzip file", "one 3 MB line", "NUL in path", "empty string", "model.safetensors",
                           "UTF-16 file", "only blank lines", "a dangling link"])
        path = base / "d.jsonl"
        if kind == "FIFO":
            os.mkfifo(path)
        elif kind == "/dev/null":
            path = "/dev/null"
        elif kind == "link loop":
            os.symlink(path, path)
        elif kind == "a dangling link":
            os.symlink(base / "nothing", path)
        elif kind == "the run folder":
            path = run
        elif kind == "config.toml":
            path = run / "config.toml"
        elif kind == "a shard .bin":
            path = run / "shards" / "train-00000.bin"
        elif kind == "model.safetensors":
            path = next((run / "checkpoints" / "pretrain").glob("step-*")) / "model.safetensors"
        elif kind == "gzip file":
            import gzip

            path.write_bytes(gzip.compress(b'{"prompt": "hi", "chosen": "a", "rejected": "b"}\n'))
        elif kind == "one 3 MB line":
            path.write_text('{"prompt": "' + "x" * 3_000_000)
        elif kind == "NUL in path":
            path = f"{path}\x00"
        elif kind == "empty string":
            path = ""
        elif kind == "UTF-16 file":
            path.write_bytes(json.dumps({"prompt": "hi", "answer": "4"}).encode("utf-16") + b"\n")
        else:
            path.write_text("\n   \n\t\n")
        stage = rng.choice(["sft", "dpo", "grpo"])
        argv = [stage, "--run", run, "--data", path, "--max-steps", "1", "--no-progress"]
        check(tally, Case("post-training --data paths", argv, setup=kind, must_fail=True, watch=[base], timeout=20))


def pretrain_flags(rng, work, tally) -> None:
    flags = [(["--max-steps", "-1"], True), (["--max-steps", "0"], True), (["--time-budget", "nan"], True),
             (["--time-budget", "-1"], True), (["--time-budget", "inf"], True), (["--time-budget", "1e-300"], False),
             (["--nproc", "0"], True), (["--nproc", "-1"], True), (["--nproc", str(10**9)], True),
             (["--dist", "fsdp"], False), (["--preset", ""], True), (["--preset", "gpt2"], True),
             (["--preset", "\x00"], True), (["--resume", "--set", "train.lr=-1"], True),
             (["--restart", "--set", "train.batch_size=0"], True), (["--restart", "--set", "model.context=100000"], True),
             (["--resume", "--set", "model.d_model=96"], True), (["--restart", "--set", "train.phases=nope:1"], True)]
    for _ in range(16):
        run = work.fresh()
        extra, must = rng.choice(flags)
        argv = ["pretrain", "--run", run, "--no-progress", *extra]
        if "--max-steps" not in extra:
            argv += ["--max-steps", "3"]
        check(tally, Case("pretrain flags", argv, must_fail=must, watch=[run.parent], timeout=60))


def quantize_export(rng, work, tally) -> None:
    cases = [(["quantize", "{R}", "--bits", "4", "--group-size", g, "--no-eval"], g not in ("32", "16"))
             for g in ("0", "-1", "3", "7", str(10**9), str(2**63), "32", "16", "100")]
    cases += [(["quantize", "{R}", "--bits", "8", "--stage", "dpo"], True), (["export", "gguf", "{R}", "--stage", "grpo"],
                                                                             True),
              (["export", "hf", "{R}", "--stage", "sft"], False), (["export", "gguf", "{R}", "--type", "q4_0"], False),
              (["quantize", "{R}", "--bits", "4", "--group-size", "5", "--stage", "sft"], True)]
    for cmd, must in rng.sample(cases, len(cases)):
        run = work.fresh()
        check(tally, Case("quantize/export flags", [str(a).replace("{R}", str(run)) for a in cmd], must_fail=must,
                          watch=[run.parent], timeout=60))


def tokenizer_cmd(rng, work, tally) -> None:
    kinds = [("model.vocab_size=1", True), ("model.vocab_size=256", False), ("model.vocab_size=257", False),
             (f"model.vocab_size={10**9}", True), ("model.vocab_size=300", True), ("data.text_field=", True),
             ("no corpus", True), ("empty train split", True), ("no manifest", True), ("tokenizer_train_mb=0", True)]
    for kind, must in rng.sample(kinds, len(kinds)):
        run = work.fresh()
        argv = ["tokenizer", "--run", run]
        if kind == "no corpus":
            import shutil

            shutil.rmtree(run / "corpus")
        elif kind == "empty train split":
            (run / "corpus" / "train.jsonl").write_text("")
        elif kind == "no manifest":
            (run / "corpus" / "manifest.json").unlink()
        elif kind == "tokenizer_train_mb=0":
            argv += ["--set", "data.tokenizer_train_mb=0"]
        else:
            argv += ["--set", kind]
        # a new vocabulary under finished checkpoints would strand them: must be refused, or keep them loadable
        huge = kind.startswith("model.vocab_size=1000")  # the BPE trainer may abort the process: run it apart
        check(tally, Case("tokenizer command", argv, setup=kind, must_fail=must, watch=[run.parent], timeout=60,
                          subprocess=huge))


def serve_flags(rng, work, tally) -> None:
    """`myllm serve` as a process: a bad flag exits 2 at once; one still serving after the timeout was accepted."""
    run = work.fresh()
    flags = [["--port", "70000"], ["--port", "-1"], ["--threads", "-3"], ["--threads", str(10**6)],
             ["--max-batch", str(10**9)], ["--max-batch", "0"], ["--max-body-mb", "nan"], ["--max-body-mb", "1e300"],
             ["--request-timeout", "1e-300"], ["--host", ""], ["--host", "999.1.1.1"], ["--host", "\u00e9x"],
             ["--api-key", ""], ["--stage", "dpo"], ["--max-batch", str(2**40)]]
    for extra in rng.sample(flags, 11):
        must = extra not in (["--max-body-mb", "1e300"], ["--threads", str(10**6)])
        check(tally, Case("serve flags", ["serve", run, "--port", "0", *extra], must_fail=must, watch=[run],
                          subprocess=True, timeout=25))


def http_odd(rng, work, tally) -> None:
    from bad_inputs_http import odd_requests

    odd_requests(rng, work, tally)


CLASSES = {"plan flags": plan_flags, "--run not a run": run_dir_kinds, "--out odd paths": out_paths,
           "damaged run files": damaged_files, "mixed runs": mixed_runs, "--checkpoint odd": checkpoint_flag,
           "generate extremes": generate_extremes, "chat stdin": chat_stdin, "--config shapes": toml_shapes,
           "post-training flags": post_flags, "post-training data": post_data,
           "post-training --data paths": post_data_paths, "pretrain flags": pretrain_flags,
           "quantize/export flags": quantize_export, "tokenizer command": tokenizer_cmd, "serve flags": serve_flags,
           "HTTP semantics": http_odd}
