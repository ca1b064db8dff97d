"""Post-training data from the built-in universe: fact questions, arithmetic word problems,
preference pairs, and the held-out sets that evaluate them.

Everything is a pure function of the world and a seed, so a run's tasks can be regenerated.

- **Fact questions** ("Where does Mira Fenwick live?") are answered in the books' own words
  ("Mira Fenwick lives in Oakridge."): the facts come from pretraining; SFT only teaches the
  model to answer questions with them. People are split: SFT, DPO and GRPO see questions about
  `train` people only, evaluation asks about `eval` people, whose facts the model read in the
  books but was never asked about.
- **Arithmetic problems** are the books' market sums with one or two steps ("Mira had 3 plums.
  She bought 4 more. Then she ate 2 of them. How many plums does Mira have now?"), answered
  with a short worked span ("3 + 4 = 7. 7 - 2 = 5. Mira has 5 plums."). Number patterns are
  split: a held-out problem's numbers and steps never appear in training data.
- **Styles**: a good answer is one plain sentence (or the worked sums and one sentence). The
  SFT mix deliberately contains a share of rambling answers (filler before and after a correct
  answer), as real instruction data does; DPO is then judged on removing them.
- **Preference pairs**: chosen is the good answer; rejected is the same answer rambling, or a
  concise but wrong answer (another person's fact, a wrong sum).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from myllm.universe.phrases import FACTS, person_context
from myllm.universe.words import FOOD, count
from myllm.universe.world import ATTRIBUTES, Person, World

QUESTIONS = {
    "town": ("Where does {F} live?", "Which town is {F}'s home?"),
    "trade": ("What is {F}'s trade?", "What work does {F} do?"),
    "pet": ("What pet does {F} have?", "What animal does {F} keep?"),
    "pet_name": ("What is {F}'s pet called?", "What is the name of {F}'s pet?"),
    "food": ("What is {F}'s favourite food?", "What does {F} like to eat?"),
    "friend": ("Who is {F}'s best friend?", "Who is the best friend of {F}?"),
}
RAMBLE_OPEN = ("Well, that is a very good question, so let me think about it for a moment.",
               "Hmm, let me see what I can remember about that.",
               "Oh, I know this one, and I am happy to tell you all about it.")
RAMBLE_CLOSE = ("I hope that helps, and do ask me again if you want to know more!",
                "That is everything I can remember, and I think it is right.",
                "People in the valley talk about it all the time, you know.")
SYSTEM_PROMPTS = ("You are a helpful assistant who knows the people of the valley.",
                  "Answer questions about the towns and people in the books.",
                  "You are a friendly helper. Answer briefly.")


def split_people(world: World, eval_fraction: float = 0.25, seed: int = 0) -> tuple[list[Person], list[Person]]:
    """(train people, eval people): a seeded shuffle, the last `eval_fraction` held out."""
    people = list(world.people)
    random.Random(f"myllm-tasks-people:{seed}").shuffle(people)
    n_eval = max(1, round(eval_fraction * len(people)))
    return people[:-n_eval], people[-n_eval:]


def _context(world: World, p: Person) -> dict[str, str]:
    return person_context(p, world.person(p.friend))


def fact_question(world: World, p: Person, attribute: str, phrasing: int = 0) -> str:
    return QUESTIONS[attribute][phrasing % len(QUESTIONS[attribute])].format(**_context(world, p))


def fact_answer(world: World, p: Person, attribute: str) -> str:
    """The answer as the books' cloze sentence: "Mira Fenwick lives in Oakridge."."""
    return FACTS[attribute][0][0].format(**_context(world, p))


def wrong_answer(world: World, p: Person, attribute: str, rng: random.Random) -> str:
    """The same sentence with another person's (different) value."""
    others = [q for q in world.people if q.fact(attribute) != p.fact(attribute) and q.full != p.full]
    value = rng.choice(others).fact(attribute)
    ctx = _context(world, p)
    ctx[attribute] = value
    if attribute == "friend":
        ctx["friend"] = value
    return FACTS[attribute][0][0].format(**ctx)


