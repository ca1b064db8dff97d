"""The run directory, which is the state of a run: every path in it, the stage table, the one
fingerprint recipe, and the one function that picks which model a command loads.

Nothing else in `src/` spells a path inside a run directory; the layout is the README's:

    config.toml  stages.json  metrics.jsonl  summary.json  report.md  plots/
    corpus/{train,val,test}.jsonl manifest.json universe.json report.md plots/
    tokenizer/tokenizer.json  shards/index.json  checkpoints/<stage>/step-N/
    tasks/<stage>.jsonl  evals/<stage>.json  export/hf/  export/model-TYPE.gguf  quantized/

This module sits just above the parts (config, tokenizer, checkpoints, the universe) and below
everything that reads or writes a run (training, evaluation, export, serving, `myllm run`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from myllm.config import RunConfig, apply_overrides, load_run_config, parse_overrides, parse_phases
from myllm.errors import MyLLMError
from myllm.io import read_json, read_record
from myllm.records import CONFIG_HEADER, EVAL_RECORD, INDEX, MANIFEST, STAGES_FILE, SUMMARY
from myllm.train.checkpoint import latest_checkpoint, read_state


class RunDir:
    """A run directory: `RunDir("runs/universe").checkpoints("sft")`, `.config()`, `.model_checkpoint()`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def of(cls, run: RunDir | str | os.PathLike) -> RunDir:
        """Library functions take a RunDir or a plain path (tests, notebooks); this makes either a RunDir."""
        return run if isinstance(run, RunDir) else cls(run)

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # -- files of the run as a whole
    config_file = property(lambda self: self.root / "config.toml")
    stages_file = property(lambda self: self.root / STAGES_FILE)
    metrics_file = property(lambda self: self.root / "metrics.jsonl")
    summary_file = property(lambda self: self.root / "summary.json")
    report_file = property(lambda self: self.root / "report.md")
    plots = property(lambda self: self.root / "plots")

    # -- data: corpus, tokenizer, shards
    corpus = property(lambda self: self.root / "corpus")
    manifest_file = property(lambda self: self.corpus / "manifest.json")
    universe_file = property(lambda self: self.corpus / "universe.json")
    corpus_report = property(lambda self: self.corpus / "report.md")
    corpus_plots = property(lambda self: self.corpus / "plots")
    tokenizer_dir = property(lambda self: self.root / "tokenizer")
    tokenizer_file = property(lambda self: self.tokenizer_dir / "tokenizer.json")
    shards = property(lambda self: self.root / "shards")

    def corpus_split(self, split: str) -> Path:
        return self.corpus / f"{split}.jsonl"

    def shard_folder(self, name: str = "shards") -> Path:
        """A folder of token shards: `shards/`, or a data phase's folder named in `train.phases`."""
        return self.root / name

    def index_file(self, folder: str = "shards") -> Path:
        return self.shard_folder(folder) / "index.json"

    # -- training and its results
    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def tasks(self, stage: str) -> Path:
        """The universe records a post-training stage trained on."""
        return self.root / "tasks" / f"{stage}.jsonl"

    evals = property(lambda self: self.root / "evals")

    def stage_eval(self, stage: str) -> Path:
        """A stage's held-out evaluation: a row of the report card."""
        return self.evals / f"{stage}.json"

    export_hf = property(lambda self: self.root / "export" / "hf")

    def export_gguf(self, kind: str) -> Path:
        return self.root / "export" / f"model-{kind}.gguf"

    def quantized(self, bits: int) -> Path:
        return self.root / "quantized" / f"model-int{bits}.safetensors"

    # -- reading
    def require(self) -> RunDir:
        if not self.config_file.is_file():
            raise MyLLMError(f"{self} is not a run directory (no config.toml); create it with `myllm run --out {self}`")
        return self

    def config(self, overrides: list[str] | None = None) -> RunConfig:
        """The run's config.toml with `--set` overrides applied (not written back)."""
        cfg = load_run_config(self.require().config_file)
        apply_overrides(cfg, parse_overrides(overrides or []), "--set")
        return cfg.validate()

    def require_tokenizer(self) -> Path:
        if not self.tokenizer_file.is_file():
            raise MyLLMError(f"{self} is not a run directory with a tokenizer ({self.tokenizer_file} is missing); "
                             f"run `myllm run --out {self}` first")
        return self.tokenizer_file

    def tokenizer(self):
        from myllm.tokenizer import Tokenizer

        return Tokenizer.load(self.require_tokenizer())

    def check_model_fits(self, vocab_size: int, model: str | Path) -> None:
        """A model of `vocab_size` (checkpoint or file `model`) against this run's tokenizer, config and shards
        (what the model was trained on): a model, tokenizer or shards copied in from another run is one line,
        not silent nonsense."""
        fix = f"restore this run's files, or re-run its stages (`myllm run --out {self}`)"
        tok = self.tokenizer()
        configured = self.config().model.vocab_size if self.config_file.is_file() else vocab_size
        if tok.vocab_size > vocab_size or configured != vocab_size:
            raise MyLLMError(f"{model} has a vocabulary of {vocab_size:,} tokens, but this run's tokenizer has "
                             f"{tok.vocab_size:,} (model.vocab_size = {configured:,} in {self.config_file}): they "
                             f"come from different runs; {fix}")
        self.check_shards(tok)

    def check_shards(self, tok: Any = None, folder: str = "shards") -> None:
        """The shards (if any) were tokenized by this run's tokenizer (shards of older versions: by its size)."""
        if not self.index_file(folder).is_file():
            return
        tok = tok or self.tokenizer()
        index = self.index(folder)
        digest = index.get("tokenizer_sha256")
        if index["vocab_size"] != tok.vocab_size or (digest is not None and digest != tok.digest()):
            raise MyLLMError(f"{self.shard_folder(folder)} was tokenized with another tokenizer than "
                             f"{self.tokenizer_file}: one of them comes from a different run; restore this run's "
                             f"files, or rebuild the shards with `myllm tokenizer --run {self}`")

    def is_run(self) -> bool:
        """Whether this folder holds a run: a config.toml that myllm wrote (`dump_config`'s first line)."""
        try:
            with open(self.config_file, "rb") as f:
                return f.read(len(CONFIG_HEADER)) == CONFIG_HEADER
        except OSError:
            return False

    def has_model(self) -> bool:
        """Whether any stage has saved a checkpoint in this run."""
        root = self.root / "checkpoints"
        return root.is_dir() and any(latest_checkpoint(d) is not None for d in root.iterdir() if d.is_dir())

    def load_model(self, path: Path, device: Any = "cpu"):
        """The model of checkpoint `path`, checked to fit this run (`check_model_fits`)."""
        from myllm.train.checkpoint import load_model

        model = load_model(path, device)
        self.check_model_fits(model.cfg.vocab_size, path)
        return model

    def index(self, folder: str = "shards") -> dict[str, Any]:
        """A shards folder's index.json: vocabulary size and tokens/bytes of every split."""
        path = self.index_file(folder)
        if not path.is_file():
            raise MyLLMError(f"{path} not found: prepare the data first with `myllm run --out {self}`")
        return read_record(path, INDEX)

    def manifest(self) -> dict[str, Any]:
        return read_record(self.manifest_file, MANIFEST)

    def summary(self) -> dict[str, Any]:
        """summary.json: the base model's evaluation, samples, corpus figures, and every stage's row."""
        return read_record(self.summary_file, SUMMARY)

    def eval_record(self, path: Path) -> dict[str, Any]:
        """One `evals/<name>.json` row of the report card (`stage_eval`, or any other name in evals/)."""
        return read_record(path, EVAL_RECORD)

    def universe(self) -> dict[str, Any] | None:
        """universe.json (the world, probes, entropy floors) of a universe run; None for other corpora."""
        return read_json(self.universe_file) if self.universe_file.is_file() else None

    def world(self):
        """The universe's world; an error names the fix for runs on other corpora."""
        from myllm.universe import World

        universe = self.universe()
        if universe is None:
            raise MyLLMError(f"{self} was not trained on the built-in universe, so it has no universe tasks; "
                             "pass your own data as a JSONL file (--data FILE)")
        return World.from_dict(universe["world"])

    # -- models
    def stage_checkpoint(self, stage: str, finished: bool = True) -> Path | None:
        """The latest checkpoint of `stage` (only if its training finished, unless `finished` is False)."""
        path = latest_checkpoint(self.checkpoints(stage))
        if path is None or (finished and not read_state(path).get("done", False)):
            return None
        return path

    def model_checkpoint(self, stage: str | None = None, cfg: RunConfig | None = None, *,
                         before: str | None = None, unfinished: bool = False) -> Path:
        """The checkpoint a command loads, the one rule for every command:

        - `stage`: that stage's final checkpoint (its latest one with `unfinished`: chatting
          with a model still in training);
        - `before`: where post-training stage `before` starts, the final checkpoint of the latest
          earlier stage of the chain that has one (pretrain at the start);
        - neither: the run's final model, the last stage of the chain with a finished checkpoint.

        With `cfg`, a stage that is disabled there is passed over, whatever checkpoints it left.
        """
        if stage is not None:
            if stage not in MODEL_STAGES:
                raise MyLLMError(f"--stage {stage!r} is not a stage; pick one of {', '.join(MODEL_STAGES)}")
            path = self.stage_checkpoint(stage, finished=not unfinished)
            if path is None and stage == "pretrain":
                raise MyLLMError(f"no {'' if unfinished else 'finished '}pretrain checkpoint in {self}; "
                                 f"run `myllm run --out {self}` (or `myllm pretrain --run {self}`) first")
            if path is None:
                raise MyLLMError(f"{self} has no {'' if unfinished else 'finished '}{stage} checkpoint; train it "
                                 f"(`myllm {stage} --run {self}`) or pick another --stage")
            return path
        chain = MODEL_STAGES[: MODEL_STAGES.index(before)] if before else MODEL_STAGES
        for name in reversed(chain):
            if cfg is not None and name != "pretrain" and not getattr(cfg, name).enabled:
                continue
            if (path := self.stage_checkpoint(name)) is not None:
                return path
        if before:
            raise MyLLMError(f"{before} needs a pretrained model: no finished checkpoint in "
                             f"{self.checkpoints('pretrain').parent}; "
                             f"run `myllm run --out {self}` (or `myllm pretrain`) first")
        raise MyLLMError(f"{self} has no trained model; run `myllm run --out {self}` first")


