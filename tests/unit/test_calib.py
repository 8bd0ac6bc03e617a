"""Tests of pytorch_quantization.calib against references computed here with numpy / plain loops."""
import math
import multiprocessing

import numpy as np
import pytest
import torch

from pytorch_quantization import calib
from pytorch_quantization.calib import amax_search
from pytorch_quantization.calib.histogram_bins import rebin


def _rng(seed=0):
    return np.random.default_rng(seed)


def _t(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _expected_range(data_max):
    """Smallest power of two strictly above data_max * (1 + 2**-11) (the documented layout rule)."""
    exponent = math.floor(math.log2(data_max * (1 + 2.0 ** -11))) + 1
    return 2.0 ** exponent


# ----------------------------------------------------------------------------------------------- MaxCalibrator
class TestMaxCalibrator:

    def test_per_tensor_running_max(self):
        batches = [_rng(i).normal(size=(4, 5)) * (i + 1) for i in range(3)]
        calibrator = calib.MaxCalibrator(8, None, False)
        assert calibrator.compute_amax() is None
        for batch in batches:
            calibrator.collect(_t(batch))
        amax = calibrator.compute_amax()
        assert amax.shape == ()
        assert amax.item() == pytest.approx(np.abs(np.concatenate(batches)).max(), rel=1e-6)

    @pytest.mark.parametrize("axis, keep", [(0, (0,)), ((0,), (0,)), (-1, (3,)), ((1, 2), (1, 2))])
    def test_per_channel_running_max(self, axis, keep):
        batches = [_rng(i).normal(size=(3, 4, 5, 6)) for i in range(4)]
        calibrator = calib.MaxCalibrator(8, axis, False)
        for batch in batches:
            calibrator.collect(_t(batch))
        reduce = tuple(i for i in range(4) if i not in keep)
        expected = np.max([np.abs(b).max(axis=reduce, keepdims=True) for b in batches], axis=0)
        amax = calibrator.compute_amax()
        assert tuple(amax.shape) == expected.shape
        np.testing.assert_allclose(amax.numpy(), expected, rtol=1e-6)

    def test_track_amax_keeps_copies(self):
        calibrator = calib.MaxCalibrator(8, 0, False, track_amax=True)
        small, large = np.full((2, 3), 1.0), np.full((2, 3), 5.0)
        calibrator.collect(_t(small))
        calibrator.collect(_t(large))
        assert len(calibrator.amaxs) == 2
        np.testing.assert_array_equal(calibrator.amaxs[0], np.ones((2, 1)))
        np.testing.assert_array_equal(calibrator.amaxs[1], np.full((2, 1), 5.0))
        np.testing.assert_array_equal(calibrator.compute_amax().numpy(), np.full((2, 1), 5.0))
        assert "amaxs=" in repr(calibrator) and "track_amax=True" in str(calibrator)

    def test_amaxs_none_without_tracking_and_reset(self):
        calibrator = calib.MaxCalibrator(8, None, False)
        assert calibrator.amaxs is None
        calibrator.collect(torch.ones(3))
        calibrator.reset()
        assert calibrator.compute_amax() is None

    def test_returned_amax_not_mutated_by_later_batches(self):
        calibrator = calib.MaxCalibrator(8, None, False)
        calibrator.collect(torch.ones(3))
        first = calibrator.compute_amax()
        calibrator.collect(torch.full((3,), 7.0))
        assert first.item() == 1.0 and calibrator.compute_amax().item() == 7.0

    def test_errors(self):
        calibrator = calib.MaxCalibrator(8, 0, False)
        with pytest.raises(ValueError, match="NaN"):
            calibrator.collect(torch.tensor([[1.0, float("nan")]]))
        with pytest.raises(ValueError, match="NaN or Inf"):
            calibrator.collect(torch.tensor([[1.0, float("inf")]]))
        with pytest.raises(TypeError, match="tensors"):
            calibrator.collect([[1.0, 2.0]])
        calibrator.collect(torch.ones(2, 3))
        with pytest.raises(RuntimeError, match="^amax shape changed!"):
            calibrator.collect(torch.ones(3, 3))
        with pytest.raises(ValueError, match="unsigned"):
            calib.MaxCalibrator(8, None, True).collect(torch.tensor([-1.0, 2.0]))
        with pytest.raises(ValueError, match="num_bits must be > 0"):
            calib.MaxCalibrator(-1, None, False)

    @pytest.mark.parametrize("make", [lambda: calib.MaxCalibrator(8, None, False),
                                      lambda: calib.HistogramCalibrator(8, None, False, num_bins=64)])
    def test_integer_tensors_calibrate_like_their_float_values(self, make):
        """2.2.1 collects integer tensors; the result equals collecting the same values as float32."""
        ints, floats = make(), make()
        for batch in (torch.tensor([0, 3, -7, 5]), torch.tensor([[2, 9], [-1, 0]])):
            ints.collect(batch)
            floats.collect(batch.float())
        args = ("percentile",) if isinstance(ints, calib.HistogramCalibrator) else ()
        torch.testing.assert_close(ints.compute_amax(*args), floats.compute_amax(*args), rtol=0, atol=0)

    def test_empty_batch_is_ignored(self):
        calibrator = calib.MaxCalibrator(8, None, False)
        calibrator.collect(torch.empty(0))
        assert calibrator.compute_amax() is None


# ----------------------------------------------------------------------------------------- histogram collection
class TestHistogramCollection:

    def test_counts_match_numpy_histogram(self):
        x = _rng(1).normal(size=10000).astype(np.float32) * 3
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=512)
        calibrator.collect(_t(x))
        edges = calibrator._calib_bin_edges.numpy()
        assert calibrator.calib_range == _expected_range(np.abs(x).max())
        assert edges[0] == 0 and edges[-1] == calibrator.calib_range and len(edges) == 513
        expected, _ = np.histogram(np.abs(x), bins=edges)
        np.testing.assert_array_equal(calibrator._calib_hist.numpy(), expected)
        assert calibrator._calib_hist.dtype == torch.int64

    def test_growth_equals_one_pass_in_any_order(self):
        rng = _rng(2)
        batches = [rng.normal(size=3000).astype(np.float32) * scale for scale in (0.5, 3.0, 0.1, 40.0, 7.0)]
        one_pass = calib.HistogramCalibrator(8, None, False, num_bins=1000)
        one_pass.collect(_t(np.concatenate(batches)))
        for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
            grown = calib.HistogramCalibrator(8, None, False, num_bins=1000)
            for i in order:
                grown.collect(_t(batches[i]))
            assert grown.calib_range == one_pass.calib_range
            assert torch.equal(grown._calib_hist, one_pass._calib_hist)
            assert grown._calib_hist.numel() == 1000  # bounded memory whatever the range growth
        expected, _ = np.histogram(np.abs(np.concatenate(batches)), bins=one_pass._calib_bin_edges.numpy())
        np.testing.assert_array_equal(one_pass._calib_hist.numpy(), expected)

    def test_rebin_merges_adjacent_bins(self):
        counts = torch.arange(8, dtype=torch.int64)
        assert rebin(counts, 1.0, 4.0).tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 0, 0, 0, 0, 0, 0]
        with pytest.raises(ValueError, match="power of two"):
            rebin(counts, 1.0, 3.0)

    def test_half_and_double_inputs(self):
        x = _rng(3).uniform(-2, 2, size=4096)
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            data = torch.from_numpy(x).to(dtype)
            calibrator = calib.HistogramCalibrator(8, None, False, num_bins=256)
            calibrator.collect(data)
            values = data.float().abs().numpy()
            expected, _ = np.histogram(values, bins=calibrator._calib_bin_edges.numpy())
            np.testing.assert_array_equal(calibrator._calib_hist.numpy(), expected)

    def test_all_zero_data_then_growth(self):
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=64)
        calibrator.collect(torch.zeros(100))
        assert calibrator.compute_amax("percentile").item() == 0.0
        assert calibrator.compute_amax("mse").item() == 0.0
        calibrator.collect(torch.tensor([0.0, 3.0]))
        assert calibrator._calib_hist[0].item() == 101 and calibrator._calib_hist.sum().item() == 102

    def test_skip_zeros_counts(self):
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=64, skip_zeros=True)
        calibrator.collect(torch.tensor([0.0, 0.0, -1.0, 2.0]))
        assert calibrator._calib_hist.sum().item() == 2
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=64, skip_zeros=True)
        calibrator.collect(torch.zeros(10))
        assert calibrator.compute_amax("percentile").item() == 0.0

    def test_input_errors(self):
        calibrator = calib.HistogramCalibrator(8, None, False)
        with pytest.raises(ValueError, match="NaN"):
            calibrator.collect(torch.tensor([1.0, float("nan")]))
        with pytest.raises(ValueError, match="Inf"):
            calibrator.collect(torch.tensor([1.0, -float("inf")]))
        with pytest.raises(ValueError, match="unsigned"):
            calib.HistogramCalibrator(8, None, True).collect(torch.tensor([-0.5, 1.0]))
        with pytest.raises(NotImplementedError, match="^Calibrator histogram collection only supports per tensor"):
            calib.HistogramCalibrator(8, 0, False)
        with pytest.raises(ValueError, match="num_bins"):
            calib.HistogramCalibrator(8, None, False, num_bins=1)
        with pytest.warns(DeprecationWarning, match="grow_method"):
            calib.HistogramCalibrator(8, None, False, grow_method="stretch")
        assert calibrator._calib_hist is None  # failed collects left no partial state

    def test_compute_amax_before_collect_warns_and_returns_none(self):
        calibrator = calib.HistogramCalibrator(8, None, False)
        with pytest.warns(UserWarning, match="before collect"):
            assert calibrator.compute_amax("entropy") is None
        assert "None" in str(calibrator)

    def test_compute_amax_argument_errors(self):
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=256)
        calibrator.collect(_t(_rng(4).normal(size=1000)))
        with pytest.raises(TypeError, match="^Unknown calibration method"):
            calibrator.compute_amax("max")
        with pytest.raises(ValueError, match="^Invalid percentile. Must be in range 0 <= percentile <= 100."):
            calibrator.compute_amax("percentile", percentile=101)
        with pytest.raises(ValueError, match="start_bin"):
            calibrator.compute_amax("mse", start_bin=300)
        with pytest.raises(ValueError, match="stride"):
            calibrator.compute_amax("entropy", stride=0)
        with pytest.raises(ValueError, match="integer num_bits"):
            fp8 = calib.HistogramCalibrator((4, 3), None, False, num_bins=256)
            fp8.collect(torch.ones(4))
            fp8.compute_amax("entropy")


