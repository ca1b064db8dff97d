"""The schema of a run's config: one dataclass per `config.toml` section; `validate` names the bad key and the fix."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

# The post-training sections live in post.py (re-exported here, so `myllm.config.schema` still has every section).
from myllm.config.post import (  # noqa: F401
    LORA_TARGETS,
    DPOConfig,
    GRPOConfig,
    PostTrainConfig,
    SFTConfig,
    parse_targets,
)
from myllm.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "bf16", "fp32")
LOGGERS = ("jsonl", "tensorboard")  # train.loggers (myllm.train.trackers); metrics.jsonl is always written


def valid_device_name(name: str) -> bool:
    """auto | cpu | cuda | cuda:N (checked against the machine by `myllm.device.resolve_device`)."""
    return isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", name) is not None

INF = float("inf")
# Far above any rate that trains (AdamW 1e-4..1e-2, Muon ~0.02); past float32's range the optimizer cannot even
# apply it ("value cannot be converted to type float without overflow").
MAX_LR = 10.0
# Upper bounds on the model shape, each far above any model trained so far (d_model ~25k, ~130 layers,
# contexts of a few million tokens): past them a shape only exhausts memory, or hangs building its layers.
MODEL_LIMITS = {"d_model": 1 << 20, "d_ff": 1 << 22, "n_layers": 10_000, "context": 1 << 26}
NON_NEGATIVE = ("seq_len", "warmup_steps", "time_budget", "weight_decay", "grad_clip")  # [train] keys: finite, >= 0


@dataclass
class ModelConfig:
    """Shape of the Transformer. Parameter count: see `myllm plan`."""

    preset: str = "small"
    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 768
    context: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "context"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} = {getattr(self, name)} must be positive")
            if getattr(self, name) > MODEL_LIMITS.get(name, INF):  # beyond these only memory (or patience) runs out
                raise ConfigError(f"model.{name} = {getattr(self, name)} is too large (at most "
                                  f"{MODEL_LIMITS[name]:,})")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.n_heads = {self.n_heads} does not divide model.d_model = {self.d_model}; "
                f"pick heads from {divisors(self.d_model)}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"model.n_kv_heads = {self.n_kv_heads} does not divide model.n_heads = {self.n_heads}; "
                f"pick kv-heads from {divisors(self.n_heads)}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head size d_model/n_heads = {self.head_dim} must be even for RoPE")
        if self.vocab_size > 1 << 22:  # 4M: 16x the largest vocabularies in use; more only exhausts memory
            raise ConfigError(f"model.vocab_size = {self.vocab_size} is too large (at most {1 << 22:,})")
        if not (0 < self.rope_theta < INF and 0 < self.norm_eps < INF and 0 <= self.init_std < INF):
            raise ConfigError(f"model.rope_theta = {self.rope_theta} and model.norm_eps = {self.norm_eps} must be "
                              f"finite and > 0, model.init_std = {self.init_std} finite and >= 0")


def divisors(n: int) -> list[int]:
    """The divisors of n, in order (found up to sqrt(n): an absurd d_model must not hang the error message)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0] if n > 0 else []
    return sorted({*small, *(n // d for d in small)})


@dataclass
class DataConfig:
    """Where documents come from and how they are split."""

    source: str = "universe"  # "universe" or a folder of documents
    universe_seed: int = 1234  # the world and its books
    val_fraction: float = 0.05  # folder corpora without train/val/test subfolders
    test_fraction: float = 0.05
    split_seed: int = 0
    shard_tokens: int = 1 << 24  # tokens per .bin shard
    text_field: str = "text"  # the text field of .jsonl/.json records, the text column of .parquet/.csv
    follow_symlinks: bool = False  # read links to files and folders outside the data folder (loops are never followed)
    workers: int = 0  # processes for cleaning and tokenization; 0 = one per CPU core
    memory_mb: int = 256  # cap on documents in flight (read ahead, in workers, in tokenizer batches)
    tokenizer_train_mb: int = 100  # the tokenizer trains on at most this much train text (evenly sampled)

    def validate(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ConfigError("data.val_fraction and data.test_fraction must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must leave room for train (< 1)")
        for name in ("workers", "memory_mb", "tokenizer_train_mb", "shard_tokens"):
            if getattr(self, name) < (0 if name == "workers" else 1):
                raise ConfigError(f"data.{name} = {getattr(self, name)} is out of range")
        if not self.text_field:
            raise ConfigError("data.text_field must name a field, e.g. \"text\"")


@dataclass
class CleanConfig:
    """Cleaning rules for folder corpora (the generated universe is already clean), each switchable."""

    fix_encoding: bool = True  # mojibake and broken encodings, with ftfy
    unicode_nfc: bool = True
    normalize_punctuation: bool = True  # curly quotes -> ASCII quotes, dash variants -> one form
    normalize_whitespace: bool = True  # odd spaces, zero-width characters, runs of spaces and blank lines
    strip_control: bool = True  # control characters other than newline and tab
    remove_page_numbers: bool = True  # lines that are only a page number ("3", "Page 3", "- 3 -", "3 of 10")
    remove_headers_footers: bool = True  # short lines repeated on many pages (running heads)
    header_min_repeats: int = 3  # a line must repeat this often in a document to count as a running head
    redact_email: bool = True  # PII -> <EMAIL>
    redact_phone: bool = True  # -> <PHONE>
    redact_ip: bool = True  # IPv4/IPv6 -> <IP_ADDRESS>
    redact_card: bool = True  # Luhn-valid card numbers -> <CREDIT_CARD>

    def validate(self) -> None:
        if self.header_min_repeats < 2:
            raise ConfigError(f"clean.header_min_repeats = {self.header_min_repeats} must be at least 2")


@dataclass
class QualityConfig:
    """Gopher/C4-style document filters (Rae et al. 2021, Raffel et al. 2020); a document failing any is dropped."""

    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # ('#' + ellipses) per word
    max_ellipsis_line_fraction: float = 0.3  # lines ending in "..." or "…"
    max_bullet_line_fraction: float = 0.9  # lines starting with a bullet
    max_duplicate_line_fraction: float = 0.3  # lines that repeat an earlier line
    max_top_2gram_fraction: float = 0.2  # characters in the most frequent word 2-gram
    max_duplicate_5gram_fraction: float = 0.15  # characters in word 5-grams that occur more than once
    min_alpha_word_fraction: float = 0.8  # words with at least one letter

    def validate(self) -> None:
        if self.min_words < 0 or self.max_words < self.min_words:
            raise ConfigError("quality.min_words must be >= 0 and <= quality.max_words")
        if not (0 < self.min_mean_word_length <= self.max_mean_word_length):
            raise ConfigError("quality.min_mean_word_length must be > 0 and <= quality.max_mean_word_length")
        for name in [f.name for f in dataclasses.fields(self) if f.name.endswith(("_fraction", "_ratio"))]:
            if not 0 <= getattr(self, name) <= (1 if name.endswith("fraction") else INF):
                raise ConfigError(f"quality.{name} = {getattr(self, name)} must be "
                                  + ("in [0, 1]" if name.endswith("fraction") else ">= 0"))


@dataclass
class DedupConfig:
    """Exact and near-duplicate removal across the whole corpus, and train/held-out decontamination."""

    exact: bool = True  # same text after cleaning
    near: bool = True  # MinHash LSH over word shingles
    threshold: float = 0.8  # Jaccard similarity of word-shingle sets at which two documents are duplicates
    shingle_words: int = 5
    num_perm: int = 128  # MinHash signature length
    bands: int = 32  # LSH bands (num_perm / bands rows each)
    decontaminate: bool = True  # drop train documents that near-duplicate a val/test document
    seed: int = 0

    def validate(self) -> None:
        if not (0 < self.threshold <= 1):
            raise ConfigError(f"dedup.threshold = {self.threshold} must be in (0, 1]")
        if self.shingle_words < 1:
            raise ConfigError(f"dedup.shingle_words = {self.shingle_words} must be at least 1")
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ConfigError(
                f"dedup.bands = {self.bands} must divide dedup.num_perm = {self.num_perm}; "
                f"pick bands from {divisors(self.num_perm)}"
            )


@dataclass
class TrainConfig:
    """Pretraining: optimizer, schedule, batch, checkpoints."""

    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 0  # 0 = the model context
    max_steps: int = 1000
    time_budget: float = 0.0  # seconds; > 0 stops there, with the LR schedule fitted to it
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_tokens: int = 65536  # tokens of val per periodic eval (the final eval uses all of it)
    ckpt_every: int = 500
    keep_last: int = 2
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32 (see myllm.device)
    compile: str = "auto"  # auto (on for CUDA, off for CPU) | true | false
    threads: int = 0  # CPU threads; 0 = torch's default
    # Scale (see myllm.train.distributed): how the step is spread over ranks, and its safety switches.
    dist: str = "ddp"  # with several ranks (torchrun): ddp (replicate) or fsdp (FSDP2, shard per block)
    global_batch: int = 0  # sequences per optimizer step over all ranks; 0 = batch_size x grad_accum x ranks
    activation_checkpointing: bool = False  # recompute each block in backward: activations ~L x smaller
    loss_chunk: int = 0  # tokens per cross-entropy chunk (logits never whole); 0 = auto (vocab >= 32768), -1 off
    max_bad_steps: int = 5  # NaN/inf loss: skip the step; stop after this many in a row
    spike_factor: float = 2.0  # a loss above this x its running mean is logged as a spike (0: off)
    dist_timeout: float = 600.0  # seconds a rank waits for the others before giving up
    phases: str = ""  # ordered data phases "SHARDS_DIR:TOKENS,..." (dirs relative to the run); "" = shards/
    loggers: str = "jsonl"  # comma-separated: jsonl (always on) and tensorboard (myllm.train.trackers)

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "ckpt_every", "keep_last"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} = {getattr(self, name)} must be positive")
        if not (0 < self.lr <= MAX_LR) or not (0 <= self.min_lr_ratio <= 1):  # NaN fails every comparison
            raise ConfigError(f"train.lr = {self.lr} must be > 0 and at most {MAX_LR:g}, train.min_lr_ratio in [0, 1]")
        if not all(0 <= getattr(self, k) < INF for k in NON_NEGATIVE):
            raise ConfigError(f"train.{', train.'.join(NON_NEGATIVE)} must be finite numbers >= 0")
        if not valid_device_name(self.device):
            raise ConfigError(f"train.device = {self.device!r}; choose {DEVICE_CHOICES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision = {self.precision!r}; choose {', '.join(PRECISIONS)}")
        self.compile = str(self.compile).lower()
        if self.compile not in ("auto", "true", "false"):
            raise ConfigError(f"train.compile = {self.compile!r}; choose auto, true or false")
        if self.dist not in ("ddp", "fsdp"):
            raise ConfigError(f"train.dist = {self.dist!r}; choose ddp or fsdp")
        if self.global_batch < 0 or self.loss_chunk < -1 or self.max_bad_steps < 1 or self.dist_timeout <= 0:
            raise ConfigError("train.global_batch must be >= 0, train.loss_chunk >= -1, train.max_bad_steps >= 1, "
                              "train.dist_timeout > 0")
        loggers = [x.strip() for x in str(self.loggers).split(",") if x.strip()]
        for name in loggers:
            if name == "wandb":
                raise ConfigError("train.loggers: wandb is not supported yet; use jsonl,tensorboard")
            if name not in LOGGERS:
                raise ConfigError(f"train.loggers names {name!r}; choose from {', '.join(LOGGERS)} (comma-separated)")
        if self.eval_tokens <= 0 or self.spike_factor < 0 or self.threads < 0:
            raise ConfigError("train.eval_tokens must be > 0, train.spike_factor >= 0 (0: off), train.threads >= 0")


@dataclass
class SampleConfig:
    """Generation used for the run's samples and as `myllm generate` defaults."""

    max_new_tokens: int = 60
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    seed: int = 0

    def validate(self) -> None:
        if self.max_new_tokens <= 0:
            raise ConfigError(f"sample.max_new_tokens = {self.max_new_tokens} must be at least 1")
        if self.temperature < 0:
            raise ConfigError(f"sample.temperature = {self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise ConfigError(f"sample.top_k = {self.top_k} must be >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"sample.top_p = {self.top_p} must be in (0, 1] (1 = off)")


@dataclass
class QuantConfig:
    """Weight-only quantization (`myllm quantize`): int8 with one scale per output channel, or int4
    with one scale per `group_size` consecutive input weights of a row (two values per byte)."""

    bits: int = 8
    group_size: int = 64  # on the default model 64 gave the same val bpb as 32 (+0.77% vs +0.79%), 6% smaller

    def validate(self) -> None:
        if self.bits not in (4, 8):
            raise ConfigError(f"quant.bits = {self.bits} is not supported; pick 8 or 4")
        if self.group_size < 2 or self.group_size % 2:
            raise ConfigError(f"quant.group_size = {self.group_size} must be an even number >= 2, e.g. 32 or 64")


def check_finite(section: Any, name: str) -> None:
    """Every float of a section is a finite number: NaN passes most range checks (every comparison is false)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}.{f.name} = {value} must be a finite number")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)

    def validate(self) -> RunConfig:
        for section in dataclasses.fields(self):
            check_finite(getattr(self, section.name), section.name)
            getattr(self, section.name).validate()
        for name in ("sft", "dpo", "grpo"):  # rank d_model is already a full-rank update of every target
            if getattr(self, name).lora_rank > self.model.d_model:
                raise ConfigError(f"{name}.lora_rank = {getattr(self, name).lora_rank} exceeds model.d_model = "
                                  f"{self.model.d_model}; pick a rank from 1 to {self.model.d_model} "
                                  "(0 = full fine-tuning)")
        if self.train.seq_len > self.model.context:
            raise ConfigError(
                f"train.seq_len = {self.train.seq_len} exceeds model.context = {self.model.context}; "
                "lower it or raise the context"
            )
        return self

    @property
    def seq_len(self) -> int:
        return self.train.seq_len or self.model.context

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