def ramble(answer: str, rng: random.Random) -> str:
    return f"{rng.choice(RAMBLE_OPEN)} {answer} {rng.choice(RAMBLE_CLOSE)}"


# --- Arithmetic ---------------------------------------------------------------------------
def _has(name: str, n: int, noun: tuple) -> str:
    return f"{name} has {count(n, noun)}."


@dataclass(frozen=True)
class Problem:
    question: str
    worked: str  # the answer with its reasoning span: "3 + 4 = 7. 7 - 2 = 5. Mira has 5 plums."
    answer: int
    pattern: tuple  # (start, (sign, n), ...): the numbers, which decide the train/eval split
    name: str  # who has them: "Mira"
    noun: tuple  # (singular, plural): ("plum", "plums")

    @property
    def concise(self) -> str:
        """The answer alone: "Mira has 5 plums." """
        return _has(self.name, self.answer, self.noun)

    def concise_with(self, n: int) -> str:
        """The concise answer with another count: a wrong sum that reads like a right one."""
        return _has(self.name, n, self.noun)


def is_eval_pattern(pattern: tuple, eval_fraction: float = 0.2) -> bool:
    """A stable hash of the numbers and steps: the same problem shape is always on the same side."""
    return zlib.crc32(repr(pattern).encode()) % 1000 < eval_fraction * 1000


def make_problem(world: World, rng: random.Random, steps: int) -> Problem:
    """A 1- or 2-step market sum with every count between 1 and 18 and never below 1."""
    p = rng.choice(world.people)
    c = _context(world, p)
    noun = rng.choice(FOOD)
    n = rng.randint(1, 9)
    text = [f"{c['F']} had {count(n, noun)}."]
    work, pattern = [], [n]
    for k in range(steps):
        then = "" if k == 0 else "Then "
        if n > 1 and rng.random() < 0.5:
            d = rng.randint(1, n - 1)
            how = rng.choice((f"{c['s']} ate {d} of them.", f"{c['s']} gave {d} to {c['friend_f']}."))
            work.append(f"{n} - {d} = {n - d}.")
            pattern.append(("-", d))
            n -= d
        else:
            d = rng.randint(1, 9)
            how = rng.choice((f"{c['s']} bought {d} more.", f"{c['friend_f']} gave {c['o']} {d} more."))
            work.append(f"{n} + {d} = {n + d}.")
            pattern.append(("+", d))
            n += d
        text.append(then + how if then else how[0].upper() + how[1:])
    text.append(f"How many {noun[1]} does {c['f']} have now?")
    return Problem(" ".join(text), " ".join(work + [_has(c["f"], n, noun)]), n, tuple(pattern), c["f"], noun)


def problems(world: World, seed: int, n: int, split: str, eval_fraction: float = 0.2) -> list[Problem]:
    """`n` problems (half 1-step, half 2-step) whose number patterns fall in `split` (train|eval)."""
    rng = random.Random(f"myllm-tasks-arith:{seed}:{split}")
    out: list[Problem] = []
    while len(out) < n:
        prob = make_problem(world, rng, steps=1 + len(out) % 2)
        if is_eval_pattern(prob.pattern, eval_fraction) == (split == "eval"):
            out.append(prob)
    return out


