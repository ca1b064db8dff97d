"""Continuous batching: many sequences of different lengths decode together, one step at a time.

The engine owns one preallocated KV cache of `max_batch` slots x `max_len` positions (its
size is exactly what `myllm plan` predicts per sequence, times `max_batch`). Each `step`:

1. drops cancelled sequences (a client that went away) and frees their slots;
2. admits waiting sequences into free slots: each prompt is prefilled alone into its own slot
   (so no compute is spent on padding), and its first token is sampled;
3. decodes one token for every active sequence in one forward pass, each row at its own
   position (`Transformer.forward(positions=...)`), masking each row's unused cache slots.

Active sequences always sit in slots 0..n-1: when one finishes, the last one's cache rows are
moved into its slot, so a step computes exactly n rows. A sequence finishes at a stop id (not
emitted, as in `engine.stream`), at its `max_new_tokens`, or when cancelled. Every sequence
samples with its own parameters and its own seeded generator, so its text does not depend on
what else is in the batch.

`BatchEngine.start()` runs steps on a background thread (the server's one model owner);
`generate_batch` runs them inline, for callers that have all their prompts at once.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from myllm.infer.engine import SamplingParams, next_token, penalize
from myllm.model import KVCache, Transformer

# on_token(seq, token): token is an id to emit, or None once the sequence has finished.
OnToken = Callable[["Sequence", "int | None"], None]


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    params: SamplingParams
    on_token: OnToken | None = None
    id: int = 0
    out: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None
    slot: int = -1
    length: int = 0  # tokens in this sequence's cache slot
    cancelled: bool = False
    generator: torch.Generator | None = None
    seen: torch.Tensor | None = None  # penalties only: tokens in prompt or output
    counts: torch.Tensor | None = None  # penalties only: output token counts

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class BatchEngine:
    def __init__(self, model: Transformer, max_batch: int = 32, max_len: int | None = None):
        self.model, self.max_batch = model, max_batch
        self.max_len = min(max_len or model.cfg.context, model.cfg.context)
        self.device = model.embed_tokens.weight.device
        self.cache = KVCache.allocate(model.cfg, max_batch, self.max_len, self.device, model.embed_tokens.weight.dtype)
        self.active: list[Sequence] = []  # active[i] occupies cache slot i
        self.waiting: deque[Sequence] = deque()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = {"finished": 0, "cancelled": 0, "tokens": 0, "steps": 0, "max_active": 0}

    # --- submitting -----------------------------------------------------------------------
    def submit(self, prompt: list[int], params: SamplingParams, on_token: OnToken | None = None) -> Sequence:
        """Queue a sequence; its tokens arrive through `on_token` (from the engine thread)."""
        if not prompt or len(prompt) >= self.max_len:
            raise ValueError(f"a prompt needs 1 to {self.max_len - 1} tokens, got {len(prompt)}")
        seq = Sequence(list(prompt), params, on_token, id=next(self._ids))
        if params.seed is not None:
            seq.generator = torch.Generator(device=self.device).manual_seed(params.seed)
        with self._cond:
            self.waiting.append(seq)
            self._cond.notify()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Stop a sequence (thread-safe); its slot is freed at the start of the next step."""
        seq.cancelled = True
        with self._cond:
            self._cond.notify()

    # --- stepping -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        for seq in [s for s in self.active if s.cancelled]:
            self._finish(seq, "cancelled")
        with self._cond:
            for seq in [s for s in self.waiting if s.cancelled]:  # gone before they got a slot
                self.waiting.remove(seq)
                self._finish(seq, "cancelled")
            admitted = []
            while self.waiting and len(self.active) + len(admitted) < self.max_batch:
                admitted.append(self.waiting.popleft())
        for seq in admitted:
            self._prefill(seq)
        n = len(self.active)
        if n == 0:
            return
        batch = list(self.active)
        tokens = torch.tensor([[s.out[-1]] for s in batch], device=self.device)
        positions = torch.tensor([s.length for s in batch], device=self.device)
        logits = self.model(tokens, cache=KVCache(self.cache.k[:, :n], self.cache.v[:, :n]), positions=positions)
        self.stats["steps"] += 1
        for seq in batch:  # every row's new key/value is cached before any slot moves
            seq.length += 1
        for seq, row in zip(batch, logits[:, -1]):
            self._sample(seq, row)

    def _prefill(self, seq: Sequence) -> None:
        seq.slot = len(self.active)
        self.active.append(seq)
        self.stats["max_active"] = max(self.stats["max_active"], len(self.active))
        one = KVCache(self.cache.k[:, seq.slot : seq.slot + 1], self.cache.v[:, seq.slot : seq.slot + 1])
        logits = self.model(torch.tensor([seq.prompt], device=self.device), cache=one, start=0)[0, -1]
        seq.length = len(seq.prompt)
        if seq.params.penalized:
            vocab = logits.shape[-1]
            seq.seen = torch.zeros(1, vocab, dtype=torch.bool, device=self.device)
            seq.seen[0, torch.tensor(seq.prompt, device=self.device)] = True
            seq.counts = torch.zeros(1, vocab, dtype=torch.long, device=self.device)
        self._sample(seq, logits)

    def _sample(self, seq: Sequence, logits: torch.Tensor) -> None:
        if seq.cancelled:
            return self._finish(seq, "cancelled")
        logits = logits[None]
        if seq.params.penalized:
            logits = penalize(logits, seq.seen, seq.counts, seq.params)
        tok = int(next_token(logits, seq.params, seq.generator).item())
        if tok in seq.params.stop_ids:
            return self._finish(seq, "stop")
        seq.out.append(tok)
        self.stats["tokens"] += 1
        if seq.params.penalized:
            seq.seen[0, tok] = True
            seq.counts[0, tok] += 1
        if seq.on_token is not None:
            seq.on_token(seq, tok)
        budget = min(seq.params.max_new_tokens, self.max_len - len(seq.prompt))
        if len(seq.out) >= budget:
            self._finish(seq, "length")

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        if seq.done:
            return
        seq.finish_reason, seq.error = reason, error
        self.stats["cancelled" if reason == "cancelled" else "finished"] += 1
        if seq in self.active:
            slot, last = seq.slot, self.active[-1]
            if last is not seq:  # move the last sequence's cache rows into the freed slot
                n = last.length
                self.cache.k[:, slot, :, :n] = self.cache.k[:, last.slot, :, :n]
                self.cache.v[:, slot, :, :n] = self.cache.v[:, last.slot, :, :n]
                self.active[slot], last.slot = last, slot
            self.active.pop()
        seq.slot = -1
        if seq.on_token is not None:
            seq.on_token(seq, None)

    # --- the background worker ------------------------------------------------------------
    def start(self) -> BatchEngine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="myllm-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.active and not self.waiting:
                    self._cond.wait()
                if self._stopping:
                    break
            try:
                self.step()
            except Exception as e:  # a bug must not hang every client: fail what is in flight, keep serving
                for seq in list(self.active) + list(self.waiting):
                    self._finish(seq, "error", f"{type(e).__name__}: {e}")
                self.waiting.clear()
        for seq in list(self.active) + list(self.waiting):
            self._finish(seq, "cancelled")
        self.waiting.clear()

    def load(self) -> dict[str, int]:
        """Slots in use, queued sequences and counters (the server's /health)."""
        return {"active": len(self.active), "waiting": len(self.waiting), "slots": self.max_batch,
                "free_slots": self.max_batch - len(self.active), **self.stats}


def generate_batch(model: Transformer, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                   max_batch: int = 32) -> list[list[int]]:
    """Completions of prompts of any lengths, decoded together (in input order)."""
    plist = params if isinstance(params, list) else [params] * len(prompts)
    engine = BatchEngine(model, max_batch=min(max_batch, max(len(prompts), 1)))
    seqs = [engine.submit(p, q) for p, q in zip(prompts, plist)]
    while engine.active or engine.waiting:
        engine.step()
    return [s.out for s in seqs]
