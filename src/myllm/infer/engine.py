"""Generation with a KV cache: the prompt is run once (prefill), then one token per step.

Each step feeds only the newest token and attends to the cached keys/values of everything
before it, so a step costs one token's worth of compute instead of the whole sequence's.
`tests/test_engine.py` checks that this gives, token for token, what recomputing the full
sequence every step gives.

Sampling: penalties first (see `penalize`), then `temperature=0` is greedy; otherwise
logits / temperature, then optional top-k and top-p (nucleus) filtering, then a draw from a
seeded generator, so the same seed gives the same text.

A prompt too long for the context is cut from the left, as lm-eval does: every path here
(`stream`, `generate_many`, `beam_search`) keeps its last `context - max_new_tokens` tokens
(`fit_prompt`), so the reply always has its full budget and no position passes the context
(the RoPE table and the KV cache end there). The server refuses such a prompt instead (HTTP
400, as the OpenAI API does); `myllm chat` drops the oldest turns first.

`Decoder` holds one sequence's KV cache and its one-token step, eager or compiled (`stream`
allocates an eager one when none is given). Also here: `beam_search`. Many prompts of
different lengths decoding together, one sequence joining as another leaves, is
`myllm.infer.batch.BatchEngine` (what the server runs); stop strings, which need the tokenizer,
are `myllm.infer.text`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from myllm.errors import MyLLMError
from myllm.infer.quant import is_quantized
from myllm.model import KVCache, Transformer


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    stop_ids: tuple[int, ...] = field(default_factory=tuple)
    seed: int | None = None
    repetition_penalty: float = 1.0  # 1.0 = off; > 1 discourages every token already in prompt or output
    frequency_penalty: float = 0.0  # subtracted once per earlier occurrence in the output (OpenAI)
    presence_penalty: float = 0.0  # subtracted once if the token occurs in the output at all (OpenAI)
    stop: tuple[str, ...] = field(default_factory=tuple)  # stop strings (text-level: myllm.infer.text)

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


def penalize(logits: torch.Tensor, seen: torch.Tensor, counts: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Penalties as vLLM and the OpenAI API define them, for logits (B, V).

    `seen` (B, V) bool marks tokens in the prompt or the output so far: with repetition penalty
    p (CTRL / Hugging Face), their positive logits are divided by p and negative ones multiplied
    by p, so both move down. `counts` (B, V) counts each token in the output so far: the
    frequency penalty subtracts `frequency_penalty * count`, the presence penalty subtracts
    `presence_penalty` once for any count > 0. Negative values encourage repetition instead.
    """
    logits = logits.float()
    if params.repetition_penalty != 1.0:
        p = params.repetition_penalty
        logits = torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)
    if params.frequency_penalty or params.presence_penalty:
        counts = counts.to(logits.dtype)
        logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) every token outside the top-k and outside the top-p probability mass."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


