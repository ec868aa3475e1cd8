"""Statistics the search and the report need: is model A really better than model B on the same rows, and
does the performance model rank rank vectors in the order their measured scores do?

The achievable gain of RankAdaptor is about one point, close to evaluation noise, so a difference is
reported with a paired bootstrap interval rather than as two bare means.
"""

from __future__ import annotations

import numpy as np

from rankadaptor.errors import UserError, check


def paired_bootstrap(rows_a: dict, rows_b: dict, n_boot: int = 10000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean difference A - B of the mean-of-tasks score, low, high) with a percentile bootstrap interval.

    rows_a / rows_b are the "tasks" sections of two metrics.json: {task: {"rows": [0/1...], "row_ids": [...]}},
    evaluated on the same rows. Rows are resampled with replacement within each task, the same rows for A
    and B (paired). A resampled task mean only depends on how often each distinct per-row difference is
    drawn, so each task costs one multinomial draw per replicate instead of n_t row draws."""
    check(set(rows_a) == set(rows_b) and bool(rows_a),
          f"paired bootstrap needs the same tasks on both sides; got {sorted(rows_a)} and {sorted(rows_b)}")
    check(n_boot > 0 and 0.0 < confidence < 1.0, f"n_boot={n_boot} must be > 0 and confidence={confidence} in (0, 1)")
    rng = np.random.default_rng(seed)
    observed, replicates = 0.0, np.zeros(n_boot)
    for task in sorted(rows_a):
        a, b = rows_a[task], rows_b[task]
        if a["row_ids"] != b["row_ids"] or len(a["rows"]) != len(a["row_ids"]) or len(b["rows"]) != len(b["row_ids"]):
            raise UserError(f"task {task!r} was not evaluated on the same rows by both models: compare "
                            "evaluations of the same split, limit and seed")
        diff = np.asarray(a["rows"], dtype=float) - np.asarray(b["rows"], dtype=float)
        check(diff.size > 0, f"task {task!r} has no rows")
        values, counts = np.unique(diff, return_counts=True)
        draws = rng.multinomial(diff.size, counts / diff.size, size=n_boot)
        observed += diff.mean()
        replicates += draws @ values / diff.size
    n_tasks = len(rows_a)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(replicates / n_tasks, [tail, 100 - tail])
    return float(observed / n_tasks), float(low), float(high)


def kendall_tau(pred, measured) -> float:
    """Kendall's tau-b between predicted and measured scores: 1 when the predictor orders trials exactly
    as measured, -1 when reversed (nan when either side is constant)."""
    from scipy.stats import kendalltau

    check(len(pred) == len(measured) and len(pred) >= 2,
          f"kendall_tau needs two sequences of the same length >= 2; got {len(pred)} and {len(measured)}")
    return float(kendalltau(pred, measured).statistic)


RANK_CORRELATIONS = ("kendall", "spearman")


def kendall_tau_interval(pred, measured, n_boot: int = 1000, seed: int = 0,
                         confidence: float = 0.95) -> tuple[float | None, float | None]:
    """A percentile bootstrap interval of Kendall's tau over (pred, measured) pairs resampled together; wide
    for the few trials a search runs, which is the point of showing it. (None, None) when no resample has
    two distinct values on both sides."""
    return rank_correlation_interval(pred, measured, "kendall", n_boot, seed, confidence)


def rank_correlation_interval(pred, measured, method: str = "kendall", n_boot: int = 1000, seed: int = 0,
                              confidence: float = 0.95) -> tuple[float | None, float | None]:
    """kendall_tau_interval for Kendall's tau-b or Spearman's rho (method): how well a cheap measurement
    orders rank vectors as the real one does, with its uncertainty over the vectors."""
    from scipy.stats import kendalltau, spearmanr

    check(method in RANK_CORRELATIONS, f"method={method!r} is not accepted; use one of {RANK_CORRELATIONS}")
    check(len(pred) == len(measured) and len(pred) >= 2,
          f"a rank correlation interval needs two sequences of the same length >= 2; got {len(pred)} and "
          f"{len(measured)}")
    statistic = kendalltau if method == "kendall" else spearmanr
    pred, measured = np.asarray(pred, float), np.asarray(measured, float)
    rng = np.random.default_rng(seed)
    values = [statistic(pred[i], measured[i]).statistic
              for i in rng.integers(0, len(pred), (n_boot, len(pred)))]
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not values.size:
        return None, None
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
