"""Kill and resume, SFT, DPO and GRPO (issue 16): a post-training stage interrupted after its first
checkpoint continues from it to the very weights and losses of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import Interrupt
from myllm.rundir import RunDir
from myllm.train import loop as loop_mod
from myllm.train.checkpoint import list_checkpoints
from myllm.train.dpo import dpo
from myllm.train.grpo import grpo
from myllm.train.sft import sft

WORDS = ("apple", "river", "stone", "cloud")
DATA = {
    "sft": [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w}."}]}
            for w in WORDS] * 8,
    "dpo": [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": f"{v}."} for w in WORDS for v in WORDS if v != w],
    "grpo": [{"prompt": f"Say {w}", "answer": w, "verifier": "contains"} for w in WORDS] * 2,
}
STAGES = {"sft": sft, "dpo": dpo, "grpo": grpo}
SETTINGS = {"sft": ["sft.text_rows=0"], "dpo": [], "grpo": ["grpo.group_size=2", "grpo.max_new_tokens=4"]}


def run_stage(run, stage: str, data) -> None:
    cfg = RunDir(run).config([f"{stage}.max_steps=4", f"{stage}.batch_size=2", *SETTINGS[stage]])
    STAGES[stage](run, cfg, data=str(data), show_progress=False, log=lambda _: None)


def final(run, stage: str):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage and "loss" in r]
    return load_file(str(list_checkpoints(run / "checkpoints" / stage)[-1] / "model.safetensors")), losses


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_post_training_stage_killed_after_a_checkpoint_resumes_bit_identically(tiny_model_run, tmp_path,
                                                                                  monkeypatch, stage):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in DATA[stage]))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for run in (whole, killed):
        shutil.copytree(tiny_model_run, run)
    run_stage(whole, stage, data)

    interrupt = Interrupt(monkeypatch, loop_mod, "save_checkpoint", at=2)  # the kill: before the final save
    with pytest.raises(KeyboardInterrupt):
        run_stage(killed, stage, data)
    assert [p.name for p in list_checkpoints(killed / "checkpoints" / stage)] == ["step-000002"]
    interrupt.disarm()
    run_stage(killed, stage, data)

    (w1, l1), (w2, l2) = final(whole, stage), final(killed, stage)
    assert dict(l1) == dict(l2) and [s for s, _ in l1] == [1, 2, 3, 4]
    assert interrupt.calls == 1  # the rerun saved step 4 only: it continued from step-000002, not from scratch
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