# -- the stage table ---------------------------------------------------------------------------

# [train] keys that change how fast or in how much memory pretraining runs, or where its numbers are also
# logged, not what it learns.
TRAIN_SPEED = ("device", "precision", "compile", "threads", "dist", "dist_timeout", "activation_checkpointing",
               "loss_chunk", "loggers")
# [train] keys a checkpoint may be resumed across: more steps, another budget, other evaluation,
# checkpoint and spike-guard settings (they change what is written, not what was trained so far).
TRAIN_RESUMABLE = ("max_steps", "time_budget", "eval_every", "eval_tokens", "ckpt_every", "keep_last",
                   "max_bad_steps", "spike_factor")


def _without(section: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in keys}


def _train_recipe(d: dict[str, Any], resume: bool) -> dict[str, Any]:
    train = _without(d["train"], TRAIN_SPEED + (TRAIN_RESUMABLE if resume else ()))
    if d["train"]["global_batch"]:  # the recipe is the global batch: micro-batch and accumulation may change
        del train["batch_size"], train["grad_accum"]
    return train


@dataclass(frozen=True)
class Stage:
    """One stage of `myllm run`. `after` is the stage whose output it reads (its fingerprint
    chains that one's); `decides(d, resume)` the config values (of `RunConfig.to_dict()`) that
    change its output; `output(run)` the file that shows it finished."""

    name: str
    after: str | None
    decides: Callable[[dict[str, Any], bool], Any]
    output: Callable[[RunDir], Path]
    trains: bool = False  # writes checkpoints/<name>/