# A temperature or top_p below this is greedy decoding (as vLLM's _SAMPLING_EPS): dividing by 5e-324
# overflows float32 to inf, and softmax of inf is NaN, which no draw can take.
SAMPLING_EPS = 1e-5


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row of `logits` (B, V)."""
    if params.temperature < SAMPLING_EPS or params.top_p < SAMPLING_EPS:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    if torch.isnan(logits).any():  # no draw can take NaN: the model itself is broken, say so in one line
        raise MyLLMError("the model's outputs are NaN, so no token can be sampled: its weights are no longer finite "
                         "(training diverged: lower the learning rate, weight decay or LoRA alpha, and re-run)")
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def fit_prompt(prompt: list[int], context: int, max_new_tokens: int) -> list[int]:
    """`prompt`, or its last `context - max_new_tokens` tokens if it leaves less room than that.

    At least one prompt token is kept (a budget of the whole context leaves it one token); a
    prompt that fits is returned as is.
    """
    room = context - min(max(max_new_tokens, 0), context - 1)
    return prompt[-room:] if len(prompt) > room else prompt


# Inductor options for a compiled decode step: `freezing` folds the (fixed) weights into the
# graph and pre-packs them for the CPU GEMM kernels, `max_autotune` picks generated GEMMs for
# these small matrices, `cpp_wrapper` calls the kernels from C++ rather than Python. Together
# they cut the per-token overhead that dominates a small model's decode (bench/inference.py).
COMPILE_OPTIONS = {"freezing": True, "max_autotune": True, "cpp_wrapper": True,
                   "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}


class Decoder:
    """One sequence decoding through its own KV cache: prefill the prompt, then one token a step.

    Eager (the default) each step attends over exactly the positions so far. With
    `compile=True` the one-token step is compiled once (torch.compile, `COMPILE_OPTIONS`) for a
    cache of fixed length `max_len`, every step attending over all of it under a mask, so the
    shapes never change and it never recompiles; the first call pays the compile (tens of
    seconds on a CPU), and a compiled decoder is reused across prompts (`myllm chat --compile`).
    Compiling freezes the weights (a model still being trained must use eager decoding), except
    for a quantized model: freezing would fold its dequantized fp32 weights into the graph as
    constants and so give back the memory the integers save. Each compiled decoder is one more
    compiled graph of the same step: past dynamo's recompile limit (8 by default) a further
    decoder in the same process warns and decodes eagerly, so build one per model and reuse it.
    """

    def __init__(self, model: Transformer, max_len: int = 0, compile: bool = False):
        self.model = model
        self.max_len = min(max_len or model.cfg.context, model.cfg.context)
        weight = model.embed_tokens.weight
        self.cache = KVCache.allocate(model.cfg, 1, self.max_len, weight.device, weight.dtype)
        self.compiled = self._compiling = compile
        if compile:
            cache, kv_len = self.cache, self.max_len
            self._options = dict(COMPILE_OPTIONS, freezing=not is_quantized(model))

            def fixed_step(token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
                return model(token, cache=cache, positions=position, kv_len=kv_len)[:, -1]

            self._fixed_step = torch.compile(fixed_step, dynamic=False, fullgraph=True)

    @torch.no_grad()
    def prefill(self, prompt: list[int]) -> torch.Tensor:
        """Run the prompt into the cache (from position 0); the logits (1, V) after its last token."""
        tokens = torch.tensor([prompt], device=self.cache.k.device)
        return self.model(tokens, cache=self.cache, start=0)[:, -1]

    @torch.no_grad()
    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Feed `token` (1, 1) at position `pos`; the logits (1, V) for position pos + 1."""
        if not 0 <= pos < self.max_len:
            raise ValueError(f"position {pos} is outside this decoder's cache of {self.max_len}")
        if self.compiled:
            position = torch.tensor([pos], device=token.device)
            if not self._compiling:
                return self._fixed_step(token, position)
            self._compiling = False  # the first call compiles; some options are read only then, not via options=
            from torch._inductor import config as inductor_config

            try:
                with inductor_config.patch(self._options):
                    return self._fixed_step(token, position)
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                warnings.warn("this process has compiled as many decode steps as torch._dynamo.config."
                              "recompile_limit allows; this decoder runs eagerly (reuse one Decoder per model)",
                              stacklevel=3)
                self.compiled = False
        return self.model(token, cache=self.cache, start=pos)[:, -1]


