"""Validate, then act: a command that is going to fail fails before it deletes checkpoints or
rewrites config.toml, with one line (the first piece of issue 16)."""

import shutil

from myllm.cli import main
from test_cli import assert_one_line_error, cli


def snapshot(run_dir):
    """Every checkpoint file and its bytes, and config.toml."""
    files = {p.relative_to(run_dir): p.read_bytes() for p in sorted((run_dir / "checkpoints").rglob("*"))
             if p.is_file()}
    return files, (run_dir / "config.toml").read_text()


def test_a_config_the_model_or_optimizer_rejects_keeps_the_checkpoints(tiny_run):
    assert cli("pretrain", "--run", str(tiny_run), "--max-steps", "3", "--no-progress").returncode == 0
    before = snapshot(tiny_run)
    assert before[0]
    for bad in ("train.beta1=1.5",):  # the optimizer
        proc = cli("pretrain", "--run", str(tiny_run), "--restart", "--no-progress", "--set", bad)
        assert_one_line_error(proc, "rejects this config", "no checkpoint was touched")
        assert snapshot(tiny_run) == before, bad
    for bad in ("train.lr=nan", "train.lr=inf", "train.weight_decay=-1", "train.grad_clip=-0.5",
                "model.init_std=-1"):  # the schema
        proc = cli("pretrain", "--run", str(tiny_run), "--restart", "--no-progress", "--set", bad)
        assert_one_line_error(proc, bad.split("=")[0], "finite")
        assert snapshot(tiny_run) == before, bad


def test_resume_and_restart_together_are_refused_before_anything_changes(tiny_run):
    assert cli("pretrain", "--run", str(tiny_run), "--max-steps", "3", "--no-progress").returncode == 0
    before = snapshot(tiny_run)
    proc = cli("pretrain", "--run", str(tiny_run), "--resume", "--restart", "--set", "train.max_steps=9")
    assert_one_line_error(proc, "--resume and --restart contradict")
    assert snapshot(tiny_run) == before


def test_a_rejected_resume_leaves_config_toml_as_it_was(tiny_run):
    assert cli("pretrain", "--run", str(tiny_run), "--max-steps", "3", "--no-progress").returncode == 0
    before = snapshot(tiny_run)
    proc = cli("pretrain", "--run", str(tiny_run), "--resume", "--no-progress", "--set", "train.lr=0.5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert snapshot(tiny_run) == before
    # so the next plain --resume still works (before, every later --resume failed until config.toml was edited)
    proc = cli("pretrain", "--run", str(tiny_run), "--resume", "--max-steps", "5", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "max_steps = 5" in (tiny_run / "config.toml").read_text()


def test_post_training_restart_with_a_rejected_setting_keeps_its_checkpoints(tiny_model_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_model_run, run_dir)
    data = tmp_path / "chats.jsonl"
    chat = '{"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"}]}\n'
    data.write_text(chat * 8)
    args = ["sft", "--run", str(run_dir), "--data", str(data), "--no-progress", "--set", "sft.batch_size=2",
            "--set", "sft.text_rows=0"]
    assert main([*args, "--max-steps", "2"]) == 0
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main([*args, "--max-steps", "2", "--restart", "--set", "train.beta1=1.5"]) == 2
    assert "rejects this config" in capsys.readouterr().err
    assert main([*args, "--max-steps", "2", "--restart", "--lr", "nan"]) == 2
    assert "sft.lr" in capsys.readouterr().err
    assert snapshot(run_dir) == before


def test_restart_with_damaged_shards_keeps_the_checkpoints(tiny_run):
    assert cli("pretrain", "--run", str(tiny_run), "--max-steps", "3", "--no-progress").returncode == 0
    before = snapshot(tiny_run)
    shard = next((tiny_run / "shards").glob("train-*.bin"))
    shard.write_bytes(shard.read_bytes()[:-2])  # cut short: the loader refuses it
    proc = cli("pretrain", "--run", str(tiny_run), "--restart", "--no-progress")
    assert_one_line_error(proc, str(shard.name))
    assert snapshot(tiny_run) == before


def test_a_metrics_file_that_is_a_planted_link_is_never_written_through(tiny_run, tmp_path):
    outside = tmp_path / "outside.txt"
    (tiny_run / "metrics.jsonl").unlink(missing_ok=True)
    (tiny_run / "metrics.jsonl").symlink_to(outside)  # dangling: appending would create it
    proc = cli("pretrain", "--run", str(tiny_run), "--max-steps", "2", "--no-progress")
    assert_one_line_error(proc, "metrics.jsonl")
    assert not outside.exists()


def test_a_data_folder_that_is_the_run_directory_or_inside_it_is_refused(tmp_path, capsys):
    from conftest import write_folder_corpus
    from fuzzing import assert_nothing_lost, snapshot
    from fuzzing import assert_one_line_error as one_line
    from fuzzing import cli as run_cli

    docs = write_folder_corpus(tmp_path / "run" / "docs")
    before = snapshot(tmp_path)
    for data, out in ((docs, docs), (docs, tmp_path / "run")):
        rc, err = run_cli(["data", "prepare", "--data", data, "--out", out], capsys)
        one_line(rc, err, mentions="is the run directory")
        assert_nothing_lost(before, tmp_path)
        assert not (out / "config.toml").exists()