def _corpus_keys(d: dict[str, Any], resume: bool) -> Any:
    from myllm.config import DataConfig
    from myllm.data.prepare import corpus_settings  # the [data] keys that change the corpus, defined once

    return [corpus_settings(DataConfig(**d["data"])), d["clean"], d["quality"], d["dedup"]]


def _post(name: str, after: str) -> Stage:
    # The stage's evaluation samples with sample.seed: part of its output, not of what it trains.
    return Stage(name, after, lambda d, resume: [d[name], d["model"]] + ([] if resume else [d["sample"]["seed"]]),
                 lambda r: r.stage_eval(name), True)


STAGES: tuple[Stage, ...] = (
    Stage("corpus", None, _corpus_keys, lambda r: r.manifest_file),
    Stage("tokenizer", "corpus", lambda d, resume: [d["model"]["vocab_size"], d["data"]["tokenizer_train_mb"]],
          lambda r: r.tokenizer_file),
    Stage("shards", "tokenizer", lambda d, resume: d["data"]["shard_tokens"], lambda r: r.index_file()),
    Stage("pretrain", "shards", lambda d, resume: [d["model"], _train_recipe(d, resume)],
          lambda r: r.checkpoints("pretrain"), True),
    Stage("evaluate", "pretrain", lambda d, resume: d["sample"], lambda r: r.summary_file),
    _post("sft", "pretrain"),
    _post("dpo", "sft"),
    _post("grpo", "dpo"),
    # The final model is the last stage's with a finished checkpoint; fp["grpo"] chains every stage before it.
    Stage("export", "grpo", lambda d, resume: [d["sample"], "hf-export-1"], lambda r: r.export_hf / "config.json"),
)
STAGE = {s.name: s for s in STAGES}
MODEL_STAGES = tuple(s.name for s in STAGES if s.trains)  # the chain: pretrain, then post-training in order
POST_STAGES = MODEL_STAGES[1:]


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else f"missing {path}"


