"""Percentile bootstrap intervals over eval items, for per-item scores.

Eval tables compare answer sources on the same items with per-item values (0/1 answer
correctness, per-item ROUGE-L, per-item reward); with a few hundred items a difference of
a few points can be noise. Each function here returns the statistic on the items as they
are and a percentile bootstrap interval: ``n_boot`` resamples of the items with
replacement (seeded: the same inputs and seed give the same interval), the statistic of
each, and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those.

Two answer sources scored on the same items are *paired*: :func:`paired_difference` and
:func:`win_rate` resample item indices once and take both sources' values at them, so the
interval reflects only how the sources differ per item, not how hard the items are (for
positively correlated scores it is narrower than comparing two unpaired intervals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Values = npt.ArrayLike  # one number per item: a list, a tuple, a 1-d numpy array
Statistic = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class Interval:
    """A statistic over ``n`` items and its bootstrap interval ``[low, high]`` at ``level``."""

    value: float
    low: float
    high: float
    n: int
    level: float

    def as_dict(self) -> dict[str, float | int]:
        """``value``, ``low``, ``high`` rounded to 4 decimals, and ``n`` (for JSON reports)."""
        return {"value": round(self.value, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "n": self.n}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] n={self.n}"


def _values(name: str, values: Values) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: one value per item expected, received shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: no values (an interval needs at least one item)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: {int((~np.isfinite(array)).sum())} value(s) are NaN or "
                         "infinite (drop the items without a score first)")
    return array


def _paired(a: Values, b: Values) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x, y = _values("a", a), _values("b", b)
    if x.size != y.size:
        raise ValueError(f"b: {y.size} values for the {x.size} items of a (paired values: "
                         "one of each per item, in the same order)")
    return x, y


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot: at least 1 resample, received {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level: a coverage in (0, 1), received {level}")


def _bootstrap(columns: Sequence[npt.NDArray[np.float64]], statistic: Statistic, *,
               n_boot: int, seed: int, level: float) -> Interval:
    """``statistic`` of the item values ``columns`` (one array per source, same items),
    with the percentile interval of it over ``n_boot`` resamples of the items."""
    _check(n_boot, level)
    n = columns[0].size
    data = np.stack(columns)  # (sources, items)
    value = float(statistic(data[:, None, :])[0])
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // n)  # resamples per step: at most ~2M values per source
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = statistic(data[:, idx])  # same items for every source
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return Interval(value, float(low), float(high), n, level)


def bootstrap_mean(values: Values, *, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """The mean of per-item ``values`` (0/1 correctness, ROUGE-L, reward) and its interval."""
    return _bootstrap([_values("values", values)], lambda d: d[0].mean(axis=-1),
                      n_boot=n_boot, seed=seed, level=level)


def bootstrap_median(values: Values, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """The median of per-item ``values`` and its interval."""
    return _bootstrap([_values("values", values)], lambda d: np.median(d[0], axis=-1),
                      n_boot=n_boot, seed=seed, level=level)


def paired_difference(a: Values, b: Values, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Interval:
    """``mean(a - b)`` of two sources' values on the same items (``a[i]``, ``b[i]``: item
    ``i``), the bootstrap resampling items, not each source apart."""
    x, y = _paired(a, b)
    return _bootstrap([x, y], lambda d: (d[0] - d[1]).mean(axis=-1), n_boot=n_boot,
                      seed=seed, level=level)


def win_rate(a: Values, b: Values, *, n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> Interval:
    """The share of items where ``a`` scores above ``b`` (a tie counts half), paired."""
    x, y = _paired(a, b)
    return _bootstrap([x, y], lambda d: ((d[0] > d[1]) + 0.5 * (d[0] == d[1])).mean(axis=-1),
                      n_boot=n_boot, seed=seed, level=level)
