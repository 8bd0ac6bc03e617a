"""``Backend``: what the PTQ driver (``integration.driver.pipeline``) needs from a detection framework.

One signature per method; the driver calls them in this order: ``import_stack`` -> ``load_config`` ->
``check_data`` -> ``build_model`` -> ``load_weights`` -> ``split_size`` / ``calibration_loader`` -> (per mode)
``calibration_forward`` (through ``ptq.calibrate`` / ``fold_batchnorm`` / ``sensitivity`` / ``reconstruct``, with
``task_loss_fn`` under ``--task-loss``) -> ``evaluate``, and
``metric_columns`` for the table. Errors meant for the user are ``integration.driver.errors.DriverError``.
Under ``--launcher pytorch`` the driver has made the default process group before ``load_config``.
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple

import torch

__all__ = ["Backend", "RowValues", "WARMUP_FRAMES", "FrameTimes"]

#: one evaluation's values: a value per ``metric_columns`` name (nuScenes: "mAP", "NDS" and a "class_AP" dict
#: {class: float or None} giving the "AP <class>" columns; Waymo: "L2 mAPH", ..., "Cyclist L1 mAP")
RowValues = Dict[str, Any]


#: the first frames of every evaluation are timed but left out of ms/frame: they pay one-time costs (oneDNN
#: primitive creation, allocator growth, lazy imports), which would otherwise land on whichever mode runs first
WARMUP_FRAMES = 3


class FrameTimes:
    """ms/frame of one evaluation from per-iteration timings, leaving out the first ``WARMUP_FRAMES`` iterations
    (using them only when the evaluation has no others)."""

    def __init__(self):
        self.warmup_seconds, self.warmup_frames = 0.0, 0
        self.seconds, self.frames = 0.0, 0
        self.iterations = 0

    def add(self, seconds, frames=1):
        """One timed iteration of ``frames`` frames."""
        if self.iterations < WARMUP_FRAMES:
            self.warmup_seconds += seconds
            self.warmup_frames += frames
        else:
            self.seconds += seconds
            self.frames += frames
        self.iterations += 1

    @property
    def ms_per_frame(self):
        seconds, frames = (self.seconds, self.frames) if self.frames else (self.warmup_seconds, self.warmup_frames)
        return 1000.0 * seconds / max(frames, 1)


class Backend(Protocol):
    """A detection framework as the driver sees it (see the module docstring)."""

    name: str
    #: True when ``--launcher pytorch`` may span one node only
    single_node_only: bool

    def import_stack(self) -> str:
        """Import the framework (one-line ``DriverError`` saying what to install); returns a line describing it."""

    def load_config(self, path: str, data_root: Optional[str], work_dir: str) -> Any:
        """The model config at ``path`` with its datasets pointed at ``data_root`` (None: as configured)."""

    def check_data(self, cfg: Any) -> None:
        """Every file the run reads exists and the metric's packages import; else a one-line error."""

    def build_model(self, cfg: Any, device: str) -> torch.nn.Module:
        """The float detector in eval mode on ``device``."""

    def load_weights(self, model: torch.nn.Module, path: str) -> int:
        """Load checkpoint ``path`` (every tensor must fit); returns the number of tensors loaded."""

    def split_size(self, cfg: Any, split: str) -> int:
        """Frames in the ``"train"`` or ``"val"`` split."""

    def calibration_loader(self, cfg: Any, num_frames: int, seed: int, distributed: bool) -> Iterable:
        """Batches of ``num_frames`` training frames drawn without replacement with ``seed``, test-time
        processing; ``distributed``: this rank's share of them (no padding repeats)."""

    def calibration_forward(self, model: torch.nn.Module, batch: Any) -> Any:
        """Run every module a quantizer sits in on ``batch`` (no box decoding / NMS)."""

    def task_loss_fn(self) -> Callable[[Any, Any], torch.Tensor]:
        """``loss(quant output, float output)`` of ``calibration_forward`` outputs for ``--reconstruct --task-loss``
        (``ptq.reconstruct(loss="task")``): a scalar that is 0 when the two agree at the float model's detections."""

    def evaluate(self, model: torch.nn.Module, cfg: Any, work_dir: str, name: str,
                 max_eval_frames: Optional[int], distributed: bool) -> Tuple[RowValues, float]:
        """The config's metric on the val split (its first ``max_eval_frames`` frames when given):
        ``(row values, ms per frame)``; framework outputs go below ``<work_dir>/logs/<name>/``. Under
        ``distributed`` every rank gets the row values."""

    def metric_columns(self, cfg: Any) -> List[str]:
        """The table's metric columns for ``cfg``'s dataset, headline first (``--sensitivity`` ranks by it)."""
