"""The skip report: what `iter_documents` left out of a corpus and why.

Every reader counts a bad file or record here instead of stopping (see `sources.py`); the report
ends up in the corpus manifest (`skipped`, `skipped_examples`) and in `corpus/report.md`, so the
user sees what was left out. Every skipped file, folder and link is named. Skipped records (JSONL
lines, JSON records, CSV rows, parquet rows) are named up to MAX_LINES_PER_FILE per file and
reason, and the rest of that file's count is one more entry: a file with a million bad lines
neither floods the report nor fills memory, and still every file with a bad record is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINES_PER_FILE = 20


def _entry(where: str, reason: str, detail: str) -> str:
    return f"{where}: {reason}" + (f" ({detail})" if detail else "")


@dataclass
class SkipReport:
    """What was left out and why: counts per reason and every entry (`path[:line]: reason (detail)`)."""

    counts: dict[str, int] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)
    files_seen: int = 0
    records: dict[tuple[str, str], int] = field(default_factory=dict)  # (file, reason) -> records skipped

    def add(self, reason: str, where: str, detail: str = "", *, line: int | None = None) -> None:
        """Count one skip: a whole file or folder at `where`, or record `line` of file `where`."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if line is None:
            self.named.append(_entry(where, reason, detail))
            return
        n = self.records.get((where, reason), 0) + 1
        self.records[(where, reason)] = n
        if n <= MAX_LINES_PER_FILE:
            self.named.append(_entry(f"{where}:{line}", reason, detail))

    @property
    def examples(self) -> list[str]:
        """Every entry, in the order met, then one per file whose records were named only in part."""
        more = [f"{where}: {n - MAX_LINES_PER_FILE} more records skipped as {reason} (first {MAX_LINES_PER_FILE} "
                "named above)" for (where, reason), n in self.records.items() if n > MAX_LINES_PER_FILE]
        return self.named + more

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
