import pytest

from promptdistill import stats
from promptdistill.stats import bootstrap_interval


def test_equal_values_give_a_zero_width_interval_at_that_value():
    low, high = bootstrap_interval([0.7] * 50)
    assert low == high
    assert low == pytest.approx(0.7)


def test_interval_of_a_fair_coin_matches_the_normal_approximation():
    values = [1.0] * 200 + [0.0] * 200  # p = 0.5, n = 400: 1.96 * sqrt(0.25 / 400) = 0.049
    low, high = bootstrap_interval(values)
    assert low == pytest.approx(0.5 - 0.049, abs=0.01)
    assert high == pytest.approx(0.5 + 0.049, abs=0.01)


def test_interval_is_in_the_units_of_the_values():
    fractions = bootstrap_interval([1.0] * 30 + [0.0] * 70)
    percents = bootstrap_interval([100.0] * 30 + [0.0] * 70)
    assert percents == pytest.approx((100 * fractions[0], 100 * fractions[1]))


def test_interval_is_deterministic_for_a_seed():
    values = [(i * 0.37) % 1 for i in range(40)]
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)


def test_drawing_in_chunks_does_not_change_the_interval(monkeypatch):
    values = [1.0] * 120 + [0.0] * 80
    whole = bootstrap_interval(values, resamples=2_000)
    monkeypatch.setattr(stats, "_CHUNK_VALUES", 1_000)  # 5 resamples per chunk
    assert bootstrap_interval(values, resamples=2_000) == whole


def test_a_higher_confidence_gives_a_wider_interval():
    values = [1.0] * 60 + [0.0] * 40
    narrow, wide = bootstrap_interval(values, confidence=0.5), bootstrap_interval(values, confidence=0.99)
    assert wide[0] < narrow[0] < 0.6 < narrow[1] < wide[1]


@pytest.mark.parametrize("values, options", [([], {}), ([1.0], {"confidence": 1.0}), ([1.0], {"resamples": 0})])
def test_bad_arguments_are_refused(values, options):
    with pytest.raises(ValueError):
        bootstrap_interval(values, **options)