@torch.no_grad()
def stream(model: Transformer, prompt: list[int], params: SamplingParams,
           decoder: Decoder | None = None) -> Iterator[int]:
    """Yield generated token ids one at a time; stops at a stop id (not yielded) or the limit.

    `decoder` (for `model`) reuses its cache and, if compiled, its compiled step; without one a
    cache just long enough for this prompt and budget is allocated.
    """
    if not prompt:
        raise ValueError("the prompt must contain at least one token (e.g. the BOS token)")
    device = model.embed_tokens.weight.device
    context = decoder.max_len if decoder is not None else model.cfg.context
    prompt = fit_prompt(prompt, context, params.max_new_tokens)
    budget = min(params.max_new_tokens, context - len(prompt))
    if budget <= 0:
        return
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    if decoder is None:
        decoder = Decoder(model, len(prompt) + budget)
    elif decoder.model is not model:
        raise ValueError("the decoder was built for a different model")
    logits = decoder.prefill(prompt)
    if params.penalized:  # token bookkeeping only when a penalty needs it
        seen = torch.zeros(1, logits.shape[-1], dtype=torch.bool, device=device)
        seen[0, torch.tensor(prompt, device=device)] = True
        counts = torch.zeros(1, logits.shape[-1], dtype=torch.long, device=device)
    end = len(prompt) + budget
    for pos in range(len(prompt), end):
        token = next_token(penalize(logits, seen, counts, params) if params.penalized else logits, params, generator)
        tok = int(token.item())
        if tok in params.stop_ids:
            return
        if params.penalized:
            seen[0, tok] = True
            counts[0, tok] += 1
        yield tok
        if pos + 1 < end:  # no forward pass after the last token
            logits = decoder.step(token.view(1, 1), pos)


def generate(model: Transformer, prompt: list[int], params: SamplingParams,
             decoder: Decoder | None = None) -> list[int]:
    return list(stream(model, prompt, params, decoder))


@torch.no_grad()
def generate_uncached(model: Transformer, prompt: list[int], params: SamplingParams) -> list[int]:
    """Reference implementation: rerun the whole sequence every step (slow; for tests)."""
    device = model.embed_tokens.weight.device
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    seq, out = fit_prompt(list(prompt), model.cfg.context, params.max_new_tokens), []
    for _ in range(min(params.max_new_tokens, model.cfg.context - len(seq))):
        logits = model(torch.tensor([seq], device=device))[:, -1]
        tok = int(next_token(logits, params, generator).item())
        if tok in params.stop_ids:
            break
        out.append(tok)
        seq.append(tok)
    return out


@torch.no_grad()
def generate_many(model: Transformer, prompts: list[list[int]], params: SamplingParams,
                  batch_size: int = 64, generator: torch.Generator | None = None) -> list[list[int]]:
    """Completions of many prompts, in input order. Each ends with the stop id that ended it (kept,
    so a trainer can teach stopping) or at `max_new_tokens`; GRPO samples its groups with this.

    Prompts of the same length are decoded together as one batch (no padding, so every row
    computes exactly what it would alone); sampling is seeded once for the whole call. A prompt
    too long for the context keeps its last tokens (`fit_prompt`).
    """
    device = model.embed_tokens.weight.device
    if not all(prompts):
        raise ValueError("every prompt must contain at least one token (e.g. the BOS token)")
    prompts = [fit_prompt(p, model.cfg.context, params.max_new_tokens) for p in prompts]
    if generator is None and params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for _, members in sorted(by_length.items()):
        for k in range(0, len(members), batch_size):
            chunk = members[k : k + batch_size]
            for i, completion in zip(chunk, _generate_rows(model, [prompts[i] for i in chunk], params, generator)):
                out[i] = completion
    return out


def _generate_rows(model: Transformer, prompts: list[list[int]], params: SamplingParams,
                   generator: torch.Generator | None) -> list[list[int]]:
    """Decode a batch of prompts that all have the same length."""
    device = model.embed_tokens.weight.device
    n, length = len(prompts), len(prompts[0])
    budget = min(params.max_new_tokens, model.cfg.context - length)
    if not length or budget <= 0:
        raise ValueError(f"a prompt of {length} tokens leaves no room to generate in context {model.cfg.context}")
    if generator is None and params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    cache = KVCache.allocate(model.cfg, n, length + budget, device, model.embed_tokens.weight.dtype)
    logits = model(torch.tensor(prompts, device=device), cache=cache, start=0)[:, -1]
    out: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    stops = set(params.stop_ids)
    for pos in range(length, length + budget):
        tokens = next_token(logits, params, generator)
        for i, t in enumerate(tokens.tolist()):
            if not done[i]:
                out[i].append(t)
                done[i] = t in stops
        if all(done) or pos + 1 >= cache.max_len:
            break
        logits = model(tokens.view(n, 1), cache=cache, start=pos)[:, -1]
    return out