# ------------------------------------------------------------------------------------------------ amax methods
def _collected(x, num_bins, **kwargs):
    calibrator = calib.HistogramCalibrator(kwargs.pop("num_bits", 8), None, kwargs.pop("unsigned", False),
                                           num_bins=num_bins, **kwargs)
    calibrator.collect(_t(x))
    return calibrator


class TestPercentile:

    @pytest.mark.parametrize("percentile", [50.0, 90.0, 99.0, 99.9])
    def test_against_numpy_percentile(self, percentile):
        x = _rng(5).normal(size=20000).astype(np.float32)
        calibrator = _collected(x, 2048)
        width = calibrator.calib_range / 2048
        amax = calibrator.compute_amax("percentile", percentile=percentile)
        assert amax.dtype == torch.float32 and amax.shape == ()
        amax = amax.item()
        magnitude = np.abs(x)
        # the sample quantile with the same definition (smallest v with at least p% of values <= v) lies in the
        # bin whose upper edge is amax
        assert 0 < amax - np.percentile(magnitude, percentile, method="inverted_cdf") <= width
        # the documented guarantee: at most (100 - p)% above amax, and amax is the first bin edge with that property
        assert np.mean(magnitude > amax) <= (100 - percentile) / 100
        assert np.mean(magnitude >= amax - width) > (100 - percentile) / 100

    def test_hundred_percent_is_the_data_max(self):
        x = _rng(6).normal(size=1000).astype(np.float32)
        assert _collected(x, 512).compute_amax("percentile", percentile=100).item() == np.abs(x).max()

    def test_skip_zeros_on_sparse_bev_features(self):
        rng = _rng(7)
        features = np.zeros(50000, dtype=np.float32)
        nonzero = rng.random(50000) < 0.1
        features[nonzero] = np.abs(rng.normal(size=nonzero.sum())) * 2
        dense = _collected(features, 2048)
        sparse = _collected(features, 2048, skip_zeros=True)
        width = dense.calib_range / 2048
        amax_dense = dense.compute_amax("percentile", percentile=99).item()
        amax_sparse = sparse.compute_amax("percentile", percentile=99).item()
        assert 0 < amax_dense - np.percentile(features, 99, method="inverted_cdf") <= width
        assert 0 < amax_sparse - np.percentile(features[nonzero], 99, method="inverted_cdf") <= width
        assert amax_sparse - amax_dense > 10 * width


