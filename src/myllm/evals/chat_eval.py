"""How well a model answers: fact questions, arithmetic, and how often it answers in the rejected style.

On held-out prompts (`universe_tasks.eval_sets`: people and number patterns that no
post-training stage saw):

- `fact_qa_acc`: greedy reply contains the right value ("Oakridge").
- `arith_acc`: the last number of the greedy reply is the answer.
- `rejected_rate`: share of *sampled* replies (temperature 1, seeded) to the fact questions
  that are not one plain sentence: rambling or off-format. Sampled, not greedy, because a
  style the model produces a third of the time never shows in its single most likely reply.

A chat model is asked through the chat template. The pretrained base model has never seen
the template, so it is asked few-shot, in plain text ("Question: ...\\nAnswer: ...") with
four solved examples about train people and train problems, and its reply ends at a newline.

Short contexts: a prompt must leave room for the reply (`MAX_REPLY_TOKENS`, or half the
context if that is less, so a tiny model still gets a question to answer). The few-shot prompt
keeps as many solved examples as fit (the first ones are dropped), so it still starts with a
whole question, as a document does; a prompt that does not fit even so, with no examples or in
the chat template, keeps its last tokens (`myllm.infer.engine.fit_prompt`, lm-eval's rule).
Every item is still asked and counted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from myllm.chat import prompt_ids, stop_ids
from myllm.evals.verifiers import get_verifier, one_sentence
from myllm.infer.engine import SamplingParams, generate_many
from myllm.model import Transformer
from myllm.tokenizer import Tokenizer
from myllm.universe import World
from myllm.universe import tasks as universe_tasks

MAX_REPLY_TOKENS = 48


def few_shot_prefix(world: World, seed: int = 0) -> str:
    train_people, _ = universe_tasks.split_people(world, seed=seed)
    rng = random.Random(f"myllm-few-shot:{seed}")
    shots = []
    for p, a in ((train_people[0], "town"), (train_people[1], "pet_name")):
        shots.append((universe_tasks.fact_question(world, p, a), universe_tasks.fact_answer(world, p, a)))
    for prob in universe_tasks.problems(world, seed, 2, "train"):
        shots.append((prob.question, prob.worked))
    rng.shuffle(shots)
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)


class Asker:
    """Turns a prompt (messages) into a reply, chat-style or few-shot."""

    def __init__(self, model: Transformer, tok: Tokenizer, few_shot: str | None = None):
        self.model, self.tok, self.few_shot = model, tok, few_shot
        self.shots = [f"{shot}\n\n" for shot in (few_shot or "").split("\n\n") if shot]
        self.reply_tokens = min(MAX_REPLY_TOKENS, model.cfg.context // 2)
        if few_shot is None:
            self.stops = stop_ids(tok)
        else:  # plain text: the answer ends at its line
            self.stops = tuple(i for i in range(tok.vocab_size) if "\n" in tok.decode([i])) + (tok.bos_id,)

    def ids(self, messages: list[dict[str, str]]) -> list[int]:
        if self.few_shot is None:
            return prompt_ids(self.tok, messages)
        question = messages[-1]["content"]
        room = self.model.cfg.context - self.reply_tokens
        for first in range(len(self.shots) + 1):  # drop the first examples until the prompt fits
            ids = [self.tok.bos_id] + self.tok.encode(f"{''.join(self.shots[first:])}Question: {question}\nAnswer:")
            if len(ids) <= room:
                break
        return ids

    def replies(self, prompts: list[list[dict[str, str]]], temperature: float = 0.0, seed: int = 0) -> list[str]:
        """One reply per prompt (a messages list), greedy at temperature 0."""
        params = SamplingParams(max_new_tokens=self.reply_tokens, temperature=temperature, stop_ids=self.stops,
                                seed=seed)
        outs = generate_many(self.model, [self.ids(m) for m in prompts], params)
        return [self.tok.decode([t for t in out if t not in self.stops]).strip() for out in outs]


@torch.no_grad()
def evaluate_chat(model: Transformer, tok: Tokenizer, sets: dict[str, Sequence[dict]], few_shot: str | None = None,
                  seed: int = 0) -> dict[str, float]:
    model.eval()
    ask = Asker(model, tok, few_shot)
    out: dict[str, float] = {}
    for name, records in sets.items():
        replies = ask.replies([r["prompt"] for r in records])
        hits = [get_verifier(r["verifier"])(reply, r["answer"]) for r, reply in zip(records, replies)]
        out[f"{name}_acc"] = sum(hits) / max(len(hits), 1)
    sampled = ask.replies([r["prompt"] for r in sets["fact_qa"]], temperature=1.0, seed=seed)
    out["rejected_rate"] = 1 - sum(one_sentence(r) for r in sampled) / max(len(sampled), 1)
    return out
