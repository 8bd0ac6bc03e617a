"""Paired bootstrap intervals of a quantized row's mAP / NDS difference to fp32, over validation frames.

``Intervals(baseline_records)`` holds fp32's per-frame records (``integration.data.nuscenes_ap.FrameRecords``);
``intervals.compare(records)`` resamples the validation frames with replacement (the same draws for both, and
the same draws for every row: the seed is fixed) and recomputes both metrics on each resample with the fast
nuScenes metric, giving ``{"mAP": BootstrapResult, "NDS": BootstrapResult}``
(``pytorch_quantization.ptq.stats.paired_bootstrap``). Metrics of a resample are cached, so fp32's are computed
once per draw for all rows and NDS reuses mAP's pass.
"""
from integration.data import nuscenes_ap
from pytorch_quantization.ptq.stats import paired_bootstrap

__all__ = ["Intervals", "REPLICATES", "CONFIDENCE"]

REPLICATES = 1000
CONFIDENCE = 0.95


class Intervals:
    """See the module docstring."""

    def __init__(self, baseline, replicates=REPLICATES, seed=0, confidence=CONFIDENCE):
        self.baseline = baseline
        self.replicates, self.seed, self.confidence = replicates, seed, confidence
        self._cache = {}

    def _metrics(self, frames):
        records = frames[0][0]
        key = (id(records), tuple(i for _, i in frames))
        if key not in self._cache:
            self._cache[key] = nuscenes_ap.metrics(records, [i for _, i in frames])
        return self._cache[key]

    def full(self, records):
        """The fast metric on every frame (equals the devkit's; the study prints the difference as a check)."""
        return nuscenes_ap.metrics(records, range(len(records)))

    def compare(self, records):
        """``{metric: BootstrapResult}`` of ``records`` minus the baseline, for mAP and NDS."""
        records = records.reordered(self.baseline.tokens)
        frames_a = [(self.baseline, i) for i in range(len(self.baseline))]
        frames_b = [(records, i) for i in range(len(records))]
        out = {}
        for metric in ("mAP", "NDS"):
            out[metric] = paired_bootstrap(lambda frames, m=metric: self._metrics(frames)[m], frames_a, frames_b,
                                           n=self.replicates, seed=self.seed, confidence=self.confidence)
        self._cache = {k: v for k, v in self._cache.items() if k[0] == id(self.baseline)}  # keep fp32's draws
        return out
