"""Optimizer helpers for quantization-aware training."""
from pytorch_quantization.optim import helper

__all__ = ["helper"]
