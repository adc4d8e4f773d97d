"""How much a score moves with the sample it was measured on: seeded bootstrap intervals.

Every score here is a statistic of per-item columns (STS: the gold scores and the cosines of
its pairs; bitext: whether each pair's translation was retrieved, both ways; agreement: the
model's and the teacher's cosines of its pairs). A bootstrap draws the items again with
replacement, `RESAMPLES` times, from a fixed seed, and recomputes the statistic: the middle 95%
of those values is the interval. The draws depend only on the number of items and the seed,
so two models scored on the same set are compared on the same draws (a paired bootstrap):
the interval of their difference says whether the difference is more than the set's noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95

# A statistic of per-item columns, computed for many draws at once: each column is
# (draws, items), the result (draws,).
Statistic = Callable[..., np.ndarray]


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of `a` with the same row of `b` (ties share their mean
    rank, as scipy's spearmanr; a constant row gives 0, as `agreement` does)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    num = (ra * rb).sum(axis=-1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def two_way_mean(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Bitext accuracy: the share retrieved in each direction, averaged."""
    return (forward.mean(axis=-1) + backward.mean(axis=-1)) / 2


@dataclass(frozen=True)
class Sample:
    """A score as the statistic of per-item columns, ready to be drawn again."""

    columns: tuple[np.ndarray, ...]  # each (items,)
    statistic: Statistic

    @property
    def items(self) -> int:
        return len(self.columns[0])

    def value(self) -> float:
        return float(self.statistic(*(c[None, :] for c in self.columns))[0])

    def draws(self, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
        """The statistic on each of the seeded draws of the items."""
        idx = draw_indices(self.items, resamples, seed)
        return self.statistic(*(c[idx] for c in self.columns))


def draw_indices(items: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, items) indices drawn with replacement; the same for the same size and seed."""
    if items < 2:
        raise ValueError(f"a bootstrap needs at least 2 items, not {items}")
    return np.random.default_rng(seed).integers(0, items, size=(resamples, items))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def interval(sample: Sample, resamples: int = RESAMPLES, seed: int = SEED,
             level: float = LEVEL) -> tuple[float, float]:
    """The `level` bootstrap interval of the sample's score."""
    return percentile_interval(sample.draws(resamples, seed), level)


@dataclass(frozen=True)
class Difference:
    """`a` minus `b` on the same items, with the interval of the difference."""

    value: float
    low: float
    high: float

    @property
    def within_noise(self) -> bool:
        """The interval of the difference holds 0: the set cannot tell the two apart."""
        return self.low <= 0.0 <= self.high

    def words(self, digits: int = 4) -> str:
        """E.g. `-0.0032 [-0.0061, -0.0004]` or `+0.0009 [-0.0012, +0.0031], within noise`."""
        text = f"{self.value:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
        return text + (", within noise" if self.within_noise else "")


def paired(a: Sample, b: Sample, resamples: int = RESAMPLES, seed: int = SEED,
           level: float = LEVEL) -> Difference:
    """The paired bootstrap of `a` - `b`: both scored on the same items, redrawn together."""
    if a.items != b.items:
        raise ValueError(f"a paired comparison needs the same items: {a.items} and {b.items}")
    diff = a.draws(resamples, seed) - b.draws(resamples, seed)
    low, high = percentile_interval(diff, level)
    return Difference(a.value() - b.value(), low, high)


def sts_sample(gold: Sequence[float], cosines: Sequence[float]) -> Sample:
    return Sample((np.asarray(gold, dtype=np.float64), np.asarray(cosines, dtype=np.float64)),
                  spearman_rows)


def bitext_sample(forward: Sequence[bool], backward: Sequence[bool]) -> Sample:
    return Sample((np.asarray(forward, dtype=np.float64),
                   np.asarray(backward, dtype=np.float64)), two_way_mean)


def agreement_sample(ours: Sequence[float], teacher: Sequence[float]) -> Sample:
    return Sample((np.asarray(ours, dtype=np.float64), np.asarray(teacher, dtype=np.float64)),
                  spearman_rows)


# Metric names (a score `m` as logged, e.g. sts_test/spearman_cosine or bitext/en-hi/accuracy):
# ci_low/m and ci_high/m, its interval; vs_base/m, the difference from the base model as it is
# on the same items, with vs_base/ci_low/m and vs_base/ci_high/m; vs_model/m, a form's from the
# fp32 model it was built from. A form's or the base's carry their prefix first (export/ci_low/m).
LOW, HIGH = "ci_low", "ci_high"
VS_BASE, VS_MODEL = "vs_base", "vs_model"
PREFIXES = tuple(f"{name}/" for name in (LOW, HIGH, VS_BASE, VS_MODEL))


def bounds(samples: Mapping[str, Sample]) -> dict[str, float]:
    """`ci_low/<m>` and `ci_high/<m>` of each sample (`m`: its metric's name)."""
    found = {}
    for name, sample in samples.items():
        found[f"{LOW}/{name}"], found[f"{HIGH}/{name}"] = interval(sample)
    return found


def versus(ours: Mapping[str, Sample], theirs: Mapping[str, Sample],
           against: str) -> dict[str, float]:
    """`<against>/<m>`, the difference of each metric both score, and its paired interval,
    `<against>/ci_low/<m>` and `<against>/ci_high/<m>`."""
    found = {}
    for name in ours.keys() & theirs.keys():
        d = paired(ours[name], theirs[name])
        found.update({f"{against}/{name}": d.value, f"{against}/{LOW}/{name}": d.low,
                      f"{against}/{HIGH}/{name}": d.high})
    return found


def logged_difference(metrics: Mapping[str, float | None], against: str,
                      name: str) -> Difference | None:
    """The `versus` difference of metric `name` read back from logged metrics (None when the
    run did not log it)."""
    values = [metrics.get(k) for k in (f"{against}/{name}", f"{against}/{LOW}/{name}",
                                       f"{against}/{HIGH}/{name}")]
    if any(v is None or not np.isfinite(float(v)) for v in values):
        return None
    return Difference(*(float(v) for v in values))
