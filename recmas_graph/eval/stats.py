"""Statistics for evaluation: a bootstrap confidence interval of accuracy and McNemar's exact test.

>>> ci = bootstrap_ci([True] * 7 + [False] * 3, seed=0)
>>> 0.3 < ci[0] < 0.7 < ci[1] <= 1.0
True
>>> mcnemar_exact(b=0, c=6)
0.03125
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ["bootstrap_ci", "bootstrap_mean_ci", "mcnemar_exact", "paired_counts", "paired_sign_counts"]


def bootstrap_ci(correct: Sequence[bool], *, level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the mean of ``correct`` (``(None, None)`` for no samples)."""
    n = len(correct)
    if n == 0:
        return None, None
    values = [1.0 if c else 0.0 for c in correct]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return lo, hi


def bootstrap_mean_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the mean of ``values`` in [0, 1] (e.g. each question's share
    of correct draws); ``(None, None)`` for none.

    >>> bootstrap_mean_ci([0.5, 0.5, 0.5])
    (0.5, 0.5)
    """
    n = len(values)
    if n == 0:
        return None, None
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(list(values), k=n)) / n for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return lo, hi


def paired_sign_counts(a: dict[str, float], b: dict[str, float]) -> tuple[int, int, int]:
    """On the questions both have: (n shared, A higher, B higher), the counts of an exact sign test
    (:func:`mcnemar_exact` of the last two; for 0/1 values it is McNemar's test itself).

    >>> paired_sign_counts({"q1": 0.5, "q2": 1.0, "q3": 0.2}, {"q1": 0.25, "q2": 1.0})
    (2, 1, 0)
    """
    shared = sorted(set(a) & set(b))
    return len(shared), sum(1 for k in shared if a[k] > b[k]), sum(1 for k in shared if b[k] > a[k])


def paired_counts(a: dict[str, bool], b: dict[str, bool]) -> tuple[int, int, int]:
    """On the samples both systems answered: (n shared, A right and B wrong, A wrong and B right)."""
    shared = sorted(set(a) & set(b))
    return (len(shared), sum(1 for k in shared if a[k] and not b[k]), sum(1 for k in shared if b[k] and not a[k]))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c`` (1.0 when none)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
