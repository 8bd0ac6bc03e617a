"""Post-training quantization of an already-built model.

Typical flow::

    from pytorch_quantization import ptq
    ptq.fold_batchnorm(model, example_batch)        # optional, as deployment does
    print(ptq.quantize_model(model, "w8a8", skip="backbone.conv_input.*"))
    ptq.calibrate(model, loader, num_batches=400, method="percentile", skip_zeros=True)   # or method="auto"
    # or: stats = ptq.collect_statistics(model, loader); ptq.apply_amax(model, ptq.compute_amax(stats, "mse"))
    ptq.save_calibration(model, "calib.json")
    table = ptq.sensitivity(model, eval_fn, sample=batch)   # which layers hurt
    ptq.keep_float(model, table.column("layer")[:3])

Each step lives in its own module: ``config`` (PTQConfig, presets, YAML/JSON), ``swap`` (quantize_model),
``plugins`` (spconv layers, QuantAdd for detector blocks), ``bn_fold``, ``statistics`` (one pass, every method),
``auto_amax``, ``calibrate``, ``diagnostics`` (clipping), ``distributed``, ``calib_io``, ``sensitivity`` (and
``proxy_sensitivity``), ``report``, ``stats`` (paired bootstrap, rank agreement), ``study_plots``,
``reconstruct`` (AdaRound / BRECQ / QDrop; a package), ``mixed_precision``. Which layers are quantized with which
class is ``pytorch_quantization.layer_registry`` (``layer_types`` adds spconv's), and which weight axis holds
output channels is ``pytorch_quantization.utils.channel_axis``.
"""
from pytorch_quantization.ptq.config import PTQConfig, PRESETS, CALIB_METHODS
from pytorch_quantization.ptq.table import Table
from pytorch_quantization.ptq.forward import sqnr_db
from pytorch_quantization.ptq.layer_types import HAS_SPCONV
from pytorch_quantization.ptq.swap import quantize_model, SwapSummary, QUANT_CLASSES
from pytorch_quantization.ptq.plugins.detector_blocks import QuantAdd, quantize_residual_blocks
from pytorch_quantization.ptq.bn_fold import fold_batchnorm, ChannelBias
from pytorch_quantization.ptq.statistics import ActivationStatistics, collect_statistics, compute_amax, apply_amax
from pytorch_quantization.ptq.auto_amax import auto_amax
from pytorch_quantization.ptq.diagnostics import clipping_diagnostics, Diagnostics
from pytorch_quantization.ptq.calibrate import calibrate, load_amax
from pytorch_quantization.ptq import stats
from pytorch_quantization.ptq.calib_io import save_calibration, load_calibration
from pytorch_quantization.ptq.quantizers import find_quantizers
from pytorch_quantization.ptq.sensitivity import sensitivity, keep_float
from pytorch_quantization.ptq.report import report, Report
from pytorch_quantization.ptq.mixed_precision import mixed_precision
from pytorch_quantization.ptq.reconstruct import reconstruct, centerpoint_task_loss

__all__ = ["PTQConfig", "PRESETS", "CALIB_METHODS", "Table", "sqnr_db", "HAS_SPCONV", "quantize_model",
           "SwapSummary", "QUANT_CLASSES", "QuantAdd", "quantize_residual_blocks", "fold_batchnorm", "ChannelBias",
           "ActivationStatistics", "collect_statistics", "compute_amax", "apply_amax", "auto_amax",
           "clipping_diagnostics", "Diagnostics", "stats", "calibrate", "load_amax", "save_calibration",
           "load_calibration", "find_quantizers", "sensitivity", "keep_float", "report", "Report",
           "mixed_precision", "reconstruct", "centerpoint_task_loss"]

if HAS_SPCONV:
    from pytorch_quantization.ptq.plugins.spconv import (QuantSubMConv3d, QuantSparseConv3d, QuantSparseInverseConv3d,
                                                         bias_after_sparse_conv)
    __all__ += ["QuantSubMConv3d", "QuantSparseConv3d", "QuantSparseInverseConv3d", "bias_after_sparse_conv"]
