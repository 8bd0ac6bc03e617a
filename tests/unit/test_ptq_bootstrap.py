"""Paired bootstrap against the analytical interval of a mean difference; rank correlations against known values."""
import math
import random
import statistics

import pytest

from pytorch_quantization.ptq.stats import kendall_tau, paired_bootstrap, rank_agreement, spearman


def _mean(frames):
    return sum(frames) / len(frames)


def _paired_normals(n=400, shift=0.3, seed=0):
    rng = random.Random(seed)
    a = [rng.gauss(0.0, 1.0) for _ in range(n)]
    b = [x + shift + rng.gauss(0.0, 0.5) for x in a]
    return a, b


def test_mean_difference_matches_the_analytical_interval():
    a, b = _paired_normals()
    result = paired_bootstrap(_mean, a, b, n=4000, seed=1)
    diffs = [y - x for x, y in zip(a, b)]
    assert result.delta == pytest.approx(_mean(diffs), abs=1e-12)
    half = 1.959964 * statistics.stdev(diffs) / math.sqrt(len(diffs))  # normal-theory 95% interval of a mean
    assert result.low == pytest.approx(result.delta - half, abs=0.1 * half)
    assert result.high == pytest.approx(result.delta + half, abs=0.1 * half)
    assert result.excludes_zero and result.metric_a == pytest.approx(_mean(a))


def test_pairing_removes_the_shared_frame_variation():
    # frames differ a lot (sd 1) but a and b differ little per frame (sd 0.05): the paired interval is set by
    # the per-frame differences, not by the spread of the frames
    a, b = _paired_normals(n=300, shift=0.0, seed=2)
    b = [x + 0.05 * (y - x) / 0.5 for x, y in zip(a, b)]
    result = paired_bootstrap(_mean, a, b, n=1000, seed=0)
    unpaired_half = 1.96 * math.sqrt((statistics.variance(a) + statistics.variance(b)) / len(a))
    assert result.high - result.low < 0.2 * unpaired_half


def test_identical_inputs_give_a_zero_width_interval_at_zero():
    a, _ = _paired_normals(n=50)
    result = paired_bootstrap(_mean, a, list(a), n=200)
    assert (result.delta, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero


def test_metric_sees_whole_resampled_lists_and_seed_fixes_the_result():
    a, b = _paired_normals(n=30)
    calls = []

    def ratio(frames):  # a set-level metric (like mAP): needs the whole list
        calls.append(len(frames))
        return sum(f > 0 for f in frames) / len(frames)

    first = paired_bootstrap(ratio, a, b, n=50, seed=7)
    assert calls == [30] * (2 * 51)
    assert paired_bootstrap(ratio, a, b, n=50, seed=7) == first
    assert first.as_dict()["excludes_zero"] == first.excludes_zero


def test_bad_arguments():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(_mean, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="n must be"):
        paired_bootstrap(_mean, [1.0], [1.0], n=5)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(_mean, [1.0], [1.0], confidence=95)


def test_rank_correlations_on_known_cases():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))  # 1 - 6 sum d^2 / n(n^2-1)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx((5 - 1) / 6)  # one discordant pair of six
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert rank_agreement(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == {"spearman": 1.0, "kendall": 1.0, "n": 4}
    assert rank_agreement(["a", "b", "c"], ["c", "b", "a"])["kendall"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same unique names"):
        rank_agreement(["a", "b"], ["a", "c"])


def test_rank_correlations_with_ties_agree_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy gives the independent reference values")
    rng = random.Random(3)
    x = [rng.randint(0, 5) for _ in range(40)]
    y = [v + rng.randint(-2, 2) for v in x]
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0], abs=1e-12)
    assert kendall_tau(x, y) == pytest.approx(scipy_stats.kendalltau(x, y)[0], abs=1e-12)
