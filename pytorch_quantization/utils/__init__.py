"""Small utilities shared by calibrators and quantizers."""
from pytorch_quantization.utils.reduce_amax import reduce_amax
from pytorch_quantization.utils import quant_logging

__all__ = ["reduce_amax", "quant_logging"]
