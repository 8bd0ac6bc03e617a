"""Running OpenPCDet on a CPU: its hard-coded ``.cuda()`` calls made to go to the chosen device.

OpenPCDet calls ``tensor.cuda()`` in ``CenterHead.__init__`` and ``generate_predicted_boxes``, in the
dynamic VFEs' ``__init__`` and in ``pcdet.models.load_data_to_gpu`` (which ``eval_one_epoch`` imports by
name). Rather than patching each of them, ``cuda_calls_to(device)`` rebinds ``torch.Tensor.cuda`` to
``tensor.to(device)`` while the block runs (building, calibrating, evaluating) and restores it afterwards.
For a CUDA device it changes nothing, so on a GPU the original calls and ops run.
"""
import contextlib

import torch

__all__ = ["cuda_calls_to", "model_device"]


@contextlib.contextmanager
def cuda_calls_to(device):
    """Inside the block ``tensor.cuda(...)`` returns ``tensor.to(device)`` when ``device`` is not CUDA."""
    target = torch.device(device)
    if target.type == "cuda":
        yield
        return
    saved = torch.Tensor.__dict__.get("cuda")

    def to_target(self, device=None, non_blocking=False, **kwargs):  # pylint: disable=unused-argument
        return self.to(target, non_blocking=non_blocking)

    torch.Tensor.cuda = to_target
    try:
        yield
    finally:
        if saved is None:
            del torch.Tensor.cuda
        else:
            torch.Tensor.cuda = saved


def model_device(model):
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
