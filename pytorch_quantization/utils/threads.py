"""Temporarily run torch's CPU ops on a given number of intra-op threads.

spconv 2.3's CPU convolution is only correct on one thread (``ptq/reconstruct/sparse_grad.py``), so code
and tests that run it and compare results use ``intra_op_threads(1)``.
"""
import contextlib

import torch

__all__ = ["intra_op_threads"]


@contextlib.contextmanager
def intra_op_threads(count):
    """``torch.set_num_threads(count)`` inside the block; the previous count is restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
