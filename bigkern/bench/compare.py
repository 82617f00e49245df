"""Comparing a benchmark run with a stored one: ``bigkern bench --compare FILE`` and
``--fail-on-regression PCT``.

Rows match when op, case, shape, dtype, layout, direction, params and provider are equal. The
change of a row is ``now / before - 1`` of the median time (positive: slower). A regression is a
bigkern row slower by more than the threshold; the baseline providers' rows (torch, cuDNN,
torch.compile) are shown but never fail a run, since a change there is the machine's or torch's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bigkern.bench.harness import _case_key, is_bigkern


@dataclass(frozen=True)
class Change:
    row: dict  # the current row
    before_ms: float
    now_ms: float

    @property
    def change(self) -> float:
        return self.now_ms / self.before_ms - 1.0


def load_rows(path: str | Path) -> list[dict]:
    """The rows of a results JSON file written by ``bigkern bench``."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--compare: no results file at {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--compare: {path} is not a bigkern bench JSON file ({err})") from None
    if not isinstance(document, dict) or "rows" not in document:
        raise ValueError(f"--compare: {path} has no 'rows': not a bigkern bench results file")
    return document["rows"]


def _key(row: dict) -> tuple[str, str]:
    return _case_key(row), row["provider"]


def compare(current: list[dict], baseline: list[dict]) -> tuple[list[Change], int]:
    """(changes of the rows measured in both, number of current measured rows with no match)."""
    before = {_key(r): r for r in baseline if r.get("median_ms")}
    changes, unmatched = [], 0
    for row in current:
        if not row.get("median_ms"):
            continue
        old = before.get(_key(row))
        if old is None:
            unmatched += 1
            continue
        changes.append(Change(row, old["median_ms"], row["median_ms"]))
    return changes, unmatched


def regressions(changes: list[Change], threshold_pct: float) -> list[Change]:
    """bigkern rows slower than before by more than ``threshold_pct`` percent."""
    return [c for c in changes if is_bigkern(c.row["provider"]) and c.change * 100 > threshold_pct]


def format_changes(changes: list[Change], unmatched: int, threshold_pct: float | None = None) -> str:
    header = ("op", "shape", "dtype", "layout", "dir", "provider", "before ms", "now ms", "change")
    lines = []
    for c in changes:
        r = c.row
        flag = " REGRESSION" if threshold_pct is not None and c in regressions([c], threshold_pct) else ""
        lines.append((r["case"], "x".join(map(str, r["shape"])), r["dtype"], r["layout"],
                      {"forward": "fwd", "forward+backward": "fwd+bwd"}.get(r["direction"], r["direction"]),
                      r["provider"], f"{c.before_ms:.3f}", f"{c.now_ms:.3f}", f"{100 * c.change:+.1f}%{flag}"))  # fmt: skip
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    if not lines:
        out.append("(no row of this run was measured in the stored one)")
    if unmatched:
        out.append(f"{unmatched} measured row{'s' * (unmatched != 1)} of this run had no counterpart in the stored one")
    return "\n".join(out)
