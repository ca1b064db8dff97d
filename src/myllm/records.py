"""The records of a run directory read back as JSON, checked for shape: summary.json, evals/*.json, the
corpus manifest, the shards index, and stages.json (`StageRecords`, the fingerprint of every finished stage).

A record a user damaged or copied in is one line naming the file and the key (`io.check_shape`), not a
TypeError deep in a command. Only what readers use is listed; other keys may hold anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from myllm.errors import MyLLMError
from myllm.io import Each, Need, atomic_write_json, check_shape, read_json

STAGES_FILE = "stages.json"  # the one file of the run this module owns the format of
CONFIG_HEADER = b"# Resolved MyLLM run config."  # how dump_config starts every run's config.toml

_COUNT, _NUMBER = (int,), (int, float, type(None))
EVAL_RECORD = {k: _NUMBER for k in ("val_bpb", "test_bpb", "floor_val_bpb", "probe_accuracy", "fact_qa_acc",
                                     "arith_acc", "rejected_rate")}
SPLITS = Each({"documents": Need(_COUNT), "bytes": Need(_COUNT), "tokens": (int, type(None))})
SUMMARY = {**EVAL_RECORD, "stages": Each(EVAL_RECORD), "samples": [{"prompt": Need(str), "completion": Need(str)}],
           "corpus": SPLITS, "params": _COUNT, "tokens_trained": _COUNT}
INDEX = {"vocab_size": Need(_COUNT), "splits": Need(Each({"tokens": Need(_COUNT), "bytes": Need(_COUNT)}))}
MANIFEST = {"splits": Need(Each({"documents": Need(_COUNT), "bytes": Need(_COUNT)}))}
STAGE_RECORD = {"fingerprint": str, "seconds": Need((int, float))}


class StageRecords:
    """`stages.json`: the fingerprint and duration of every finished stage.

    Format 2 (`{"format": 2, "stages": {...}}`) holds the fingerprints of the stage table (`rundir.STAGES`);
    a file from before (a bare mapping) cannot be compared with them, and re-running from scratch
    would retrain the model, so commands that decide staleness stop with one line instead.
    """

    FORMAT = 2

    def __init__(self, run: str | os.PathLike):
        self.path = Path(run) / STAGES_FILE  # a RunDir is a path too (`RunDir.stages_file`)
        raw = read_json(self.path) if self.path.is_file() else {"format": self.FORMAT, "stages": {}}
        self.format = raw.get("format", 1) if isinstance(raw, dict) and isinstance(raw.get("format", 1), int) else 0
        # an old file's records are still shown (the report's timings); they never match a fingerprint
        stages = raw.get("stages", {}) if isinstance(raw, dict) and "format" in raw else raw
        if not isinstance(stages, dict) or check_shape(stages, Each(STAGE_RECORD)) is not None:
            raise MyLLMError(f"{self.path} is damaged (its stages are not records); restore it, or delete it "
                             "and re-run (every stage then runs again)")
        self.stages: dict[str, dict[str, Any]] = stages

    def require_current(self) -> StageRecords:
        if self.format != self.FORMAT:
            which = "an older" if self.format < self.FORMAT else "a newer"
            raise MyLLMError(f"{self.path} was written by {which} myllm (format {self.format}, this one reads "
                             f"{self.FORMAT}); its stages cannot be checked for changes. Start a new run directory, "
                             f"or delete {self.path} to re-run every stage (this retrains the model)")
        return self

    def done(self, stage: str, fingerprint: str) -> bool:
        return self.stages.get(stage, {}).get("fingerprint") == fingerprint

    def mark(self, stage: str, fingerprint: str, seconds: float) -> None:
        self.require_current()
        self.stages[stage] = {"fingerprint": fingerprint, "seconds": round(seconds, 2)}
        atomic_write_json(self.path, {"format": self.FORMAT, "stages": self.stages})
