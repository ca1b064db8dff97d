"""Fuzz every config source and the post-training data files through the real CLI (issue 16).

Bad inputs are built from classes, a seeded generator picking the instance: for each key of the
schema a value of a wrong type, out of its range, NaN/inf, a string where a boolean belongs;
random byte corruption of a valid config.toml; unknown sections and keys; nested tables; bad
`--set` text; bad `--config` files; JSONL files with a bad line at a random place. Each must end
with exit status 2, one line naming the key (or file:line), no traceback, and nothing lost.

Cheap commands: `myllm plan --run DIR` reads the whole config.toml and does nothing else; a
`myllm sft --run DIR` on a run without a pretrained model stops right after its config and data
checks; `myllm run --config F --out DIR --data MISSING` stops right after resolving the config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import string

import pytest

from fuzzing import SEEDS, assert_nothing_lost, assert_one_line_error, cli, rng_for, snapshot
from myllm.config import RunConfig, load_run_config

SCHEMA = [(s.name, f.name, str(f.type)) for s in dataclasses.fields(RunConfig)
          for f in dataclasses.fields(s.default_factory())]
SCALARS = {"bool": True, "int": 8, "float": 0.5, "str": "auto"}


def toml_value(v) -> str:
    """A Python value as TOML (inline tables and arrays included; nan/inf as TOML spells them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"


def word(rng, n: int = 6) -> str:
    return "x" + "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def wrong_type(rng, kind: str):
    """A value of a type the field `kind` refuses (a str field takes any scalar, so only containers)."""
    classes = {
        "bool": [lambda: rng.choice(["true", "false", "yes", "0"]), lambda: rng.randint(0, 1), lambda: 0.5],
        "int": [lambda: rng.randint(1, 99) + rng.choice([0.5, 0.0]), lambda: str(rng.randint(1, 99)),
                lambda: rng.choice([True, False])],
        "float": [lambda: rng.choice(["0.1", "fast", ""]), lambda: rng.choice([True, False]),
                  lambda: rng.choice([math.nan, math.inf, -math.inf])],
        "str": [],
    }[kind] + [lambda: [SCALARS[kind]] * rng.randint(0, 3), lambda: {word(rng): SCALARS[kind]}]
    return rng.choice(classes)()


def out_of_range(rng, cfg: RunConfig, section: str, key: str):
    """A value of the right type that the section's validation refuses, or None for a key without a range."""
    neg = lambda: -rng.randint(1, 10**6)  # noqa: E731
    small = lambda: rng.uniform(1e-6, 100)  # noqa: E731
    posts = ("sft", "dpo", "grpo")
    positive_int = {"model": "vocab_size d_model n_layers n_heads n_kv_heads d_ff context",
                    "train": "batch_size grad_accum max_steps eval_every ckpt_every keep_last eval_tokens",
                    "data": "memory_mb tokenizer_train_mb shard_tokens", "sample": "max_new_tokens",
                    **{p: "max_steps batch_size examples" for p in posts}}
    non_negative_int = {"data": "workers", "train": "warmup_steps seq_len threads global_batch", "sample": "top_k",
                        **{p: "warmup_steps lora_rank" for p in posts}, "sft": "warmup_steps lora_rank text_rows"}
    positive_float = {"model": "rope_theta norm_eps", "train": "lr dist_timeout", "dpo": "lr lora_alpha beta",
                      "grpo": "lr lora_alpha temperature clip_eps", "sft": "lr lora_alpha"}
    non_negative_float = {"train": "weight_decay grad_clip time_budget spike_factor", "sample": "temperature",
                          "grpo": "weight_decay grad_clip kl_coef", **{p: "weight_decay grad_clip" for p in posts[:2]}}
    unit = {"train": "min_lr_ratio", "dpo": "min_lr_ratio arith_fraction", "grpo": "min_lr_ratio fact_fraction",
            "sft": "min_lr_ratio", "quality": " ".join(f.name for f in dataclasses.fields(cfg.quality)
                                                      if f.name.endswith("_fraction"))}
    has = lambda table: key in table.get(section, "").split()  # noqa: E731
    if has(positive_int):
        return rng.choice([0, neg()])
    if has(non_negative_int):
        return neg()
    if has(positive_float):
        return rng.choice([0.0, -small()])
    if has(non_negative_float):
        return -small()
    if has(unit):
        return rng.choice([-small(), 1 + small()])
    special = {
        ("sample", "top_p"): lambda: rng.choice([0.0, -small(), 1 + small()]),
        ("data", "val_fraction"): lambda: rng.choice([-small(), 1 + small()]),
        ("data", "test_fraction"): lambda: rng.choice([-small(), 1 + small()]),
        ("data", "text_field"): lambda: "",
        ("dedup", "threshold"): lambda: rng.choice([0.0, -small(), 1 + small()]),
        ("dedup", "shingle_words"): lambda: rng.randint(-100, 0),
        ("dedup", "bands"): lambda: rng.choice([0, cfg.dedup.num_perm + rng.randint(1, 50)]),
        ("quant", "bits"): lambda: rng.choice([0, 1, 2, 3, 5, 6, 7, 16, -8]),
        ("quant", "group_size"): lambda: rng.choice([1, 0, -2, 2 * rng.randint(1, 50) + 1]),
        ("clean", "header_min_repeats"): lambda: rng.randint(-5, 1),
        ("quality", "min_words"): neg,
        ("quality", "max_words"): lambda: rng.randint(0, cfg.quality.min_words - 1),
        ("quality", "min_mean_word_length"): lambda: rng.choice([0.0, -small(), cfg.quality.max_mean_word_length + 1]),
        ("quality", "max_symbol_word_ratio"): lambda: -small(),
        ("grpo", "group_size"): lambda: rng.randint(-10, 1),
        ("grpo", "oversample"): lambda: rng.randint(-10, 0),
        ("grpo", "max_new_tokens"): lambda: rng.randint(-10, 0),
        ("train", "max_bad_steps"): lambda: rng.randint(-10, 0),
        ("train", "loss_chunk"): lambda: rng.randint(-100, -2),
        ("train", "device"): lambda: word(rng), ("train", "compile"): lambda: word(rng),
        ("train", "dist"): lambda: word(rng), ("sft", "overlong"): lambda: word(rng),
        **{(p, "lora_targets"): (lambda: word(rng)) for p in posts},
    }
    make = special.get((section, key))
    return make() if make else None


def bad_values(seed: int):
    """(section, key, value) per key of the schema: a wrong type, an out-of-range value, NaN/inf for
    floats, a quoted boolean for booleans."""
    rng = rng_for(seed, "config values")
    cfg = RunConfig()
    for section, key, kind in SCHEMA:
        yield section, key, wrong_type(rng, kind)
        bad = out_of_range(rng, cfg, section, key)
        if bad is not None:
            yield section, key, bad
        if kind == "float":
            yield section, key, rng.choice([math.nan, math.inf, -math.inf])
        if kind == "bool":
            yield section, key, rng.choice(["true", "false"])


def with_value(text: str, section: str, key: str, value) -> str:
    """config.toml text with `section.key` set to `value` (the line replaced)."""
    lines, current = text.splitlines(), None
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.split(" = ")[0] == key:
            lines[i] = f"{key} = {toml_value(value)}"
            return "\n".join(lines) + "\n"
    raise AssertionError(f"{section}.{key} not in config.toml")


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_values_in_config_toml(tiny_run, seed, capsys):
    path = tiny_run / "config.toml"
    good = path.read_text()
    load_run_config(path)  # the starting point is valid
    count = 0
    for section, key, value in bad_values(seed):
        path.write_text(with_value(good, section, key, value))
        before = snapshot(tiny_run)
        rc, err = cli(["plan", "--run", tiny_run], capsys)
        assert_one_line_error(rc, err, mentions=f"{section}.{key}")
        assert "config.toml" in err, err  # the file is named
        assert_nothing_lost(before, tiny_run)
        count += 1
    assert count > 2 * len(SCHEMA)


@pytest.mark.parametrize("seed", SEEDS)
def test_corrupted_and_misshapen_config_toml(tiny_run, seed, capsys):
    rng = rng_for(seed, "config corruption")
    path = tiny_run / "config.toml"
    good = path.read_bytes()
    sections = [s for s, _, _ in SCHEMA]

    def corrupt() -> bytes:
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i:i + 1] = rng.choice([b"\xff", b"\xc3", b"\x80", b"\x00", b'"', b"[", b"=", b"\n=", b"{"])
        return bytes(data)

    classes = [
        corrupt,
        lambda: good[: rng.randrange(len(good))] + b"\xfe",  # truncated, then a byte that is never UTF-8
        lambda: good + f"\n[{word(rng)}]\nx = 1\n".encode(),  # an unknown section
        lambda: good + f"\n[{rng.choice(sections)}]\n{word(rng)} = 1\n".encode(),  # an unknown key (or a repeat)
        lambda: good + f"\n[{rng.choice(sections)}.{word(rng)}]\nx = 1\n".encode(),  # a nested table
        lambda: f"{word(rng)} = 1\n".encode() + good,  # a key outside any section
        lambda: f"{rng.choice(sections)} = {rng.randint(0, 9)}\n".encode() + good,  # a section that is a value
        lambda: b"[" * rng.randint(1, 3000),  # not TOML, nested
    ]
    errors = 0
    for _ in range(40):
        path.write_bytes(rng.choice(classes)())
        before = snapshot(tiny_run)
        rc, err = cli(["plan", "--run", tiny_run], capsys)
        if rc != 0:  # a flipped byte in a comment is still a valid config
            assert_one_line_error(rc, err)
            errors += 1
        assert_nothing_lost(before, tiny_run)
    assert errors >= 30


