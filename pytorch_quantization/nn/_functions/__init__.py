"""Functional building blocks of the quantized modules."""
