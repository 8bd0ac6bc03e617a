"""``WaymoOpMetric``: MMDetection3D's ``WaymoMetric`` evaluated with the official metrics op.

MMDetection3D 1.4's ``WaymoMetric`` formats predictions into a ``metrics_pb2.Objects`` file with its own
``Prediction2Waymo`` and then shells out to ``compute_detection_metrics_main``, a binary no package ships.
This subclass keeps the formatting and replaces only that call: the file goes to
``integration.data.waymo.metric.evaluate`` (``py_metrics_ops.detection_metrics`` in the TensorFlow 2.13
environment, official settings) and the result uses ``WaymoMetric``'s keys (``Vehicle/L1 mAP`` ...,
``Overall/L2 mAPH``). ``restrict_to_evaluated_frames``: ground truth of the frames that were evaluated only
(the driver's ``--max-eval-frames``). Registered in ``mmdet3d.registry.METRICS``; configs load it with
``custom_imports``.
"""
import os
import tempfile

from mmdet3d.evaluation.metrics import WaymoMetric
from mmdet3d.registry import METRICS
from mmengine.logging import print_log

from integration.data.waymo.metric import evaluate, official_lines
from integration.data.waymo.protos import waymo_module

__all__ = ["WaymoOpMetric", "ground_truth_of_frames"]


def ground_truth_of_frames(gt_path, frames, out_path):
    """Write the objects of ``gt_path`` whose (context name, timestamp) is in ``frames`` to ``out_path``."""
    metrics_pb2 = waymo_module("protos.metrics_pb2")
    objects = metrics_pb2.Objects()
    with open(gt_path, "rb") as f:
        objects.ParseFromString(f.read())
    kept = metrics_pb2.Objects()
    kept.objects.extend(o for o in objects.objects if (o.context_name, o.frame_timestamp_micros) in frames)
    with open(out_path, "wb") as f:
        f.write(kept.SerializeToString())
    return len(kept.objects)


@METRICS.register_module()
class WaymoOpMetric(WaymoMetric):
    """``WaymoMetric`` (3D detection, metric ``mAP``) without the missing binary; see the module docstring."""

    def __init__(self, waymo_bin_file, restrict_to_evaluated_frames=False, **kwargs):
        if kwargs.get("metric", "mAP") not in ("mAP", ["mAP"]):
            raise ValueError(f"WaymoOpMetric computes metric 'mAP' (with mAPH) only, got {kwargs['metric']!r}")
        super().__init__(waymo_bin_file, **kwargs)
        self.restrict_to_evaluated_frames = restrict_to_evaluated_frames
        self._frames = set()

    def compute_metrics(self, results):
        self._frames = {(r["context_name"], int(r["timestamp"])) for r in results}
        return super().compute_metrics(results)

    def waymo_evaluate(self, result_prefix, metric=None, logger=None):
        with tempfile.TemporaryDirectory(prefix="waymo_gt_") as folder:
            gt = self.waymo_bin_file
            if self.restrict_to_evaluated_frames:
                gt = os.path.join(folder, "gt.bin")
                kept = ground_truth_of_frames(self.waymo_bin_file, self._frames, gt)
                print_log(f"Waymo ground truth restricted to the {len(self._frames)} evaluated frames "
                          f"({kept} objects)", logger=logger)
            result = evaluate(gt, f"{result_prefix}.bin")
        print_log("\n".join(official_lines(result["breakdowns"])), logger=logger)
        return {key: value for key, value in result.items() if key != "breakdowns"}
