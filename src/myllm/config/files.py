"""Config from and to text: TOML files, `--set section.key=value` overrides, and their resolution.

`resolve_config` builds a new run's config, later wins: the run preset (`default` or `quick`), the
model preset named by `model.preset`, a user TOML file, then `--set` overrides. `model.preset`
replaces the whole model section, so within each source it is applied before the other keys.
`dump_config` writes the result (`runs/<name>/config.toml`); `load_run_config` reads it back exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from myllm.config.presets import apply_model_preset, run_preset
from myllm.config.schema import RunConfig
from myllm.errors import ConfigError, MyLLMError, brief

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


# What each field type accepts, said with an example (the fix) in the one-line error.
INT64 = 2**63
EXPECTED = {"bool": "true or false (unquoted)", "int": "an integer, e.g. 8", "float": "a float, e.g. 0.5",
            "str": "a string, e.g. \"auto\""}


def check_value(kind: str, dotted: str, value: Any, origin: str) -> Any:
    """`value` as the field type `kind` ("bool", "int", "float", "str") wants it, or one line naming
    the source, the key, the expected type and what was given. The one check of every config source."""
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        if not -INT64 <= value < INT64:  # TOML's integers are 64-bit; seeds go to torch as int64/uint64
            shown = value if value.bit_length() < 256 else f"a {value.bit_length()}-bit integer"
            raise ConfigError(f"{origin}: {dotted} = {shown} is out of range; use a 64-bit integer (|x| < 2**63)")
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # NaN would pass most range checks (every comparison is false)
            raise ConfigError(f"{origin}: {dotted} must be a finite float, e.g. 0.5, got {value!r}")
        return float(value)
    if kind == "str" and isinstance(value, (str, int, float)):  # bool is an int: train.compile = true -> "true"
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        try:
            text.encode("utf-8")  # a lone surrogate (from undecodable argv bytes) could not be written back
        except UnicodeEncodeError:
            raise ConfigError(f"{origin}: {dotted} is not valid text; use UTF-8 characters") from None
        return text
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ConfigError(f"{origin}: {dotted} must be {EXPECTED.get(kind, kind)}, got {type(value).__name__} {shown}")


def _field_kind(section: Any, key: str) -> str:
    return str({f.name: f.type for f in dataclasses.fields(section)}[key])


def apply_overrides(cfg: RunConfig, values: dict[str, Any], origin: str, *, presets: bool = True) -> None:
    """Set `section.key` values, rejecting unknown keys and wrong types with a clear message.
    `model.preset` replaces the model section unless `presets` is off (reading a resolved config back)."""
    for dotted, value in values.items():
        section_name, _, key = dotted.partition(".")
        section = getattr(cfg, section_name, None) if section_name in RunConfig.__dataclass_fields__ else None
        if section is None:
            sections = ", ".join(RunConfig.__dataclass_fields__)
            raise ConfigError(f"{origin}: unknown section {section_name!r} in {dotted!r}; sections: {sections}")
        fields = [f.name for f in dataclasses.fields(section)]
        if key not in fields:
            raise ConfigError(f"{origin}: unknown key {dotted!r}; {section_name} keys: {', '.join(fields)}")
        value = check_value(_field_kind(section, key), dotted, value, origin)
        setattr(section, key, value)
        if dotted == "model.preset" and presets:
            apply_model_preset(cfg, value, origin)


def section_values(tree: dict[str, Any], origin: str) -> dict[str, Any]:
    """A TOML document as {"section.key": value}: only `[section]` tables of `key = value` lines."""
    out: dict[str, Any] = {}
    sections = ", ".join(RunConfig.__dataclass_fields__)
    for name, table in tree.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: {name} = ... is outside any [section]; put each key under its section "
                              f"(sections: {sections})")
        if name not in RunConfig.__dataclass_fields__:
            raise ConfigError(f"{origin}: unknown section [{name}]; sections: {sections}")
        for key, value in table.items():
            if isinstance(value, dict):
                raise ConfigError(f"{origin}: [{name}.{key}] is a nested table; [{name}] holds only key = value lines")
            out[f"{name}.{key}"] = value
    return out


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tree, or one line saying why not: missing, a folder, unreadable, not UTF-8, not TOML."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; pass a TOML file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; pass an existing TOML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not UTF-8 text (bad byte at offset {e.start}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        reason = (str(e).splitlines() or ["parse error"])[0]
        raise ConfigError(f"{what} {path} is not valid TOML: {reason}; fix that line") from None
    except RecursionError:  # arrays nested thousands deep
        raise ConfigError(f"{what} {path} is not valid TOML: nested too deep") from None
    except ValueError as e:  # an integer of more than 4300 digits (Python's int-from-text limit)
        raise ConfigError(f"{what} {path} is not valid TOML: {brief(e)}") from None


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
        apply_overrides(cfg, _preset_first(section_values(read_toml(path, "config file"), str(path))), str(path))
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
    """Read a resolved `config.toml` written by `dump_config` (exact, no presets applied), through the
    same typed check as `--set` and `--config`; a bad value is one line naming the file and the key."""
    path = Path(path)
    cfg = RunConfig()
    tree = read_toml(path, "run config")
    if not tree:  # dump_config writes every section: an empty file would silently mean "all defaults"
        raise ConfigError(f"run config {path} is empty; restore it, or delete it to start the run's config afresh")
    apply_overrides(cfg, section_values(tree, str(path)), str(path), presets=False)
    try:
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


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
