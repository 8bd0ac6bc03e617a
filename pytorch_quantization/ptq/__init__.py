"""Post-training quantization of an already-built model.

Typical flow::

    from pytorch_quantization import ptq
    ptq.fold_batchnorm(model, example_batch)        # optional, as deployment does
    print(ptq.quantize_model(model, "w8a8", skip="backbone.conv_input.*"))
    ptq.calibrate(model, loader, num_batches=400, method="percentile", skip_zeros=True)
    ptq.save_calibration(model, "calib.json")
    table = ptq.sensitivity(model, eval_fn, sample=batch)   # which layers hurt
    ptq.keep_float(model, table.column("layer")[:3])

Each step lives in its own module: ``config`` (PTQConfig, presets, YAML/JSON), ``swap`` (quantize_model),
``sparse`` (spconv layers), ``residual`` (QuantAdd), ``bn_fold``, ``calibrate``, ``distributed``, ``calib_io``,
``sensitivity``, ``report``, ``reconstruct`` (AdaRound / BRECQ / QDrop; a package), ``mixed_precision``.
"""
from pytorch_quantization.ptq.config import PTQConfig, PRESETS, CALIB_METHODS
from pytorch_quantization.ptq.table import Table
from pytorch_quantization.ptq.forward import sqnr_db
from pytorch_quantization.ptq.layer_types import HAS_SPCONV
from pytorch_quantization.ptq.swap import quantize_model, SwapSummary, QUANT_CLASSES
from pytorch_quantization.ptq.residual import QuantAdd, quantize_residual_blocks
from pytorch_quantization.ptq.bn_fold import fold_batchnorm, ChannelBias
from pytorch_quantization.ptq.calibrate import calibrate, load_amax
from pytorch_quantization.ptq.calib_io import save_calibration, load_calibration
from pytorch_quantization.ptq.quantizers import find_quantizers
from pytorch_quantization.ptq.sensitivity import sensitivity, keep_float
from pytorch_quantization.ptq.report import report, Report
from pytorch_quantization.ptq.mixed_precision import mixed_precision
from pytorch_quantization.ptq.reconstruct import reconstruct, centerpoint_task_loss

__all__ = ["PTQConfig", "PRESETS", "CALIB_METHODS", "Table", "sqnr_db", "HAS_SPCONV", "quantize_model",
           "SwapSummary", "QUANT_CLASSES", "QuantAdd", "quantize_residual_blocks", "fold_batchnorm", "ChannelBias",
           "calibrate", "load_amax", "save_calibration", "load_calibration", "find_quantizers",
           "sensitivity", "keep_float", "report", "Report", "mixed_precision", "reconstruct",
           "centerpoint_task_loss"]

if HAS_SPCONV:
    from pytorch_quantization.ptq.sparse import QuantSubMConv3d, QuantSparseConv3d, QuantSparseInverseConv3d
    __all__ += ["QuantSubMConv3d", "QuantSparseConv3d", "QuantSparseInverseConv3d"]
