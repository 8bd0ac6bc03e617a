"""Combining activation statistics across ``torch.distributed`` ranks after a calibration pass.

Every rank calls ``reduce_calibrators`` with the quantizers of the same model, in the same order. Max
calibrators: element-wise MAX all-reduce of the running amax (a rank that saw nothing contributes zeros).
Histogram calibrators: ``HistogramCalibrator.all_reduce`` (MAX of the data max, then SUM of the counts re-binned
to the common power-of-two range), which is exact. Afterwards every rank holds the statistics one process would
have collected from all ranks' data, so all ranks compute identical amaxes.
"""
import torch

from pytorch_quantization.calib import HistogramCalibrator, MaxCalibrator

__all__ = ["world_size", "reduce_calibrators"]


def world_size(group=None) -> int:
    """Number of ranks in ``group``, or 1 when torch.distributed is not initialized."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size(group)


def _comm_device(group):
    dist = torch.distributed
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_calibrators(calibrators: list, group=None) -> None:
    """All-reduce a list of calibrators (MaxCalibrator / HistogramCalibrator) in place; no-op on one rank."""
    if world_size(group) == 1:
        return
    dist = torch.distributed
    device = _comm_device(group)
    max_cals = [c for c in calibrators if isinstance(c, MaxCalibrator)]
    if max_cals:
        local_shapes = [None if c.compute_amax() is None else tuple(c.compute_amax().shape) for c in max_cals]
        all_shapes = [None] * world_size(group)
        dist.all_gather_object(all_shapes, local_shapes, group=group)
        for i, cal in enumerate(max_cals):
            shapes = {s[i] for s in all_shapes if s[i] is not None}
            if not shapes:
                continue
            if len(shapes) > 1:
                raise ValueError(f"ranks collected amax of different shapes {sorted(shapes)} for the same quantizer; "
                                 "every rank must run the same model")
            amax = cal.compute_amax()
            local = torch.zeros(shapes.pop(), dtype=torch.float32, device=device) if amax is None \
                else amax.detach().to(device=device, dtype=torch.float32).clone()
            dist.all_reduce(local, op=dist.ReduceOp.MAX, group=group)
            cal.reset()
            cal.collect(local if amax is None else local.to(amax.device))  # max of the maxes: the global max
    for cal in calibrators:
        if isinstance(cal, HistogramCalibrator):
            cal.all_reduce(group=group, device=device)
