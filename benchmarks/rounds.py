"""Modes taking turns: rounds in alternating order, ratios to a baseline per round, medians and spreads.

A machine whose speed drifts (other jobs, frequency, cache) slows whatever runs at that moment. Timing each
mode in its own stretch turns that drift into differences between modes; timing every mode in every round,
in an order reversed each round, and dividing by the baseline's time in the same round cancels it, the more
so the shorter a round. A ratio is the median of its per-round values; its *spread* is the half-width of the
95% confidence interval of that median (distribution-free, from order statistics), which narrows as rounds
accumulate; the interquartile range of the per-round values (how much single rounds scatter) is kept too.
Other jobs only ever add time, so the ratio of each mode's fastest round to the baseline's fastest is given
as well.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Protocol

from benchmarks.ct_bench import Round

__all__ = ["Worker", "quartiles", "run_rounds", "summarize"]


class Worker(Protocol):
    def round(self) -> Round: ...

    def peak_mb(self) -> dict[str, float]: ...


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _ratios(rounds: dict[str, list[Round]], mode: str, baseline: str, what: str = "seconds") -> list[float]:
    return [getattr(a, what) / getattr(b, what) for a, b in zip(rounds[mode], rounds[baseline], strict=True)]


def _spread(ratios: list[float]) -> float:
    """Half-width of the 95% confidence interval of the median of ``ratios`` (order statistics)."""
    n = len(ratios)
    if n < 2:
        return math.inf
    ordered = sorted(ratios)
    k = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - k)), min(n - 1, math.ceil(n / 2 + k) - 1)
    return (ordered[hi] - ordered[lo]) / 2


def run_rounds(workers: dict[str, Worker], baseline: str, *, min_rounds: int, max_rounds: int, spread: float,
               log: Callable[[str], None] = print) -> dict[str, list[Round]]:
    """Every mode once per round, the order reversed every other round, after one warm-up round each;
    stops once every ratio's spread is below ``spread`` (after at least ``min_rounds``)."""
    modes = list(workers)
    for m in modes:  # first-call costs (allocator, kernels, connections) are not timed
        workers[m].round()
    rounds: dict[str, list[Round]] = {m: [] for m in modes}
    others = [m for m in modes if m != baseline]
    for r in range(max_rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):
            rounds[m].append(workers[m].round())
        spreads = {m: _spread(_ratios(rounds, m, baseline)) for m in others}
        line = ", ".join(f"{m} {rounds[m][-1].seconds / rounds[baseline][-1].seconds:.3f}x" for m in others)
        largest = max((v for v in spreads.values() if math.isfinite(v)), default=math.inf)
        log(f"# round {r + 1}: {line}  (largest spread {largest:.3f})")
        if r + 1 >= min_rounds and all(s < spread for s in spreads.values()):
            break
    return rounds


def _rounds_to_spread(ratios: list[float], target: float, minimum: int) -> int | None:
    for n in range(minimum, len(ratios) + 1):
        if _spread(ratios[:n]) < target:
            return n
    return None


def summarize(rounds: dict[str, list[Round]], workers: dict[str, Worker], baseline: str, steps: int, spread: float,
              min_rounds: int) -> dict[str, dict]:
    """Per mode: medians per step over rounds, and the ratio to ``baseline`` with its spread."""
    out = {}
    for mode, rs in rounds.items():
        row = {"seconds_per_step": statistics.median(r.seconds for r in rs) / steps, "peak_mb": workers[mode].peak_mb(),
               "bytes_per_step": statistics.median(r.bytes for r in rs) / steps,
               "cpu_seconds_per_step": statistics.median(r.cpu for r in rs) / steps,
               "rounds": len(rs), "round_seconds": [round(r.seconds, 4) for r in rs]}
        if mode != baseline:
            ratios = _ratios(rounds, mode, baseline)
            cpu = _ratios(rounds, mode, baseline, "cpu")
            q1, med, q3 = quartiles(ratios)
            row.update({"ratio": med, "ratio_spread": _spread(ratios), "ratio_q1": q1, "ratio_q3": q3,
                        "ratio_min": min(ratios), "ratio_max": max(ratios),
                        "ratio_of_fastest": min(r.seconds for r in rs) / min(r.seconds for r in rounds[baseline]),
                        "rounds_to_spread": _rounds_to_spread(ratios, spread, min_rounds),
                        "cpu_ratio": statistics.median(cpu), "cpu_ratio_spread": _spread(cpu)})
        out[mode] = row
    return out
