"""Training and evaluation batches from token shards.

A split's token stream is cut into non-overlapping windows of `seq_len + 1` tokens (stride
`seq_len`, so every token but the first is a target exactly once per epoch). Training visits
the windows in a fresh seeded permutation each epoch: no window repeats before every window
was seen, which is what "the default run sees every training book at least once" rests on.
The loader's whole state is two integers (epoch, position), saved in every checkpoint, so a
resumed run continues with exactly the batch it would have drawn next.

With several ranks, rank r takes every world_size-th window of the epoch's order (the
remainder is dropped so that all ranks run the same number of steps).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from myllm.data.shards import ShardReader
from myllm.errors import MyLLMError


class TrainBatches:
    def __init__(
        self,
        reader: ShardReader,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
    ):
        self.reader, self.batch_size, self.seq_len = reader, batch_size, seq_len
        self.pin_memory = pin_memory  # for CUDA: page-locked, so the copy to the GPU is truly non-blocking
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.n_windows = (len(reader) - 1) // seq_len
        self.per_rank = self.n_windows // world_size
        if self.per_rank < 1:
            raise MyLLMError(
                f"the training split has {len(reader)} tokens, fewer than one sequence of {seq_len + 1} "
                f"per rank; add data or lower train.seq_len"
            )
        self.epoch, self.pos = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return perm[self.rank :: self.world_size][: self.per_rank]

    @property
    def tokens_per_epoch(self) -> int:
        return self.n_windows * self.seq_len

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for _ in range(self.batch_size):
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            start = int(self._order[self.pos]) * self.seq_len
            rows.append(self.reader.slice(start, start + self.seq_len + 1).astype(np.int64))
            self.pos += 1
        tokens = torch.from_numpy(np.stack(rows))
        if self.pin_memory:
            tokens = tokens.pin_memory()
        return tokens[:, :-1], tokens[:, 1:]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "seq_len": self.seq_len,
                "batch_size": self.batch_size, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue where the checkpoint stopped, also on another world size.

        Rank r's i-th window is window i x world_size + r of the epoch's order, so `pos` x
        world_size windows of the epoch are spent whatever the world size; on a new world size
        each rank starts at the first unspent window (rounded up: none is seen twice). The data
        order is then the same, but the batches' grouping differs: not bit-exact.
        """
        for key in ("seed", "seq_len"):
            if state[key] != getattr(self, key):
                raise MyLLMError(
                    f"checkpoint data position was saved with {key}={state[key]}, now {getattr(self, key)}; "
                    "resume with the same config or start a new run"
                )
        self.epoch, self.pos = state["epoch"], state["pos"]
        if state["world_size"] != self.world_size:
            spent = state["pos"] * state["world_size"]
            self.pos = -(-spent // self.world_size)
        self._order = self._epoch_order(self.epoch)


class PhasedBatches:
    """Data phases consumed in order: (reader, token budget) each; the next starts when one's budget is spent.

    Budgets count the tokens trained on by all ranks together (`world_size` x this rank's). A
    phase whose split is smaller than its budget wraps around (more epochs). The state is the
    phase, its tokens spent, and that phase's loader position.
    """

    def __init__(self, phases: list[tuple[ShardReader, int]], batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        if not phases:
            raise MyLLMError("train.phases names no phase; give SHARDS_DIR:TOKENS,... or leave it empty")
        self.budgets = [budget for _, budget in phases]
        self.loaders = [TrainBatches(reader, batch_size, seq_len, seed + i, rank, world_size, pin_memory)
                        for i, (reader, _) in enumerate(phases)]
        self.world_size, self.phase, self.spent = world_size, 0, 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spent >= self.budgets[self.phase] and self.phase < len(self.loaders) - 1:
            self.phase, self.spent = self.phase + 1, 0
        x, y = self.loaders[self.phase].next_batch()
        self.spent += x.numel() * self.world_size
        return x, y

    def state_dict(self) -> dict:
        return {"phase": self.phase, "spent": self.spent, "inner": self.loaders[self.phase].state_dict(),
                "seed": self.loaders[0].seed, "seq_len": self.loaders[0].seq_len, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if "phase" not in state:
            raise MyLLMError("the checkpoint was trained without data phases; resume with train.phases = \"\"")
        self.phase = state["phase"]
        self.spent = state["spent"]  # tokens over all ranks: the same on any world size
        self.loaders[self.phase].load_state_dict(state["inner"])


def eval_batches(
    reader: ShardReader, batch_size: int, seq_len: int, max_tokens: int | None = None, stride: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every target token of the split exactly once, in order.

    Windows of `seq_len` start every `stride` tokens (default: `seq_len`, no overlap). With
    overlap, a window scores only its last `stride` targets (the first window scores all), so
    every target but those of the first window is predicted with at least `seq_len - stride`
    tokens of context, as in a model's real use, instead of the first targets of each window
    being predicted from almost nothing. Unscored and padding positions carry target -100,
    which the loss ignores. `max_tokens` evaluates only a prefix of the split.
    """
    stride = stride or seq_len
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride {stride} must be in 1..seq_len ({seq_len})")
    n = len(reader) if max_tokens is None else min(len(reader), max_tokens + 1)
    starts = []
    if n >= 2:
        s = 0
        while True:
            starts.append(s)
            if s + seq_len >= n - 1:
                break
            s += stride
    for i in range(0, len(starts), batch_size):
        xs, ys = [], []
        for s in starts[i : i + batch_size]:
            chunk = reader.slice(s, min(s + seq_len + 1, n)).astype(np.int64)
            x = np.zeros(seq_len, dtype=np.int64)
            y = np.full(seq_len, -100, dtype=np.int64)
            x[: len(chunk) - 1], y[: len(chunk) - 1] = chunk[:-1], chunk[1:]
            if s > 0:
                y[: seq_len - stride] = -100  # scored by the previous window
            xs.append(x)
            ys.append(y)
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
