"""Honest comparisons: a paired bootstrap for metric differences, and rank agreement of two rankings.

``paired_bootstrap(metric_fn, frames_a, frames_b)``: ``frames_a[i]`` and ``frames_b[i]`` are the per-frame
records (predictions with their ground truth, or anything ``metric_fn`` understands) of the SAME validation frame
under two configurations (e.g. fp32 and w8a8). Each bootstrap replicate draws ``len(frames)`` frame indices with
replacement and evaluates ``metric_fn`` on that list of frames for both configurations, so both see the same
resampled frames and frame difficulty cancels out of the difference. ``metric_fn`` takes a list of frames and
returns a number, so set-level metrics (mAP, NDS) work as well as means; a resampled list holds some frames more
than once, and ``metric_fn`` must count each copy as a frame of its own (for a detection metric: pool the
per-frame matched detections and ground-truth counts, rather than re-running an evaluator keyed by frame id).
The interval is the percentile interval of the replicate differences.

``spearman`` / ``kendall_tau`` (tau-b, ties handled) compare two score lists; ``rank_agreement`` compares two
rankings (orders of the same names), e.g. the proxy and the full per-layer sensitivity.
"""
import dataclasses
import math
import random

__all__ = ["BootstrapResult", "paired_bootstrap", "spearman", "kendall_tau", "rank_agreement"]


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """``delta`` = metric(b) - metric(a) on all frames; ``low`` / ``high`` its interval at ``confidence``."""

    delta: float
    low: float
    high: float
    confidence: float
    n: int
    metric_a: float
    metric_b: float

    @property
    def excludes_zero(self):
        """True when the interval lies entirely above or below 0 (the difference is resolved)."""
        return self.low > 0 or self.high < 0

    def as_dict(self):
        return {**dataclasses.asdict(self), "excludes_zero": self.excludes_zero}


def _quantile(sorted_values, q):
    """Linear-interpolated quantile (numpy's default) of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def paired_bootstrap(metric_fn, frames_a, frames_b, *, n=1000, seed=0, confidence=0.95):
    """Difference ``metric_fn(frames_b) - metric_fn(frames_a)`` with a paired bootstrap interval.

    Args:
        metric_fn: ``metric_fn(list_of_frames) -> float``; called ``2 * (n + 1)`` times.
        frames_a, frames_b: per-frame records of the same frames, in the same order, under configurations a, b.
        n: bootstrap replicates (>= 10).
        seed: seed of the resampling (the same seed gives the same interval).
        confidence: interval coverage in (0, 1).

    Returns:
        a ``BootstrapResult``.
    """
    frames_a, frames_b = list(frames_a), list(frames_b)
    if len(frames_a) != len(frames_b):
        raise ValueError(f"frames_a and frames_b must hold the same frames (paired), got {len(frames_a)} and "
                         f"{len(frames_b)} records")
    if not frames_a:
        raise ValueError("frames_a / frames_b are empty; pass the per-frame records of the validation frames")
    if not callable(metric_fn):
        raise TypeError("metric_fn must be a callable taking a list of frames and returning a number")
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise ValueError(f"n must be an int >= 10 (bootstrap replicates), got {n!r}")
    if not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}")
    metric_a, metric_b = float(metric_fn(frames_a)), float(metric_fn(frames_b))
    rng = random.Random(seed)
    count = len(frames_a)
    deltas = []
    for _ in range(n):
        idx = [rng.randrange(count) for _ in range(count)]
        deltas.append(float(metric_fn([frames_b[i] for i in idx])) - float(metric_fn([frames_a[i] for i in idx])))
    deltas.sort()
    tail = (1 - confidence) / 2
    return BootstrapResult(metric_b - metric_a, _quantile(deltas, tail), _quantile(deltas, 1 - tail), confidence, n,
                           metric_a, metric_b)


def _ranks(values):
    """Average ranks (1-based; ties share the mean of their positions)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _check_pair(x, y):
    x, y = [float(v) for v in x], [float(v) for v in y]
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two score lists of the same length >= 2, got {len(x)} and {len(y)}")
    if any(math.isnan(v) for v in x + y):
        raise ValueError("scores contain NaN; drop those entries before comparing rankings")
    return x, y


def spearman(x, y):
    """Spearman's rank correlation of two score lists (Pearson correlation of their average ranks)."""
    x, y = _check_pair(x, y)
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var > 0 else math.nan


def kendall_tau(x, y):
    """Kendall's tau-b of two score lists: (concordant - discordant) / sqrt(pairs untied in x * untied in y)."""
    x, y = _check_pair(x, y)
    concordant = discordant = untied_x = untied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            untied_x += dx != 0
            untied_y += dy != 0
            sign = dx * dy
            concordant += sign > 0
            discordant += sign < 0
    denom = math.sqrt(untied_x * untied_y)
    return (concordant - discordant) / denom if denom > 0 else math.nan


def rank_agreement(order_a, order_b):
    """``{"spearman", "kendall", "n"}`` for two rankings (lists of the same names, most important first)."""
    order_a, order_b = list(order_a), list(order_b)
    if sorted(order_a) != sorted(order_b) or len(set(order_a)) != len(order_a):
        raise ValueError("order_a and order_b must rank the same unique names, e.g. the 'layer' columns of two "
                         "sensitivity tables over the same layers")
    pos_b = {name: i for i, name in enumerate(order_b)}
    a, b = list(range(len(order_a))), [pos_b[name] for name in order_a]
    return {"spearman": spearman(a, b), "kendall": kendall_tau(a, b), "n": len(order_a)}