def _first_principles_fake_quant(x, amax, bound=127):
    scale = bound / amax
    return np.clip(np.round(x * scale), -bound, bound) / scale


class TestMse:

    def _histogram_errors(self, calibrator, start_bin, bound=127):
        counts = calibrator._calib_hist.numpy().astype(np.float64)
        width = calibrator.calib_range / counts.size
        centers = (np.arange(counts.size) + 0.5) * width
        last = np.nonzero(counts)[0].max()
        candidates = np.arange(start_bin, last + 1)
        errors = np.array([np.sum(counts * (_first_principles_fake_quant(centers, (i + 0.5) * width, bound) - centers)
                                  ** 2) for i in candidates])
        return (candidates + 0.5) * width, errors

    def test_matches_brute_force_histogram_search(self):
        x = _rng(8).laplace(size=20000).astype(np.float32)
        calibrator = _collected(x, 1024, num_bits=4)
        amax = calibrator.compute_amax("mse").item()
        amaxs, errors = self._histogram_errors(calibrator, 128, bound=7)
        chosen = np.argmin(np.abs(amaxs - amax))
        assert amaxs[chosen] == pytest.approx(amax, rel=1e-6)
        assert errors[chosen] <= errors.min() * (1 + 1e-6)
        assert amax < 0.9 * np.abs(x).max()  # an interior optimum, not the data max

    def test_outliers_dominate_the_error(self):
        rng = _rng(8)
        x = np.concatenate([rng.normal(size=20000), rng.choice([-1, 1], 30) * 40]).astype(np.float32)
        calibrator = _collected(x, 1024)
        amaxs, errors = self._histogram_errors(calibrator, 128)
        # the best candidate is the last bin's center, which the calibrator caps at the data max
        assert np.argmin(errors) == errors.size - 1
        assert calibrator.compute_amax("mse").item() == np.abs(x).max()

    def test_stride_and_start_bin_restrict_candidates(self):
        x = _rng(9).normal(size=5000).astype(np.float32)
        calibrator = _collected(x, 512)
        width = calibrator.calib_range / 512
        amax = calibrator.compute_amax("mse", stride=7, start_bin=300).item()
        index = amax / width - 0.5
        assert index == pytest.approx(round(index)) and round(index) >= 300 and (round(index) - 300) % 7 == 0

    def test_near_optimal_on_raw_data(self):
        rng = _rng(10)
        x = np.concatenate([rng.uniform(-1, 1, 20000), rng.choice([-1, 1], 10) * 8]).astype(np.float64)
        calibrator = _collected(x, 2048, num_bits=4)
        amax = calibrator.compute_amax("mse").item()
        raw = lambda a: np.mean((_first_principles_fake_quant(x, a, bound=7) - x) ** 2)  # noqa: E731
        grid = np.linspace(0.3, 8.0, 3000)
        best = min(raw(a) for a in grid)
        assert raw(amax) <= best * 1.05
        assert amax < 4.0  # the outliers at 8 are clipped

    def test_e4m3(self):
        x = _rng(11).normal(size=4000).astype(np.float32)
        calibrator = _collected(x, 512, num_bits=(4, 3))
        amax = calibrator.compute_amax("mse").item()
        assert 0 < amax <= np.abs(x).max()