@torch.no_grad()
def beam_search(model: Transformer, prompt: list[int], width: int, max_new_tokens: int,
                stop_ids: tuple[int, ...] = (), length_penalty: float = 1.0) -> list[tuple[list[int], float]]:
    """The `width` best continuations by total log-probability, best first, as (tokens, score).

    Every beam has the same length, so they decode as one batch at one position; after each
    step the cache rows are reordered to follow their beams. A beam that picks a stop id is
    finished (the stop id is not part of its tokens); the search ends when `width` beams have
    finished or the budget is spent. Scores are sum(log p) / length ** length_penalty (as in
    Hugging Face), so 0 compares raw sums and 1 compares per-token means. Width 1 is greedy.
    """
    if width < 1 or not prompt:
        raise ValueError("beam search needs width >= 1 and a non-empty prompt")
    device = model.embed_tokens.weight.device
    prompt = fit_prompt(prompt, model.cfg.context, max_new_tokens)
    budget = min(max_new_tokens, model.cfg.context - len(prompt))
    if budget <= 0:
        return [([], 0.0)]
    cache = KVCache.allocate(model.cfg, width, len(prompt) + budget, device, model.embed_tokens.weight.dtype)
    one = KVCache(cache.k[:, :1], cache.v[:, :1])
    logits = model(torch.tensor([prompt], device=device), cache=one, start=0)[:, -1].expand(width, -1)
    cache.k[:, 1:], cache.v[:, 1:] = cache.k[:, :1], cache.v[:, :1]  # every beam starts from the prompt
    scores = torch.full((width,), float("-inf"), device=device)
    scores[0] = 0.0  # until the first step, the beams are copies: expand only one of them
    beams: list[list[int]] = [[] for _ in range(width)]
    finished: list[tuple[list[int], float]] = []

    def norm(tokens: list[int], score: float) -> float:
        return score / max(len(tokens), 1) ** length_penalty

    for step in range(budget):
        total = (scores[:, None] + torch.log_softmax(logits.float(), dim=-1)).view(-1)
        top = torch.topk(total, 2 * width)
        keep_rows, keep_tokens, keep_scores = [], [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, tok = divmod(flat, logits.shape[-1])
            if score == float("-inf"):
                break
            if tok in stop_ids:
                finished.append((beams[row], score))
            else:
                keep_rows.append(row), keep_tokens.append(tok), keep_scores.append(score)
            if len(keep_rows) == width:
                break
        if len(finished) >= width or not keep_rows:
            break  # enough finished beams (live ones are not added: they were outscored at this step)
        if step == budget - 1:
            finished += [(beams[r] + [t], s) for r, t, s in zip(keep_rows, keep_tokens, keep_scores)]
            break
        while len(keep_rows) < width:  # fewer live candidates than beams: pad with dead copies
            keep_rows.append(keep_rows[0]), keep_tokens.append(keep_tokens[0]), keep_scores.append(float("-inf"))
        index = torch.tensor(keep_rows, device=device)
        cache.k, cache.v = cache.k.index_select(1, index), cache.v.index_select(1, index)
        beams = [beams[r] + [t] for r, t in zip(keep_rows, keep_tokens)]
        scores = torch.tensor(keep_scores, device=device)
        pos = len(prompt) + step
        logits = model(torch.tensor(keep_tokens, device=device).view(width, 1), cache=cache, start=pos)[:, -1]
    ranked = sorted(((t, norm(t, s)) for t, s in finished if s != float("-inf")), key=lambda x: -x[1])
    return ranked[:width]
