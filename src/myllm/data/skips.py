"""The skip report: what `iter_documents` left out of a corpus and why.

Every reader counts a bad file or record here instead of stopping (see `sources.py`); the report
ends up in the corpus manifest so the user sees what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_EXAMPLES, MAX_EXAMPLES_PER_REASON = 20, 5


@dataclass
class SkipReport:
    """What was left out and why: counts per reason and the first few examples (path[:line]: reason)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    files_seen: int = 0

    def add(self, reason: str, where: str, detail: str = "") -> None:
        n = self.counts.get(reason, 0)
        self.counts[reason] = n + 1
        if len(self.examples) < MAX_EXAMPLES and n < MAX_EXAMPLES_PER_REASON:
            self.examples.append(f"{where}: {reason}" + (f" ({detail})" if detail else ""))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for an error message, e.g. '3 skipped: 2 binary, 1 empty'."""
        if not self.counts:
            return "nothing skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{self.total} skipped: {parts}"


class SkipFile(Exception):
    """Raised inside a reader: skip the rest of this file for `reason`."""

    def __init__(self, reason: str, line: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.reason, self.line, self.detail = reason, line, detail
