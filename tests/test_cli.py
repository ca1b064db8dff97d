"""The command line: end-to-end on a folder corpus, stage skipping, and bad input."""

import json
import subprocess
import sys

import pytest

from conftest import TINY, write_folder_corpus
from myllm.cli import main
from myllm.records import StageRecords
from myllm.run import run


def cli(*args, cwd=None):
    """Run `python -m myllm ARGS` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "myllm", *args], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_run_on_a_folder_then_skip_then_rerun_only_what_changed(tmp_path):
    data = write_folder_corpus(tmp_path / "docs")
    out = tmp_path / "run"
    logs = []
    summary = run(out, overrides=TINY, data=str(data), show_progress=False, log=logs.append)
    assert summary["val_bpb"] > 0 and summary["test_bpb"] > 0 and summary["tokens_trained"] == 20 * 4 * 64
    assert "floor_val_bpb" not in summary  # only the universe knows its floor
    assert len(summary["samples"]) == 3
    assert set(summary["stage_seconds"]) == {"corpus", "tokenizer", "shards", "pretrain", "evaluate", "export"}
    assert (out / "export" / "hf" / "config.json").is_file()
    assert json.loads((out / "summary.json").read_text())["val_bpb"] == summary["val_bpb"]

    logs.clear()
    run(out, show_progress=False, log=logs.append)  # nothing changed: everything skipped
    assert all("up to date" in line for line in logs[:5]) and len(logs) == 9
    # A folder corpus has no universe tasks: post-training waits for the user's own data.
    assert all("skipped: no data: set" in line for line in logs[5:8]) and "up to date" in logs[8]

    logs.clear()
    again = run(out, overrides=["train.max_steps=30"], show_progress=False, log=logs.append)
    assert [x.split("]")[0][1:] for x in logs if "running" in x] == ["pretrain", "evaluate", "export"]
    assert again["tokens_trained"] == 30 * 4 * 64  # resumed from step 20, not restarted

    logs.clear()
    run(out, overrides=["model.vocab_size=300"], show_progress=False, log=logs.append)
    assert [x.split("]")[0][1:] for x in logs if "running" in x] == ["tokenizer", "shards", "pretrain", "evaluate",
                                                                "export"]


def test_tokenizer_command_retrains_and_reshards(tiny_run, capsys):
    assert main(["tokenizer", "--run", str(tiny_run), "--set", "model.vocab_size=300"]) == 0
    assert "bytes/token" in capsys.readouterr().out
    index = json.loads((tiny_run / "shards" / "index.json").read_text())
    assert index["vocab_size"] <= 300
    stages = StageRecords(tiny_run).stages
    assert {"tokenizer", "shards"} <= set(stages)
    assert "vocab_size = 300" in (tiny_run / "config.toml").read_text()


def test_generate_and_plan_commands(tiny_run, capsys):
    from myllm.rundir import RunDir
    from myllm.train.pretrain import pretrain

    pretrain(tiny_run, RunDir(tiny_run).config(), show_progress=False)
    assert main(["generate", "--run", str(tiny_run), "--prompt", "The cat", "--max-new-tokens", "12",
                 "--temperature", "0"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("The cat") and len(first) > len("The cat\n")
    main(["generate", "--run", str(tiny_run), "--prompt", "The cat", "--max-new-tokens", "12", "--temperature", "0"])
    assert capsys.readouterr().out == first  # greedy is deterministic
    assert main(["plan", "--preset", "myllm-1b"]) == 0
    assert "1,055,231,744" in capsys.readouterr().out


def test_missing_and_empty_data_folders(tmp_path):
    proc = cli("run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r1"), "--set", "model.preset=nano")
    assert_one_line_error(proc, "nope", "does not exist")
    assert not (tmp_path / "r1" / "corpus").exists()
    (tmp_path / "empty").mkdir()
    proc = cli("run", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r2"), "--set", "model.preset=nano")
    assert_one_line_error(proc, "empty")
    assert not (tmp_path / "r2" / "corpus").exists()


def test_bad_files_are_skipped_and_counted_not_fatal(tmp_path):
    data = write_folder_corpus(tmp_path / "docs", n_docs=40)
    (data / "binary.txt").write_bytes(b"\x00\x01\x02 binary junk" * 10)
    (data / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    out = tmp_path / "run"
    flags = sum((["--set", x] for x in TINY), [])
    assert main(["data", "prepare", "--out", str(out), "--data", str(data), *flags]) == 0
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    assert sum(manifest["skipped"].values()) >= 2
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] + \
        manifest["splits"]["test"]["documents"] == 40


@pytest.mark.parametrize(
    "setting, fragments",
    [
        ("model.n_heads=3", ["model.n_heads = 3 does not divide model.d_model = 128", "pick heads from"]),
        ("model.n_kv_heads=3", ["model.n_kv_heads = 3 does not divide model.n_heads = 2"]),
        ("train.nope=1", ["unknown key 'train.nope'"]),
        ("train.lr=fast", ["train.lr must be a float"]),
        ("model.preset=huge", ["unknown model preset 'huge'", "myllm-1b"]),
    ],
)
def test_impossible_config_is_one_clear_line(tmp_path, setting, fragments):
    proc = cli("run", "--out", str(tmp_path / "r"), "--set", setting)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "r" / "corpus").exists()


def test_resume_without_checkpoint_and_checkpoint_of_other_shape(tiny_run):
    proc = cli("pretrain", "--run", str(tiny_run), "--resume")
    assert_one_line_error(proc, "no checkpoint", "without --resume")
    assert cli("pretrain", "--run", str(tiny_run), "--max-steps", "3", "--no-progress").returncode == 0
    proc = cli("pretrain", "--run", str(tiny_run), "--resume", "--set", "model.n_layers=3")
    assert_one_line_error(proc, "different model config", "n_layers: checkpoint 2 vs config 3")
    proc = cli("eval", "--run", str(tiny_run.parent / "not-a-run"))
    assert_one_line_error(proc, "not a run directory")


def test_version_and_the_run_directory_as_flag_or_positional(tiny_model_run, tmp_path, capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"myllm {version('myllm')}"
    flag, positional = tmp_path / "flag", tmp_path / "positional"
    assert main(["export", "hf", "--run", str(tiny_model_run), "--out", str(flag)]) == 0
    assert main(["export", "hf", str(tiny_model_run), "--out", str(positional)]) == 0  # the old spelling still works
    assert (flag / "model.safetensors").read_bytes() == (positional / "model.safetensors").read_bytes()
    for args, words in ((["quantize", "--bits", "8"], "the run directory is missing"),
                        (["serve", "a", "--run", "b"], "two run directories (a and --run b)")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and words in capsys.readouterr().err
