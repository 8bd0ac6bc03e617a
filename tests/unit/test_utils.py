"""Tests of pytorch_quantization.utils against numpy."""
import logging

import numpy as np
import pytest
import torch

from pytorch_quantization import utils
from pytorch_quantization.utils import quant_logging
from pytorch_quantization.utils.threads import intra_op_threads


def _data():
    return np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("axis, keepdims", [(0, True), (-1, False), ((0, 2), True), ([1, 2], False), ((0, 1, 2), True)])
def test_reduce_amax_matches_numpy(axis, keepdims):
    x = _data()
    expected = np.abs(x).max(axis=tuple(axis) if isinstance(axis, list) else axis, keepdims=keepdims)
    result = utils.reduce_amax(torch.from_numpy(x), axis=axis, keepdims=keepdims)
    assert tuple(result.shape) == expected.shape
    np.testing.assert_array_equal(result.numpy(), expected)


def test_reduce_amax_none_is_0d_whatever_keepdims():
    x = _data()
    for keepdims in (True, False):
        result = utils.reduce_amax(torch.from_numpy(x), keepdims=keepdims)
        assert result.shape == () and result.item() == np.abs(x).max()


def test_reduce_amax_single_channel_keeps_dims():
    result = utils.reduce_amax(torch.tensor([[[-2.0, 1.0]]]), axis=(1, 2))
    assert tuple(result.shape) == (1, 1, 1) and result.item() == 2.0


def test_reduce_amax_empty_axis_is_elementwise_abs():
    x = torch.tensor([-1.5, 2.0])
    assert torch.equal(utils.reduce_amax(x, axis=()), torch.tensor([1.5, 2.0]))


def test_reduce_amax_has_no_gradient_and_keeps_dtype():
    x = torch.tensor([-3.0, 1.0], dtype=torch.float64, requires_grad=True)
    result = utils.reduce_amax(x)
    assert not result.requires_grad and result.dtype == torch.float64 and result.item() == 3.0


def test_reduce_amax_errors():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="out of range"):
        utils.reduce_amax(x, axis=2)
    with pytest.raises(ValueError, match="repeated"):
        utils.reduce_amax(x, axis=(0, -2))
    with pytest.raises(TypeError, match="axis"):
        utils.reduce_amax(x, axis=0.5)
    with pytest.raises(TypeError, match="Tensor"):
        utils.reduce_amax(np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        utils.reduce_amax(torch.empty(0))


def test_reset_logger_handler_removes_root_handlers():
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        root.addHandler(logging.StreamHandler())
        root.addHandler(logging.NullHandler())
        quant_logging.reset_logger_handler()
        assert root.handlers == []
    finally:
        for handler in saved:
            root.addHandler(handler)


def test_intra_op_threads_sets_and_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with intra_op_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