# --- Datasets -----------------------------------------------------------------------------
def sft_conversations(world: World, seed: int = 0, n: int = 3000, ramble_fraction: float = 0.35,
                      arith_fraction: float = 0.4, worked: bool = False) -> list[dict]:
    """SFT chats about train people and train problems: 1-3 turns, some with a system prompt.

    `worked` answers arithmetic with its reasoning span ("3 + 4 = 7. Mira has 7 plums.");
    off by default: the default 1M-parameter model copies numbers into such a span poorly
    (7% held-out accuracy after SFT, measured) and answers better in the books' own form.
    """
    rng = random.Random(f"myllm-tasks-sft:{seed}")
    train_people, _ = split_people(world, seed=seed)
    arith = problems(world, seed, n, "train")
    out = []
    for _ in range(n):
        messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.2 else []
        for _ in range(rng.choice((1, 1, 2, 3))):
            if rng.random() < arith_fraction:
                prob = arith[rng.randrange(len(arith))]
                answer = prob.worked if worked else prob.concise
                messages += [{"role": "user", "content": prob.question}, {"role": "assistant", "content": answer}]
            else:
                p, a = rng.choice(train_people), rng.choice(ATTRIBUTES)
                answer = fact_answer(world, p, a)
                if rng.random() < ramble_fraction:
                    answer = ramble(answer, rng)
                messages += [{"role": "user", "content": fact_question(world, p, a, rng.randrange(2))},
                             {"role": "assistant", "content": answer}]
        out.append({"messages": messages})
    return out


def preference_pairs(world: World, seed: int = 0, n: int = 2000, wrong_fraction: float = 0.3,
                     arith_fraction: float = 0.0) -> list[dict]:
    """DPO pairs about train people: chosen concise and right; rejected rambling, or wrong. With
    `arith_fraction` > 0, that share are train-pattern sums: chosen right, rejected off by 1-2."""
    rng = random.Random(f"myllm-tasks-dpo:{seed}")
    train_people, _ = split_people(world, seed=seed)
    arith = problems(world, seed + 2, n, "train") if arith_fraction else []
    out = []
    for _ in range(n):
        if arith and rng.random() < arith_fraction:
            prob = arith[rng.randrange(len(arith))]
            wrong = max(prob.answer + rng.choice((-2, -1, 1, 2)), 1)
            wrong = wrong if wrong != prob.answer else prob.answer + 1
            out.append({"prompt": [{"role": "user", "content": prob.question}], "chosen": prob.concise,
                        "rejected": prob.concise_with(wrong)})
            continue
        p, a = rng.choice(train_people), rng.choice(ATTRIBUTES)
        chosen = fact_answer(world, p, a)
        rejected = wrong_answer(world, p, a, rng) if rng.random() < wrong_fraction else ramble(chosen, rng)
        out.append({"prompt": [{"role": "user", "content": fact_question(world, p, a, rng.randrange(2))}],
                    "chosen": chosen, "rejected": rejected})
    return out


def grpo_prompts(world: World, seed: int = 0, n: int = 2000, fact_fraction: float = 0.2) -> list[dict]:
    """Prompts with a verifiable answer: arithmetic (train number patterns, `number` verifier) and,
    so that optimizing arithmetic does not wear away the facts, fact questions about train
    people (`contains` verifier)."""
    rng = random.Random(f"myllm-tasks-grpo:{seed}")
    train_people, _ = split_people(world, seed=seed)
    out = []
    for prob in problems(world, seed + 1, n, "train"):
        if rng.random() < fact_fraction:
            p, a = rng.choice(train_people), rng.choice(ATTRIBUTES)
            out.append({"prompt": [{"role": "user", "content": fact_question(world, p, a, rng.randrange(2))}],
                        "answer": p.fact(a), "verifier": "contains"})
        else:
            out.append({"prompt": [{"role": "user", "content": prob.question}], "answer": str(prob.answer),
                        "verifier": "number"})
    return out


def eval_sets(world: World, seed: int = 0, n_arith: int = 200) -> dict[str, list[dict]]:
    """Held-out prompts: fact questions about eval people, arithmetic with held-out numbers."""
    _, eval_people = split_people(world, seed=seed)
    facts = [{"prompt": [{"role": "user", "content": fact_question(world, p, a, k)}], "answer": p.fact(a),
              "verifier": "contains", "attribute": a}
             for k, p in enumerate(eval_people) for a in ATTRIBUTES]
    arith = [{"prompt": [{"role": "user", "content": p.question}], "answer": str(p.answer), "verifier": "number"}
             for p in problems(world, seed, n_arith, "eval")]
    return {"fact_qa": facts, "arith": arith}