def set_texts(seed: int):
    """("key" if the error names the text's key, else what it names; --set text): values as a user types them."""
    rng = rng_for(seed, "--set text")
    cfg = RunConfig()
    for section, key, kind in SCHEMA:
        dotted = f"{section}.{key}"
        typed = {"bool": [rng.choice(["yes", "no", "1", "0", "on", word(rng)])],
                 "int": [rng.choice(["1.5", "8.0", "1e3", word(rng), "true"])],
                 "float": [rng.choice(["nan", "inf", "-inf", "NaN", word(rng), "true"])], "str": []}[kind]
        for text in typed:
            yield "key", f"{dotted}={text}"
        bad = out_of_range(rng, cfg, section, key)
        if bad is not None:
            yield "key", f"{dotted}={bad}"
    for _ in range(5):
        section = rng.choice([s for s, _, _ in SCHEMA])
        yield "key", f"{word(rng)}.{word(rng)}=1"  # an unknown section
        yield "key", f"{section}.{word(rng)}=1"  # an unknown key
        yield "key", f"{section}.{rng.choice(SCHEMA)[1]}.{word(rng)}=1"  # a key below a key
        yield "--set", f"{section}.{word(rng)}"  # no '='


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_set_values(tiny_run, seed, capsys):
    before = snapshot(tiny_run)
    for mentioned, text in set_texts(seed):
        rc, err = cli(["sft", "--run", tiny_run, "--no-progress", "--set", text], capsys)
        assert_one_line_error(rc, err, mentions=text.partition("=")[0] if mentioned == "key" else mentioned)
        assert_nothing_lost(before, tiny_run)


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_config_files(tiny_run, tmp_path, seed, capsys):
    rng = rng_for(seed, "--config files")
    before = snapshot(tiny_run)
    cases = [(f"{s}.{k}", f"[{s}]\n{k} = {toml_value(v)}\n".encode()) for s, k, v in bad_values(seed)
             if rng.random() < 0.3]  # a sample of the keys: each --config run resolves a whole config
    cases += [("is not UTF-8", b"[train]\nlr = 0.1\n# caf\xe9\n"), ("nested table", b"[train.a.b]\nc = 1\n"),
              ("outside any [section]", b"lr = 0.1\n"), ("unknown section", f"[{word(rng)}]\n".encode()),
              ("not valid TOML", b"[train\nlr = \n"), ("is a folder", None), ("does not exist", "missing")]
    for i, (mentioned, content) in enumerate(cases):
        path = tmp_path / f"c{i}.toml"
        if content is None:
            path.mkdir()
        elif content != "missing":
            path.write_bytes(content)
        rc, err = cli(["run", "--config", path, "--out", tiny_run, "--data", tmp_path / "no-such-folder",
                       "--no-progress"], capsys)
        assert_one_line_error(rc, err, mentions=mentioned)
        assert_nothing_lost(before, tiny_run)


