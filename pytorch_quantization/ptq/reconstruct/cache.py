"""The float model's block inputs and outputs, captured in one pass over the calibration batches.

Every call of every block is kept as ``(args, kwargs, output)`` (tensors cloned, spconv tensors with cloned
features, on the model's device). The cache is memory-bounded: once ``memory_mb`` is used, the entries of
further batches are written to ``spill_dir`` (one file per block and batch, read back when that block is
reconstructed) or, without ``spill_dir``, not kept: reconstruction then uses the batches that fitted (a
subsample, reported in a warning).
"""
import os
import warnings

import torch

from pytorch_quantization.ptq.forward import eval_mode, run_forward
from pytorch_quantization.ptq.layer_types import is_sparse_tensor

__all__ = ["BlockCache", "snapshot", "nbytes", "capture_inputs"]


def snapshot(obj):
    """A copy of a (nested) forward argument / output that later in-place ops of the model cannot change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if is_sparse_tensor(obj):
        return obj.replace_feature(obj.features.detach().clone())
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [snapshot(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def nbytes(obj):
    """Bytes held by the tensors of a (nested) object (a spconv tensor counts its features and indices)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if is_sparse_tensor(obj):
        return nbytes(obj.features) + nbytes(obj.indices)
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


class BlockCache:
    """Float block calls per block: ``entries(block)`` yields ``(args, kwargs, output)``; ``final[i]`` is the
    float model's output on batch ``i`` (kept only with ``keep_final``)."""

    def __init__(self, float_model, block_names, data, forward_fn, *, memory_mb, spill_dir=None, keep_final=False,
                 progress=None):
        self._memory = {name: [] for name in block_names}
        self._spilled = {name: [] for name in block_names}
        self.final = []
        self.batches_used = 0
        self.spill_dir = spill_dir
        modules = dict(float_model.named_modules())
        current = {name: [] for name in block_names}
        handles = []
        for name in block_names:
            def hook(_module, args, kwargs, output, name=name):
                current[name].append((snapshot(args), snapshot(kwargs), snapshot(output)))
            handles.append(modules[name].register_forward_hook(hook, with_kwargs=True))
        used = 0
        try:
            with torch.no_grad(), eval_mode(float_model):
                for index, batch in enumerate(progress(data) if progress else data):
                    output = run_forward(float_model, batch, forward_fn)
                    size = sum(nbytes(e) for calls in current.values() for e in calls)
                    if index == 0 or used + size <= memory_mb * 2 ** 20:
                        used += size
                        for name, calls in current.items():
                            self._memory[name].extend(calls)
                    elif spill_dir is not None:
                        self._spill(index, current)
                    else:
                        warnings.warn(f"the float block cache is full ({memory_mb} MiB) after {index} of {len(data)} "
                                      f"batches; reconstructing with those (pass cache_dir= to spill the rest to "
                                      f"disk, or raise cache_mb)", stacklevel=3)
                        break
                    if keep_final:
                        self.final.append(snapshot(output))
                    self.batches_used += 1
                    for calls in current.values():
                        calls.clear()
        finally:
            for handle in handles:
                handle.remove()

    def _spill(self, index, current):
        os.makedirs(self.spill_dir, exist_ok=True)
        for position, (name, calls) in enumerate(current.items()):
            if calls:
                path = os.path.join(self.spill_dir, f"block{position:04d}_batch{index:06d}.pt")
                torch.save(calls, path)
                self._spilled[name].append(path)

    def entries(self, name):
        """Every cached call of block ``name`` (in memory first, then read back from the spill files)."""
        yield from self._memory[name]
        for path in self._spilled[name]:
            yield from torch.load(path, weights_only=False)

    def drop(self, name):
        """Free block ``name``'s entries (after it is reconstructed)."""
        self._memory[name] = []
        for path in self._spilled.pop(name, []):
            os.unlink(path)


def capture_inputs(model, name, data, forward_fn):
    """``[(args, kwargs)]`` of every call of submodule ``name`` while ``model`` runs ``data`` (no gradient)."""
    calls = []
    module = model.get_submodule(name) if name else model

    def hook(_module, args, kwargs):
        calls.append((snapshot(args), snapshot(kwargs)))
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), eval_mode(model):
            for batch in data:
                run_forward(model, batch, forward_fn)
    finally:
        handle.remove()
    return calls
