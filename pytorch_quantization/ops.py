"""Loads the compiled extension (``pytorch_quantization._C``) and tells which devices it serves.

The ops themselves live in the ``torch.ops.pytorch_quantization`` namespace once ``_C`` is imported.
"""
import importlib
import warnings

_C = None
LOAD_ERROR = None
try:
    _C = importlib.import_module("pytorch_quantization._C")
except ImportError as error:  # not built: the package falls back to the pure-PyTorch reference
    LOAD_ERROR = error


def serves(device_type):
    """True when the compiled ops implement tensors on ``device_type`` ("cpu" or "cuda")."""
    return False
