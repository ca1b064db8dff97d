"""Chapter "Who Is Who": facts about people picked at random, one sentence each."""

from __future__ import annotations

from functools import partial

from myllm.universe.phrases import ATTRIBUTES, FACTS, full_form
from myllm.universe.writer import Row, Writer


def write(w: Writer) -> None:
    """Facts about people picked at random, one sentence each, mostly in the cloze form.

    This is where facts are repeated most; a fresh person per sentence keeps it informative.
    """
    while True:
        i = w.person("{F}")
        w.pick(("note", i), partial(_note_rows, w))
        if w.ch.choose((" ", "\n\n"), (0.9, 0.1)) == 1:
            return


def _note_rows(w: Writer, i: int) -> list[Row]:
    """The rest of a sentence that began with person i's full name; the cloze form weighs 3."""
    c = w.ctx[i]
    rows = []
    for a in ATTRIBUTES:
        forms = [full_form(t) for t, form in FACTS[a] if form != "pron" and t[:3] in ("{F}", "{f}")]
        rows += [(a, t.format(**c)[len(c["F"]):], (3.0 if k == 0 else 1.0) / (len(forms) + 2))
                 for k, t in enumerate(forms)]
    return rows
