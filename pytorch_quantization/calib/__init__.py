"""Calibrators: collect statistics of tensors and choose the quantization range (amax) from them."""
from pytorch_quantization.calib.max import MaxCalibrator
from pytorch_quantization.calib.histogram import HistogramCalibrator
from pytorch_quantization.calib.weights import calibrate_weights

__all__ = ["MaxCalibrator", "HistogramCalibrator", "calibrate_weights"]