def _slow_entropy_divergences(counts, num_bits, unsigned, start_bin, stride):
    """TensorRT-style KL search written as plain loops: {candidate bins i: divergence}."""
    bins = [int(c) for c in counts]
    bins[0] = bins[1]
    levels = 2 ** (num_bits - 1 + int(unsigned))
    last = max(j for j, c in enumerate(counts) if c > 0)
    result = {}
    for i in range(start_bin, last + 2, stride):
        reference = bins[:i]
        reference[-1] += sum(bins[i:])
        members = {}
        for j in range(i):
            if bins[j] > 0:
                members.setdefault(j * levels // i, []).append(j)
        quantized = [0.0] * i
        for group in members.values():
            mean = sum(bins[j] for j in group) / len(group)
            for j in group:
                quantized[j] = mean
        p_total, q_total = sum(reference), sum(quantized)
        divergence = 0.0
        for p, q in zip(reference, quantized):
            if p > 0:
                if q == 0:
                    divergence = math.inf
                    break
                divergence += p / p_total * math.log((p / p_total) / (q / q_total))
        result[i] = divergence
    return result


class TestEntropy:

    @pytest.mark.parametrize("num_bits, unsigned, stride", [(8, False, 1), (7, True, 5)])
    def test_matches_slow_kl_loop(self, num_bits, unsigned, stride):
        rng = _rng(12)
        x = np.concatenate([np.abs(rng.laplace(size=30000)), rng.uniform(5, 12, 40)]).astype(np.float32)
        calibrator = _collected(x, 512, num_bits=num_bits, unsigned=unsigned)
        counts = calibrator._calib_hist.numpy()
        slow = _slow_entropy_divergences(counts, num_bits, unsigned, 128, stride)
        cand, fast = amax_search.entropy_divergences(calibrator._calib_hist, num_bits, unsigned, stride, 128)
        assert cand.tolist() == list(slow)
        np.testing.assert_allclose(fast.numpy(), list(slow.values()), rtol=1e-9, atol=1e-12)
        finite = {i: d for i, d in slow.items() if math.isfinite(d)}
        best = min(finite.values())
        last_best = max(i for i, d in finite.items() if d == best)
        width = calibrator.calib_range / 512
        amax = calibrator.compute_amax("entropy", stride=stride).item()
        assert amax == pytest.approx(min(last_best * width, np.abs(x).max()), rel=1e-6)

    def test_infinite_divergence_when_clipped_mass_lands_in_empty_bin(self):
        counts = torch.zeros(256, dtype=torch.int64)
        counts[:100] = 50
        counts[200] = 3  # an outlier, with empty bins before it
        cand, divergence = amax_search.entropy_divergences(counts, 8, False, 1, 128)
        slow = _slow_entropy_divergences(counts.numpy(), 8, False, 128, 1)
        assert math.isinf(slow[150]) and math.isinf(divergence[cand.tolist().index(150)].item())


# ------------------------------------------------------------------------------------- state, merge, all_reduce
class TestHistogramState:

    def _data(self):
        rng = _rng(13)
        return rng.normal(size=5000).astype(np.float32), rng.normal(size=7000).astype(np.float32) * 30

    def test_merge_equals_one_pass(self):
        a, b = self._data()
        first, second = _collected(a, 1024), _collected(b, 1024)
        first.merge(second)
        one_pass = _collected(np.concatenate([a, b]), 1024)
        assert first.calib_range == one_pass.calib_range
        assert torch.equal(first._calib_hist, one_pass._calib_hist)
        for method in ("entropy", "mse", "percentile"):
            assert first.compute_amax(method).item() == one_pass.compute_amax(method).item()

    def test_merge_into_empty_and_from_empty(self):
        a, _ = self._data()
        empty = calib.HistogramCalibrator(8, None, False, num_bins=1024)
        full = _collected(a, 1024)
        empty.merge(full)
        assert torch.equal(empty._calib_hist, full._calib_hist)
        empty._calib_hist[0] += 1  # a copy, not shared storage
        assert not torch.equal(empty._calib_hist, full._calib_hist)
        before = full._calib_hist.clone()
        full.merge(calib.HistogramCalibrator(8, None, False, num_bins=1024))
        assert torch.equal(full._calib_hist, before)

    def test_merge_errors(self):
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=64)
        with pytest.raises(ValueError, match="num_bins"):
            calibrator.merge(calib.HistogramCalibrator(8, None, False, num_bins=128))
        with pytest.raises(ValueError, match="skip_zeros"):
            calibrator.merge(calib.HistogramCalibrator(8, None, False, num_bins=64, skip_zeros=True))
        with pytest.raises(TypeError, match="HistogramCalibrator"):
            calibrator.merge(calib.MaxCalibrator(8, None, False))

    def test_state_dict_round_trip_through_torch_save(self, tmp_path):
        a, b = self._data()
        calibrator = _collected(np.concatenate([a, b]), 1024)
        torch.save(calibrator.state_dict(), tmp_path / "hist.pt")
        restored = calib.HistogramCalibrator(8, None, False, num_bins=1024)
        restored.load_state_dict(torch.load(tmp_path / "hist.pt"))
        assert torch.equal(restored._calib_hist, calibrator._calib_hist)
        assert restored.compute_amax("mse").item() == calibrator.compute_amax("mse").item()
        restored.collect(_t(a))  # keeps collecting from the restored state
        calibrator.collect(_t(a))
        assert torch.equal(restored._calib_hist, calibrator._calib_hist)

    def test_load_state_dict_errors(self):
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=8)
        good = {"num_bins": 8, "skip_zeros": False, "calib_hist": torch.zeros(8, dtype=torch.int64), "calib_max": 1.0}
        calibrator.load_state_dict(good)
        with pytest.raises(ValueError, match="keys"):
            calibrator.load_state_dict({"num_bins": 8})
        with pytest.raises(ValueError, match="int64"):
            calibrator.load_state_dict({**good, "calib_hist": torch.zeros(8)})
        with pytest.raises(ValueError, match="both"):
            calibrator.load_state_dict({**good, "calib_max": None})
        with pytest.raises(ValueError, match="num_bins"):
            calibrator.load_state_dict({**good, "num_bins": 16})

    def test_all_reduce_needs_initialized_process_group(self):
        with pytest.raises(RuntimeError, match="init_process_group"):
            calib.HistogramCalibrator(8, None, False).all_reduce()

    def test_all_reduce_over_two_processes_equals_one_pass(self, tmp_path):
        import torch.distributed as dist  # pylint: disable=import-outside-toplevel
        if not dist.is_available() or not dist.is_gloo_available():
            pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("needs the fork start method (spawning would re-import torch in each worker: too slow)")
        shards = [_rng(20 + rank).normal(size=3000).astype(np.float32) * (1 + 9 * rank) for rank in range(2)]
        for rank, shard in enumerate(shards):
            np.save(tmp_path / f"shard{rank}.npy", shard)
        # fork: the children reuse this process's imports (spawn would re-import torch in each)
        torch.multiprocessing.start_processes(_all_reduce_worker, args=(2, str(tmp_path)), nprocs=2, join=True,
                                              start_method="fork")
        one_pass = _collected(np.concatenate(shards), 512)
        for rank in range(2):
            state = torch.load(tmp_path / f"state{rank}.pt")
            assert state["calib_max"] == one_pass._calib_max
            assert torch.equal(state["calib_hist"], one_pass._calib_hist)


