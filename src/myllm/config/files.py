"""Config from and to text: TOML files, `--set section.key=value` overrides, and their resolution.

`resolve_config` builds a new run's config, later wins: the run preset (`default` or `quick`), the
model preset named by `model.preset`, a user TOML file, then `--set` overrides. `model.preset`
replaces the whole model section, so within each source it is applied before the other keys.
`dump_config` writes the result (`runs/<name>/config.toml`); `load_run_config` reads it back exactly.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from myllm.config.presets import apply_model_preset, run_preset
from myllm.config.schema import RunConfig
from myllm.errors import ConfigError, MyLLMError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def parse_value(text: str) -> Any:
    """`--set` values: int, float, true/false, else the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_overrides(cfg: RunConfig, values: dict[str, Any], origin: str) -> None:
    """Set `section.key` values, rejecting unknown keys and wrong types with a clear message."""
    for dotted, value in values.items():
        section_name, _, key = dotted.partition(".")
        section = getattr(cfg, section_name, None) if section_name in RunConfig.__dataclass_fields__ else None
        if section is None:
            sections = ", ".join(RunConfig.__dataclass_fields__)
            raise ConfigError(f"{origin}: unknown section {section_name!r} in {dotted!r}; sections: {sections}")
        fields = {f.name: f for f in dataclasses.fields(section)}
        if key not in fields:
            raise ConfigError(f"{origin}: unknown key {dotted!r}; {section_name} keys: {', '.join(fields)}")
        current = getattr(section, key)
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ConfigError(f"{origin}: {dotted} must be true or false, got {value!r}")
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(current, (int, float)) and not isinstance(current, bool) and type(value) is not type(current):
            raise ConfigError(f"{origin}: {dotted} must be a {type(current).__name__}, got {value!r}")
        if isinstance(current, str) and not isinstance(value, str):
            value = str(value)
        setattr(section, key, value)
        if dotted == "model.preset":
            apply_model_preset(cfg, value, origin)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _preset_first(values: dict[str, Any]) -> dict[str, Any]:
    # `model.preset` resets the model shape, so it must come before other model keys.
    return dict(sorted(values.items(), key=lambda kv: kv[0] != "model.preset"))


def resolve_config(
    preset: str = "default",
    config_file: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> RunConfig:
    """Build and validate a RunConfig from a run preset, a TOML file and overrides."""
    cfg = RunConfig()
    run_preset(preset)(cfg)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing TOML file")
        try:
            tree = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        apply_overrides(cfg, _preset_first(flatten(tree)), str(path))
    if overrides:
        values = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        apply_overrides(cfg, _preset_first(values), "--set")
    return cfg.validate()


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-3", "model.preset=nano"]` -> {"train.lr": 0.001, "model.preset": "nano"}."""
    parsed = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
        parsed[key.strip()] = parse_value(value.strip())
    return _preset_first(parsed)


def load_run_config(path: str | Path) -> RunConfig:
    """Read a resolved `config.toml` written by `dump_config` (exact, no presets applied)."""
    path = Path(path)
    try:
        tree = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read run config {path}: {e}") from None
    cfg = RunConfig()
    for section in dataclasses.fields(cfg):
        values = tree.get(section.name, {})
        obj = getattr(cfg, section.name)
        known = {f.name for f in dataclasses.fields(obj)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)} in [{section.name}]")
        setattr(cfg, section.name, type(obj)(**values))
    return cfg.validate()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_config(cfg: RunConfig) -> str:
    lines = ["# Resolved MyLLM run config. Edit, then re-run: stages whose section changed re-run."]
    for section, values in cfg.to_dict().items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def parse_phases(text: str) -> list[tuple[str, int]]:
    """`"shards-math:12540000000,shards-prose:15e9"` -> [("shards-math", 12540000000), ...]."""
    phases = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        folder, sep, budget = item.rpartition(":")
        try:
            tokens = int(float(budget))
        except ValueError:
            tokens = -1
        if not sep or not folder or tokens <= 0:
            raise MyLLMError(f"train.phases item {item!r}: expected SHARDS_DIR:TOKENS, e.g. shards-math:12.54e9")
        phases.append((folder, tokens))
    return phases
