"""OpenPCDet's distributed test path (``build_dataloader(dist=True)`` + ``eval_one_epoch(dist_test=True)``)
for the PTQ driver, on CPUs as well as GPUs.

* ``ddp_on_cpu(eval_utils, device)``: ``eval_one_epoch(dist_test=True)`` wraps the model in
  ``DistributedDataParallel(model, device_ids=[cfg.LOCAL_RANK % torch.cuda.device_count()])``. Without a
  GPU that divides by zero, and a CPU module must be given ``device_ids=None``. While the block runs, the
  ``torch`` name inside the ``eval_utils`` module (and nowhere else) is a view of torch whose
  ``cuda.device_count()`` is 1 and whose ``DistributedDataParallel`` drops ``device_ids``: the model is
  still wrapped in a real (gloo) DDP. For a CUDA device nothing changes, so OpenPCDet's own wrapping runs.
* ``keep_frames(loader, indices)``: keep only those frames of an OpenPCDet loader's dataset. OpenPCDet's
  ``DistributedSampler`` fixes its shard sizes when built, so they are recomputed for the smaller dataset.
* ``unpadded_shard_size(loader)``: the sampler pads every shard to the same length by repeating the first
  frames; evaluation drops the repeats (``merge_results_dist`` truncates to the dataset size) but
  calibration statistics would count them twice, so a rank calibrates on its first this-many frames only.
"""
import contextlib
import math

import torch
from torch.utils.data import DistributedSampler

__all__ = ["ddp_on_cpu", "keep_frames", "unpadded_shard_size"]


class _View:
    """Attribute access falls through to ``target`` except for the names in ``overrides``."""

    def __init__(self, target, overrides):
        self._target, self._overrides = target, overrides

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._target, name)


def _ddp_without_device_ids(module, device_ids=None, **kwargs):  # pylint: disable=unused-argument
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=None, **kwargs)


def _torch_for_cpu_ddp():
    cuda = _View(torch.cuda, {"device_count": lambda: 1})
    parallel = _View(torch.nn.parallel, {"DistributedDataParallel": _ddp_without_device_ids})
    return _View(torch, {"cuda": cuda, "nn": _View(torch.nn, {"parallel": parallel})})


@contextlib.contextmanager
def ddp_on_cpu(eval_utils, device):
    """See the module docstring; ``eval_utils`` is OpenPCDet's ``tools/eval_utils/eval_utils`` module."""
    if torch.device(device).type == "cuda":
        yield
        return
    saved = eval_utils.torch
    eval_utils.torch = _torch_for_cpu_ddp()
    try:
        yield
    finally:
        eval_utils.torch = saved


def keep_frames(loader, indices):
    """Keep the frames ``indices`` of ``loader.dataset`` (in that order); resize a distributed sampler."""
    dataset = loader.dataset
    dataset.infos = [dataset.infos[i] for i in indices]
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.num_samples = math.ceil(len(dataset) / sampler.num_replicas)
        sampler.total_size = sampler.num_samples * sampler.num_replicas
    return loader


def unpadded_shard_size(loader):
    """Frames of this rank's shard that are not padding (all of them without a distributed sampler)."""
    sampler = loader.sampler
    if not isinstance(sampler, DistributedSampler):
        return len(loader.dataset)
    return len(range(sampler.rank, len(loader.dataset), sampler.num_replicas))

