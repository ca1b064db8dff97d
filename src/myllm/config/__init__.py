"""Configuration: one dataclass per stage, named presets, TOML files and `--set k=v` overrides.

A run's resolved config is written to `runs/<name>/config.toml`; every stage reads its own
section from there, and a stage whose section (and inputs) did not change is skipped.

Resolution order (later wins): the run preset (`default` or `quick`), the model preset named
by `model.preset`, a user TOML file, then `--set section.key=value` overrides.

Where things live (this is the bottom layer: it imports nothing of myllm but `errors`):
- `schema.py`: the dataclasses (`RunConfig` and one per section) and their validation; the
  post-training sections ([sft], [dpo], [grpo]) are in `post.py` and re-exported by `schema.py`.
- `presets.py`: the named model shapes, run presets and training presets, as functions.
- `files.py`: TOML read/write, `--set` parsing, and `resolve_config`. Every source (`--set`, a
  `--config` file, a run's config.toml read back) goes through one typed check (`check_value`):
  a wrong type, a NaN/inf float, an unknown section or key, a nested table, a file that is not
  UTF-8 TOML is one line naming the source, the key and what it must be.
"""

from myllm.config.files import (
    apply_overrides,
    dump_config,
    load_run_config,
    parse_overrides,
    parse_phases,
    resolve_config,
)
from myllm.config.presets import MODEL_PRESETS, TRAIN_PRESETS, apply_model_preset, train_preset
from myllm.config.schema import (
    CleanConfig,
    DataConfig,
    DedupConfig,
    DPOConfig,
    GRPOConfig,
    ModelConfig,
    PostTrainConfig,
    QualityConfig,
    QuantConfig,
    RunConfig,
    SampleConfig,
    SFTConfig,
    TrainConfig,
    parse_targets,
)

__all__ = [
    "MODEL_PRESETS", "TRAIN_PRESETS",
    "CleanConfig", "DataConfig", "DedupConfig", "DPOConfig", "GRPOConfig", "ModelConfig", "PostTrainConfig",
    "QualityConfig", "QuantConfig", "RunConfig", "SampleConfig", "SFTConfig", "TrainConfig",
    "apply_model_preset", "apply_overrides", "dump_config", "load_run_config", "parse_overrides", "parse_phases",
    "parse_targets",
    "resolve_config", "train_preset",
]
