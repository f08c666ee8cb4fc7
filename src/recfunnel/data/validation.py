"""Row-level validation results for every loader.

A bad row never stops an import: it is recorded with file, line and field, the good rows
load, and the summary says how many rows were dropped and why. Only a file with no valid
row at all (or one that is missing or unreadable) is an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_KEPT_ERRORS = 1000


class DataError(ValueError):
    """A data file cannot be used at all (missing, unreadable, or no valid row)."""


@dataclass(frozen=True)
class RowError:
    file: str
    line: int  # 1-based line number in the file as a person opens it
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.reason}"


@dataclass
class LoadReport:
    """What a load read, kept and dropped, per file."""

    rows_read: Counter = field(default_factory=Counter)
    rows_kept: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)  # (file, reason) -> count
    errors: list[RowError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS

    def read(self, file: str, n: int = 1) -> None:
        self.rows_read[file] += n

    def kept(self, file: str, n: int = 1) -> None:
        self.rows_kept[file] += n

    def drop(self, file: str, line: int, field_name: str, reason: str) -> None:
        self.dropped[(file, reason)] += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(RowError(file, line, field_name, reason))

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def require_rows(self, file: str) -> None:
        """Raise when `file` produced no valid row, citing its first errors."""
        if self.rows_kept[file] > 0:
            return
        first = [str(e) for e in self.errors if e.file == file][:5]
        detail = ("; first problems: " + "; ".join(first)) if first else ""
        raise DataError(f"{file}: no valid row among {self.rows_read[file]} read{detail}")

    def summary(self) -> str:
        lines = []
        for file in sorted(self.rows_read):
            lines.append(
                f"{file}: {self.rows_read[file]} rows read, {self.rows_kept[file]} kept, "
                f"{self.rows_read[file] - self.rows_kept[file]} dropped"
            )
        for (file, reason), n in sorted(self.dropped.items()):
            lines.append(f"  dropped {n} from {file}: {reason}")
        return "\n".join(lines)

    def merge(self, other: "LoadReport") -> None:
        self.rows_read.update(other.rows_read)
        self.rows_kept.update(other.rows_kept)
        self.dropped.update(other.dropped)
        room = MAX_KEPT_ERRORS - len(self.errors)
        self.errors.extend(other.errors[:max(room, 0)])
