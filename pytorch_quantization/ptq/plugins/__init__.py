"""Knowledge of third-party layer libraries and detector blocks, each behind an import check.

* ``spconv`` (only when spconv imports, ``layer_types.HAS_SPCONV``): quantized sparse convolutions and
  ``bias_after_sparse_conv``, the CPU work-around for float sparse convolutions with a bias.
* ``detector_blocks``: ``QuantAdd`` and ``quantize_residual_blocks`` for residual blocks of detection
  frameworks (MMDetection3D's / OpenPCDet's ``SparseBasicBlock``); needs no third-party import itself.
"""
from pytorch_quantization.ptq.layer_types import HAS_SPCONV

__all__ = ["HAS_SPCONV"]
