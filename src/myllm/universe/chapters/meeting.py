"""Chapter "A Meeting of Mira Fenwick and Tom Ashby": questions, answers, work and gifts."""

from __future__ import annotations

from functools import partial

from myllm.universe.phrases import ANSWER_WRAPS, ASK, ATTRIBUTES, QUESTION_WRAPS, SAY, SAY_TO_FRIEND
from myllm.universe.words import FAREWELLS, GOODS, GREETINGS, PLACES, THANKS, TRADES
from myllm.universe.writer import Row, Writer


def write(w: Writer) -> None:
    """Two people meet and talk: questions answered in the first person, work, gifts."""
    a = w.person("{F} and ")
    b = w.person("{F}\n\n", exclude=(a,))
    ca, cb = w.ctx[a], w.ctx[b]
    w.emit("On ")
    w.date()
    w.emit(f"{ca['f']} met {cb['f']} ")
    w.word(PLACES, "")
    w.word(w.towns, ".\n\"")
    w.word(GREETINGS, ", ")
    w.emit(f'{cb["f"]}!" said {ca["f"]}.\n')
    done: dict[int, tuple[str, ...]] = {a: (), b: ()}  # what each has answered or given
    while True:
        move, x, y = w.pick(("turn", a, b, done[a], done[b]), partial(_turns, w))
        if move == "bye":
            break
        cx, cy = w.ctx[x], w.ctx[y]
        if move == "gift":  # the line so far: 'Mira said, "I have '
            done[x] += ("gift",)
            w.counted(1, 20, GOODS, f' for you, {cy["f"]}."\n"')
            w.word(THANKS, ", ")
            w.emit(f'{cx["f"]}!" said {cy["f"]}.\n')
        elif move == "work":
            done[y] += ("work",)
            verb, one, many = TRADES[cy["trade"]]
            w.emit(f'\n"I {verb} ')
            w.number(1, 30, (one, many), f' today," said {cy["f"]}.\n')
        else:
            done[y] += (move,)
            w.emit("\n")
            w.pick(("answer", y, x, move), partial(_answers, w))
            w.emit("\n")
    w.emit("\nThen ")
    if ca["town"] == cb["town"]:
        w.emit(f"{ca['f']} and {cb['f']} went home to {ca['town']}.\n\n")
    else:
        w.emit(f"{ca['f']} went home to {ca['town']}, and {cb['f']} went home to {cb['town']}.\n\n")


def _turns(w: Writer, a: int, b: int, done_a: tuple[str, ...], done_b: tuple[str, ...]) -> list[Row]:
    """The next line of a meeting: a question about a fact or work, a gift, or goodbye."""
    done = {a: done_a, b: done_b}
    moves = [(at, x, y) for x, y in ((a, b), (b, a)) for at in ATTRIBUTES + ("work",) if at not in done[y]]
    moves += [("gift", x, y) for x, y in ((a, b), (b, a)) if "gift" not in done[x]]
    p_bye = 0.0 if not (done_a or done_b) else (0.25 if moves else 1.0)
    rows = []
    for move, x, y in moves:
        cx, cy = w.ctx[x], w.ctx[y]
        if move == "gift":
            forms = [f'{cx["f"]} said, "I have ']
        else:
            asks = ASK[move] if move != "work" else ("How was your work today, {f}?",)
            forms = [wrap.format(Q=q.format(**cy), g=cx["f"]) for q in asks for wrap in QUESTION_WRAPS]
        rows += [((move, x, y), f, (1 - p_bye) / (len(moves) * len(forms))) for f in forms]
    for x, y in ((a, b), (b, a)):
        rows += [(("bye", x, y), f'"{bye}, {w.ctx[y]["f"]}!" said {w.ctx[x]["f"]}.', p_bye / 8)
                 for bye in FAREWELLS]
    return [r for r in rows if r[2] > 0]


def _answers(w: Writer, y: int, x: int, attr: str) -> list[Row]:
    """Person y answers x's question about `attr`, in the first person."""
    cy, g = w.ctx[y], w.ctx[x]["f"]
    says = SAY_TO_FRIEND if attr == "friend" and w.friend[y] == x else SAY[attr]
    return [(0, wrap.format(X=s.format(g=g, **cy), f=cy["f"]), 1.0) for s in says for wrap in ANSWER_WRAPS]
