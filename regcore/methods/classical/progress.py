"""Progress reporting across the levels of a multi-resolution optimisation."""

from __future__ import annotations

from dataclasses import dataclass

from regcore.methods.base import report


@dataclass
class LevelProgress:
    """Fraction bookkeeping across levels: ``tick(level, it, message, **losses)`` calls ``report``.

    Each level's share of [0, 1] is proportional to its iteration count (or ``weights``); a report
    goes out every ``report_every`` iterations and at the last one of a level.
    """

    progress: object
    iterations: tuple[int, ...]
    weights: tuple[float, ...] | None = None
    report_every: int = 5

    def __post_init__(self):
        w = self.weights or tuple(float(max(i, 1)) for i in self.iterations)
        total = sum(w)
        self._starts = [sum(w[:k]) / total for k in range(len(w))]
        self._spans = [x / total for x in w]

    def tick(self, level: int, it: int, message: str = "", force: bool = False, **losses: float) -> None:
        n = max(self.iterations[level], 1)
        if force or it % self.report_every == 0 or it == n - 1:
            frac = self._starts[level] + self._spans[level] * (it + 1) / n
            report(self.progress, min(frac, 0.999), message, **losses)