# Post-training data: a few valid records, then one bad line somewhere.
GOOD = {
    "sft": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    "dpo": {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
    "grpo": {"prompt": "2+2?", "answer": "4", "verifier": "number"},
}


def bad_record(rng, stage: str):
    """A JSON value of the wrong shape for `stage`: a field missing, or of the wrong type."""
    good = dict(GOOD[stage])
    wrong = rng.choice([None, 7, 2.5, True, [], [1, 2], {"a": 1}])
    if rng.random() < 0.4:
        del good[rng.choice(["prompt", "answer"] if stage == "grpo" else list(good))]  # grpo's verifier is optional
        return good
    if stage == "sft":
        msgs = [dict(m) for m in good["messages"]]
        k = rng.randrange(len(msgs))
        shape = rng.choice(["list", "item", "role", "content"])
        if shape == "list":
            return {"messages": rng.choice([[], "hi", 3, None, {"role": "user"}])}
        if shape == "item":
            msgs[k] = wrong
        elif shape == "role":
            msgs[k]["role"] = rng.choice([word(rng), None, 3])
        else:
            msgs[k]["content"] = rng.choice([None, 3, ["x"], {"a": 1}])
        return {"messages": msgs}
    if stage == "dpo":
        good[rng.choice(["chosen", "rejected"])] = rng.choice([None, 7, 2.5, {"role": "assistant"}, [1, 2]])
        if rng.random() < 0.3:
            good = {**GOOD["dpo"], "prompt": rng.choice([None, 7, [], [{"role": "x"}]])}
        return good
    field = rng.choice(["answer", "verifier", "prompt"])
    good[field] = {"answer": rng.choice([None, {"a": 1}, [4]]), "verifier": rng.choice([word(rng), 3, None, [1]]),
                   "prompt": rng.choice([None, 7, [], [{"content": "x"}]])}[field]
    return good


def bad_lines(rng, stage: str) -> tuple[bytes, str]:
    """(line bytes, what the error names besides the line number) by class."""
    kind = rng.choice(["utf8", "json", "not object", "shape"])
    if kind == "utf8":
        text = json.dumps(GOOD[stage]).encode()
        i = rng.randrange(len(text))
        return text[:i] + rng.choice([b"\xff", b"\xc3(", b"\x80", b"\xed\xa0\x80"]) + text[i:], "UTF-8"
    if kind == "json":
        text = json.dumps(GOOD[stage])
        return rng.choice([text[: rng.randrange(1, len(text))], text + "}", "{'a': 1}", word(rng),
                           "[" * 5000, "1" * 5000]).encode(), "JSON"
    if kind == "not object":
        return json.dumps(rng.choice([[1, 2], "text", 3, None, True])).encode(), "JSON object"
    return json.dumps(bad_record(rng, stage)).encode(), ""


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stage", ["sft", "dpo", "grpo"])
def test_bad_post_training_data(tiny_run, tmp_path, seed, stage, capsys):
    rng = rng_for(seed, f"{stage} data")
    before = snapshot(tiny_run)
    for i in range(25):
        path = tmp_path / f"{stage}{i}.jsonl"
        lines = [json.dumps(GOOD[stage]).encode()] * rng.randint(0, 5)
        at = rng.randint(0, len(lines))
        line, named = bad_lines(rng, stage)
        lines.insert(at, line)
        path.write_bytes(b"\n".join(lines) + b"\n")
        rc, err = cli([stage, "--run", tiny_run, "--data", path, "--no-progress"], capsys)
        assert_one_line_error(rc, err, mentions=f"{path.name}:{at + 1}")
        assert named in err, err
        assert_nothing_lost(before, tiny_run)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    (tmp_path / "empty.jsonl").write_bytes(b"\n \n" * rng.randint(0, 3))
    for path, named in ((folder, "is a folder"), (tmp_path / "empty.jsonl", "is empty"),
                        (tmp_path / "missing.jsonl", "not found")):
        rc, err = cli([stage, "--run", tiny_run, "--data", path, "--no-progress"], capsys)
        assert_one_line_error(rc, err, mentions=named)
        assert_nothing_lost(before, tiny_run)


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_generate_and_chat_flags(tiny_run, seed, capsys):
    """Sampling flags out of range or not finite: refused before a model is loaded (tiny_run has none)."""
    rng = rng_for(seed, "sampling flags")
    small = lambda: rng.uniform(1e-6, 100)  # noqa: E731
    classes = {
        "max-new-tokens": lambda: rng.randint(-100, 0), "top-k": lambda: rng.randint(-100, -1),
        "temperature": lambda: rng.choice([-small(), math.nan, math.inf]),
        "top-p": lambda: rng.choice([0.0, -small(), 1 + small(), math.nan]),
        "repetition-penalty": lambda: rng.choice([0.0, -small(), math.nan, math.inf]),
        "frequency-penalty": lambda: rng.choice([math.nan, math.inf, -math.inf]),
        "presence-penalty": lambda: rng.choice([math.nan, math.inf, -math.inf]),
        "beams": lambda: rng.randint(-10, 0),
    }
    before = snapshot(tiny_run)
    for _ in range(30):
        flag = rng.choice(list(classes))
        command = "generate" if flag == "beams" else rng.choice(["generate", "chat"])
        rc, err = cli([command, "--run", tiny_run, f"--{flag}", classes[flag]()], capsys)
        assert_one_line_error(rc, err)
        assert f"--{flag}" in err or flag.replace("-", "_") in err, err
        assert_nothing_lost(before, tiny_run)