def outside_inputs(run: RunDir, cfg: RunConfig, stage: str) -> Any:
    """What a stage reads from outside the run directory: the source folder, phase shards, post data."""
    if stage == "corpus":  # a source folder gone since is a change (`myllm run` checks it exists first)
        return source_signature(cfg.data.source, cfg.data.follow_symlinks, (run.root,)) \
            if cfg.data.source == "universe" or Path(cfg.data.source).is_dir() \
            else f"missing {cfg.data.source}"
    if stage == "pretrain":  # phase folders other than the run's own shards (which the chain covers)
        return [_file_digest(run.index_file(f)) for f, _ in parse_phases(cfg.train.phases) if f != "shards"]
    if stage in POST_STAGES and getattr(cfg, stage).data != "universe":
        return _file_digest(Path(getattr(cfg, stage).data))
    return None


def fingerprints(run: RunDir | str | os.PathLike, cfg: RunConfig) -> dict[str, str]:
    """Every stage's fingerprint, as `stages.json` keeps it: a hash of the fingerprint of the stage
    it reads, of the config values that change its output, and of what it reads from outside the
    run. Compute it once per command: it lists the source folder and hashes post-training data."""
    run, d = RunDir.of(run), cfg.to_dict()
    fp: dict[str, str] = {}
    for stage in STAGES:
        fp[stage.name] = _hash(fp[stage.after] if stage.after else "", stage.decides(d, False),
                               outside_inputs(run, cfg, stage.name))
    return fp


def resume_fingerprint(run: RunDir | str | os.PathLike, cfg: RunConfig, stage: str, start: Path | None = None,
                       data: Path | None = None) -> str:
    """What a training stage's checkpoints must share with the config to be resumed (it is in
    their state.json): the stage's own config values without the keys a run may be resumed across,
    and the content it trains on instead of the chain of configs before it, so that re-made but
    identical inputs (a touched source folder, another evaluation seed) keep checkpoints resumable.

    Pretraining: the shard index (and the phases'). Post-training: `start`, the checkpoint it
    starts from (its place in the run and its own fingerprint), and `data`, the file it reads."""
    run, d = RunDir.of(run), cfg.to_dict()
    if stage == "pretrain":
        inputs = [_file_digest(run.index_file(f)) for f in ["shards", *(f for f, _ in parse_phases(cfg.train.phases))]]
    else:
        assert start is not None and data is not None, "post-training resumes from a start checkpoint and data file"
        place = start.relative_to(run.root).as_posix() if start.is_relative_to(run.root) else str(start)
        inputs = [place, read_state(start).get("fingerprint"), _file_digest(data)]
    return _hash(stage, STAGE[stage].decides(d, True), inputs)


def source_signature(source: str, follow_symlinks: bool = False, exclude: tuple[Path, ...] = ()) -> str:
    """Names, sizes and mtimes of every file under a data folder that prepare reads: cheap change
    detection (the walk of `myllm.data.sources`: links, odd files and `exclude`, the run directory
    when it lies inside the data folder, are treated as prepare treats them)."""
    from myllm.data.sources import source_signature as folder_signature  # here: data loads its readers' libraries

    if source == "universe":
        return "universe"
    root = Path(source)
    if not root.is_dir():
        raise MyLLMError(f"data folder {root} does not exist or is not a folder; pass --data a folder of documents")
    return folder_signature(root, follow_symlinks=follow_symlinks, exclude=exclude)
