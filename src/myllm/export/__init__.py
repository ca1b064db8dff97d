"""Exports of a run's model: a Hugging Face directory (`hf.py`) and a llama.cpp GGUF file (`gguf.py`).

Both read only the run directory's outputs (a checkpoint and `tokenizer/`), as every stage does.
"""

from __future__ import annotations

from pathlib import Path

from myllm.errors import MyLLMError
from myllm.train.checkpoint import latest_checkpoint, read_state

STAGES = ("pretrain", "sft", "dpo", "grpo")


def export_checkpoint(run_dir: Path, stage: str | None = None) -> Path:
    """The checkpoint to export: the final one of `stage`, or the run's final model when `stage` is None."""
    from myllm.train.post import final_model_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "tokenizer" / "tokenizer.json").is_file():
        raise MyLLMError(f"{run_dir} is not a run directory with a tokenizer; run `myllm run --out {run_dir}` first")
    if stage is None:
        return final_model_checkpoint(run_dir)
    if stage not in STAGES:
        raise MyLLMError(f"--stage {stage!r} is not a stage; pick one of {', '.join(STAGES)}")
    path = latest_checkpoint(run_dir / "checkpoints" / stage)
    if path is None or not read_state(path).get("done", False):
        raise MyLLMError(f"{run_dir} has no finished {stage} checkpoint; train it (`myllm {stage} --run {run_dir}`) "
                         "or pick another --stage")
    return path