def _all_reduce_worker(rank, world_size, folder):
    import torch.distributed as dist  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        calibrator = calib.HistogramCalibrator(8, None, False, num_bins=512)
        calibrator.collect(_t(np.load(f"{folder}/shard{rank}.npy")))
        calibrator.all_reduce()
        torch.save(calibrator.state_dict(), f"{folder}/state{rank}.pt")
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------- calibrate_weights
class _StandInQuantizer:
    """What calibrate_weights needs from a weight quantizer: num_bits, unsigned and an amax setter."""

    def __init__(self):
        self.num_bits, self.unsigned, self.amax = 8, False, None


class _StandInLinear(torch.nn.Linear):

    def __init__(self, *args):
        super().__init__(*args)
        self.weight_quantizer = _StandInQuantizer()


class _StandInConvTranspose(torch.nn.ConvTranspose2d):

    def __init__(self, *args):
        super().__init__(*args)
        self.weight_quantizer = _StandInQuantizer()


class TestCalibrateWeights:

    def _model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(_StandInLinear(300, 4), torch.nn.ReLU(), _StandInConvTranspose(4, 3, 5))

    def test_max_per_channel(self):
        model = self._model()
        calib.calibrate_weights(model, method="max")
        linear, deconv = model[0], model[2]
        expected = linear.weight.detach().abs().numpy().max(axis=1, keepdims=True)
        np.testing.assert_array_equal(linear.weight_quantizer.amax.numpy(), expected)
        expected = deconv.weight.detach().abs().numpy().max(axis=(0, 2, 3), keepdims=True)
        assert deconv.weight_quantizer.amax.shape == (1, 3, 1, 1)  # output channels of a transposed conv: axis 1
        np.testing.assert_array_equal(deconv.weight_quantizer.amax.numpy(), expected)

    def test_percentile_per_tensor_and_per_channel(self):
        model = self._model()
        calib.calibrate_weights(model, method="percentile", perchannel=False, percentile=90, num_bins=256)
        weight = np.abs(model[0].weight.detach().numpy())
        width = _expected_range(weight.max()) / 256
        assert abs(model[0].weight_quantizer.amax.item() - np.percentile(weight, 90)) <= width
        calib.calibrate_weights(model, method="percentile", percentile=90, num_bins=256)
        amax = model[0].weight_quantizer.amax.numpy().ravel()
        for row, value in zip(weight, amax):
            assert abs(value - np.percentile(row, 90)) <= _expected_range(row.max()) / 256

    def test_mse_stays_within_channel_max(self):
        model = self._model()
        calib.calibrate_weights(model, method="mse", num_bins=256)
        amax = model[0].weight_quantizer.amax.numpy()
        assert amax.shape == (4, 1)
        assert np.all(amax > 0) and np.all(amax <= np.abs(model[0].weight.detach().numpy()).max(axis=1, keepdims=True))

    def test_bad_method(self):
        with pytest.raises(ValueError, match="method"):
            calib.calibrate_weights(self._model(), method="entropy")

    def test_with_package_quant_modules(self):
        try:
            from pytorch_quantization.nn import QuantConv2d  # pylint: disable=import-outside-toplevel
        except ImportError as error:
            pytest.skip(f"pytorch_quantization.nn.QuantConv2d not importable yet: {error}")
        torch.manual_seed(1)
        model = torch.nn.Sequential(QuantConv2d(3, 6, 3))
        calib.calibrate_weights(model, method="max")
        expected = model[0].weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
        assert torch.equal(model[0].weight_quantizer.amax.reshape(expected.shape), expected)


def test_tensor_quantizer_uses_histogram_calibrator():
    try:
        from pytorch_quantization.nn import TensorQuantizer  # pylint: disable=import-outside-toplevel
        from pytorch_quantization.tensor_quant import QuantDescriptor  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        pytest.skip(f"pytorch_quantization.nn.TensorQuantizer not importable yet: {error}")
    batches = [_rng(30 + i).normal(size=2000).astype(np.float32) * (i + 1) for i in range(3)]
    quantizer = TensorQuantizer(QuantDescriptor(calib_method="histogram"))
    quantizer.disable_quant()
    quantizer.enable_calib()
    for batch in batches:
        quantizer(_t(batch))
    quantizer.load_calib_amax("percentile", percentile=99.0)
    expected = _collected(np.concatenate(batches), 2048).compute_amax("percentile", percentile=99.0)
    assert quantizer.amax.item() == expected.item()
