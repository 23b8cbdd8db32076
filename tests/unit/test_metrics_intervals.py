"""Bootstrap intervals over items: known cases, coverage, pairing, seeds and errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from pf_ray.metrics.intervals import (
    Interval,
    bootstrap_mean,
    bootstrap_median,
    paired_difference,
    win_rate,
)


def test_constant_values_give_a_point_interval() -> None:
    ones = bootstrap_mean([1] * 50)
    assert (ones.value, ones.low, ones.high, ones.n, ones.level) == (1.0, 1.0, 1.0, 50, 0.95)
    assert bootstrap_median([0.3] * 7) == Interval(0.3, 0.3, 0.3, 7, 0.95)
    assert paired_difference([1, 0, 1], [1, 0, 1]) == Interval(0.0, 0.0, 0.0, 3, 0.95)
    assert win_rate([2, 2], [1, 1]).as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0, "n": 2}
    assert win_rate([1, 1], [1, 1]).value == 0.5  # ties count half


def test_values_on_the_items_as_they_are() -> None:
    x = [0.0, 0.2, 0.4, 0.9, 1.0]
    assert bootstrap_mean(x).value == pytest.approx(0.5)
    assert bootstrap_median(x).value == pytest.approx(0.4)
    assert paired_difference(x, [0.1] * 5).value == pytest.approx(0.4)
    assert win_rate([3, 1, 2, 5], [1, 1, 4, 0]).value == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    for interval in (bootstrap_mean(x), bootstrap_median(x), paired_difference(x, x[::-1])):
        assert interval.low <= interval.value <= interval.high


def test_bernoulli_half_width_matches_the_normal_approximation() -> None:
    # n = 80, p = 0.5: 1.96 * sqrt(0.25 / 80) = 0.110
    rng = np.random.default_rng(7)
    widths = []
    for _ in range(5):
        values = rng.integers(0, 2, size=80)
        interval = bootstrap_mean(values, seed=1)
        widths.append((interval.high - interval.low) / 2)
        assert interval.low < 0.5 < interval.high or abs(values.mean() - 0.5) > 0.1
    assert np.mean(widths) == pytest.approx(0.11, abs=0.02)
    exact = bootstrap_mean([1] * 44 + [0] * 36, seed=0)  # 0.55
    assert exact.value == pytest.approx(0.55)
    assert (exact.high - exact.low) / 2 == pytest.approx(0.11, abs=0.02)


def test_coverage_of_the_mean_is_about_the_level() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for k in range(200):
        interval = bootstrap_mean(rng.normal(1.0, 2.0, size=60), n_boot=500, seed=k)
        hits += interval.low <= 1.0 <= interval.high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_interval_is_narrower_for_correlated_scores() -> None:
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0.0, 1.0, size=100)  # shared by both sources
    a = difficulty + 0.2 + rng.normal(0.0, 0.2, size=100)
    b = difficulty + rng.normal(0.0, 0.2, size=100)
    paired = paired_difference(a, b, seed=0)
    ia, ib = bootstrap_mean(a, seed=1), bootstrap_mean(b, seed=2)
    unpaired = np.hypot(ia.high - ia.low, ib.high - ib.low)  # independent intervals combined
    assert paired.value == pytest.approx(float(np.mean(a - b)))
    assert paired.high - paired.low < 0.3 * unpaired
    assert paired.low > 0  # the 0.2 gain is clear once paired
    assert win_rate(a, b, seed=0).low > 0.5


def test_seeded() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.random(40), rng.random(40)
    for fn, args in ((bootstrap_mean, (x,)), (bootstrap_median, (x,)),
                     (paired_difference, (x, y)), (win_rate, (x, y))):
        assert fn(*args, seed=11) == fn(*args, seed=11)
        # another seed, other resamples (few: a win rate's quantiles are multiples of 1/40)
        assert fn(*args, seed=11, n_boot=50) != fn(*args, seed=12, n_boot=50)
    assert bootstrap_mean(list(x), seed=3) == bootstrap_mean(tuple(x), seed=3)


def test_level_widens_the_interval() -> None:
    x = np.random.default_rng(2).random(50)
    narrow, wide = bootstrap_mean(x, level=0.5), bootstrap_mean(x, level=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    assert wide.level == 0.99


def test_str_and_dict() -> None:
    interval = Interval(0.55, 0.4375, 0.66249, 80, 0.95)
    assert str(interval) == "0.550 [0.438, 0.662] n=80"
    assert interval.as_dict() == {"value": 0.55, "low": 0.4375, "high": 0.6625, "n": 80}
    with pytest.raises(AttributeError):
        interval.value = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bootstrap_mean([]), "values: no values"),
    (lambda: bootstrap_median(np.array([])), "values: no values"),
    (lambda: bootstrap_mean([[1, 2], [3, 4]]), r"values: one value per item.*\(2, 2\)"),
    (lambda: bootstrap_mean([1.0, float("nan")]), "values: 1 value"),
    (lambda: paired_difference([], [1]), "a: no values"),
    (lambda: paired_difference([1], []), "b: no values"),
    (lambda: paired_difference([1, 2, 3], [1, 2]), "b: 2 values for the 3 items of a"),
    (lambda: win_rate([1, 2], [1, 2, 3]), "b: 3 values for the 2 items of a"),
    (lambda: bootstrap_mean([1], n_boot=0), "n_boot"),
    (lambda: bootstrap_mean([1], level=1.0), "level"),
])
def test_errors_name_the_argument(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
