"""The one table bench/run.py prints: a row per measure, ours against its bare reference.

Each measured row keeps the per-round values of both sides (rounds alternate ours and the
reference, so a drift of the shared machine hits both alike), and shows their medians, the
median of the per-round ratios with its spread (min-max over the rounds), the goal and whether
the median meets it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Row:
    """One measure. ``ours``/``reference``: per-round values (or one value); ``ratio``: per-round
    ratios when the goal is on a ratio (computed from the rounds when left empty);
    ``meets``: the goal's test of the median ratio (or of the median of ``ours`` when there
    is no reference); ``note``: what else to know, printed after the table."""

    name: str
    unit: str
    ours: Sequence[float]
    reference: Sequence[float] = ()
    goal: str = ""
    meets: Callable[[float], bool] | None = None
    ratio: Sequence[float] = field(default_factory=list)
    text: str = ""  # instead of figures: "not measured", "failed: ..."

    def ratios(self) -> list[float]:
        if self.ratio:
            return list(self.ratio)
        if self.reference and len(self.reference) == len(self.ours):
            return [o / r for o, r in zip(self.ours, self.reference, strict=True) if r]
        return []

    def cells(self) -> list[str]:
        if self.text:
            return [self.name, "-", "-", "-", "", self.goal, self.text]
        ours = statistics.median(self.ours)
        ref = statistics.median(self.reference) if self.reference else None
        ratios = self.ratios()
        ratio = statistics.median(ratios) if ratios else None
        judged = ratio if ratio is not None and self.reference else ours
        spread = self._spread(ratios if ratios else list(self.ours))
        met = "" if self.meets is None else ("yes" if self.meets(judged) else "NO")
        return [
            self.name,
            figure(ours, self.unit),
            figure(ref, self.unit) if ref is not None else "-",
            f"{ratio:.2f}" if ratio is not None else "-",
            spread,
            self.goal,
            met,
        ]

    def _spread(self, values: list[float]) -> str:
        if len(values) < 2:
            return f"(n={len(values)})"
        digits = ".2f" if max(abs(v) for v in values) < 100 else ",.0f"
        return f"{min(values):{digits}}-{max(values):{digits}} (n={len(values)})"


HEADER = ["measure", "ours", "bare/ref", "ratio", "spread", "goal", "met"]


def figure(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"
    if unit in ("/s", "B"):
        return f"{value:,.0f}{unit if unit == '/s' else ' B'}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:.1f} {unit}".rstrip()


def render(rows: Sequence[Row]) -> str:
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(widths[i]) for i, cell in enumerate(line[1:-2], start=1)]
        cells += [line[-2].ljust(widths[-2]), line[-1]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
