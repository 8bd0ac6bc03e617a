"""Knowledge of third-party layer libraries and detector blocks, each behind an import check.

* ``spconv`` (only when spconv imports, ``layer_types.HAS_SPCONV``; importing this package registers its layers
  in ``layer_registry``): quantized sparse convolutions and ``bias_after_sparse_conv``, the CPU work-around for
  float sparse convolutions with a bias.
* ``detector_blocks``: ``QuantAdd`` and ``quantize_residual_blocks`` for residual blocks of detection
  frameworks (MMDetection3D's / OpenPCDet's ``SparseBasicBlock``); needs no third-party import itself.
* ``SEQUENTIAL_TYPES`` (here): containers whose consecutive children run one after the other (``nn.Sequential``,
  spconv's ``SparseSequential`` when spconv imports), for BN folding without a trace.
"""
import torch

from pytorch_quantization.ptq.layer_types import HAS_SPCONV

__all__ = ["HAS_SPCONV", "SEQUENTIAL_TYPES"]

SEQUENTIAL_TYPES = (torch.nn.Sequential,)
if HAS_SPCONV:
    import spconv.pytorch as _spconv
    from pytorch_quantization.ptq.plugins import spconv as _spconv_plugin  # noqa: F401  (registers the layers)
    SEQUENTIAL_TYPES += (_spconv.SparseSequential,)
