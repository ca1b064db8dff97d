"""Experiment trackers: the training scalars of `metrics.jsonl`, also sent where people look at runs.

`train.loggers` is a comma-separated list. `jsonl` (`metrics.jsonl`) is always on: resume, the report
card and `myllm report` read it. `tensorboard` writes the same numbers (loss, lr, grad norm, tok/s, val
loss and bpb, the stages' metrics such as GRPO's reward and KL) as TensorBoard scalars, one event folder
per stage under `RUN/tensorboard/<stage>/`, tagged `<stage>/<name>` and stepped by the stage's step
(`tensorboard --logdir RUN/tensorboard`). A resumed stage purges the events past its checkpoint, as
`metrics.jsonl` drops its lines, so the curves show one history. Only rank 0 logs.
W&B is not built yet (issue 20): the name is refused with one line rather than ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from myllm.errors import MyLLMError


class Trackers:
    """The trackers of one stage; `log(record)` takes a metrics.jsonl line."""

    def __init__(self, names: list[str], root: Path, stage: str, start_step: int):
        self.writers = []
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MyLLMError("train.loggers names tensorboard, which is not installed: pip install tensorboard "
                                 "(or pip install 'myllm[tracking]'), or leave it out of train.loggers") from None
            # purge_step: events past the step this stage resumes from are dropped (one history per curve).
            self.writers.append(SummaryWriter(log_dir=str(root / "tensorboard" / stage),
                                              purge_step=start_step + 1 if start_step else None))
        self.stage = stage

    def log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if key in ("stage", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                for writer in self.writers:
                    writer.add_scalar(f"{self.stage}/{key}", value, step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
