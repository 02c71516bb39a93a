"""Confidence intervals for the report's means (accuracy over test questions, and the like)."""

from __future__ import annotations

import numpy as np

# Resampled values drawn at a time: bounds memory for large samples (8 bytes each).
_CHUNK_VALUES = 4_000_000


def bootstrap_interval(
    values: list[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the mean of `values`, in the units of the values.

    Deterministic for a given seed. Grades of 0/1 give an interval of fractions; pass percents
    to get one in percent.
    """
    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("bootstrap_interval needs a non-empty list of numbers")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_VALUES // data.size)
    means = np.concatenate([
        data[rng.integers(0, data.size, size=(min(rows, resamples - start), data.size))].mean(axis=1)
        for start in range(0, resamples, rows)
    ])
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
