"""Knowledge probes: does the model complete "Mira Fenwick lives in" with " Oakridge"?

A probe counts as correct when greedy decoding from the prompt produces the answer's tokens.
Greedy decoding emits the answer exactly when, at every answer position, the answer token is
the argmax given the prompt and the answer tokens before it; so one teacher-forced forward
pass per probe decides it, and all probes run as a few padded batches instead of hundreds of
token-by-token generations. (The check is on the tokenizer's own spelling of the answer, the
one the model was trained on.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from myllm.model import Transformer
from myllm.tokenizer import Tokenizer


@torch.no_grad()
def probe_accuracy(
    model: Transformer, tokenizer: Tokenizer, probes: Sequence, batch_size: int = 64
) -> dict[str, object]:
    """Greedy accuracy over `probes` (objects with .prompt, .answer, .attribute), overall and per attribute."""
    device = model.embed_tokens.weight.device
    model.eval()
    rows = []
    for p in probes:
        prompt = [tokenizer.bos_id] + tokenizer.encode(p.prompt)
        full = [tokenizer.bos_id] + tokenizer.encode(p.prompt + p.answer)
        if full[: len(prompt)] != prompt:  # answer merged into the prompt's last token: use the joint spelling
            prompt = full[: len(prompt) - 1]
        # Too long for the context: keep the last tokens, as lm-eval does (the answer is at the end).
        ids = full[-model.cfg.context :]
        rows.append((ids, min(len(full) - len(prompt), len(ids) - 1)))
    correct = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (ids, _) in enumerate(chunk):
            x[r, : len(ids)] = torch.tensor(ids)
        pred = model(x.to(device)).argmax(-1).cpu()  # right padding cannot affect earlier positions
        for r, (ids, n_answer) in enumerate(chunk):
            n = len(ids)
            # position t predicts token t+1: the answer tokens are ids[n-n_answer:], predicted at t = n-n_answer-1 ..
            guess = pred[r, n - n_answer - 1 : n - 1].tolist()
            correct.append(guess == ids[n - n_answer :])
    by_attr: dict[str, list[bool]] = defaultdict(list)
    for p, ok in zip(probes, correct):
        by_attr[p.attribute].append(ok)
    return {
        "accuracy": sum(correct) / max(len(correct), 1),
        "n": len(correct),
        "by_attribute": {a: sum(v) / len(v) for a, v in sorted(by_attr.items())},
    }
