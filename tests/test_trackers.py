"""Experiment tracking: TensorBoard gets the same scalars as metrics.jsonl, read back from its event files
with TensorBoard's own reader; a resumed stage shows one history; unknown or unbuilt trackers are refused."""

import json
import shutil

import pytest

from myllm.config import TrainConfig
from myllm.errors import ConfigError
from myllm.rundir import RunDir
from myllm.train.checkpoint import list_checkpoints
from myllm.train.pretrain import pretrain

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(run_dir, stage="pretrain"):
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard" / stage), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_gets_the_metrics_jsonl_scalars_and_one_history_after_resume(tiny_run):
    cfg = RunDir(tiny_run).config(["train.loggers=jsonl,tensorboard"])
    pretrain(tiny_run, cfg, show_progress=False)
    rows, tb = jsonl(tiny_run), scalars(tiny_run)
    assert {"pretrain/loss", "pretrain/lr", "pretrain/grad_norm", "pretrain/tok_s", "pretrain/val_bpb"} <= set(tb)
    assert [s for s, _ in tb["pretrain/loss"]] == [r["step"] for r in rows]
    assert [v for _, v in tb["pretrain/loss"]] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [v for _, v in tb["pretrain/val_bpb"]] == pytest.approx([r["val_bpb"] for r in rows if "val_bpb" in r],
                                                                   rel=1e-6)
    # Stopped after step 10 (later checkpoints lost), then resumed: the curve is one history, as metrics.jsonl.
    for ckpt in list_checkpoints(tiny_run / "checkpoints" / "pretrain")[2:]:
        shutil.rmtree(ckpt)
    pretrain(tiny_run, cfg, resume=True, show_progress=False)
    steps = [s for s, _ in scalars(tiny_run)["pretrain/loss"]]
    assert steps == list(range(1, 21)) == [r["step"] for r in jsonl(tiny_run)]


def test_the_config_names_its_trackers():
    TrainConfig(loggers="jsonl, tensorboard").validate()
    with pytest.raises(ConfigError, match="wandb is not supported yet"):
        TrainConfig(loggers="jsonl,wandb").validate()
    with pytest.raises(ConfigError, match="'mlflow'; choose from jsonl, tensorboard"):
        TrainConfig(loggers="mlflow").validate()
