"""The public state of TensorQuantizer that tools (ptq) read and set instead of private fields."""
import pytest
import torch

from pytorch_quantization import calib
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor


def test_stage_flags_follow_the_switches():
    q = TensorQuantizer(QuantDescriptor(), if_calib=True)
    assert q.is_enabled and q.is_quant_enabled and q.is_calib_enabled
    q.disable()
    q.disable_quant()
    q.disable_calib()
    assert not (q.is_enabled or q.is_quant_enabled or q.is_calib_enabled)
    x = torch.randn(5)
    assert torch.equal(q(x), x)


def test_calibrator_can_be_replaced_by_a_calibrator_only():
    q = TensorQuantizer(QuantDescriptor())
    assert isinstance(q.calibrator, calib.MaxCalibrator)
    histogram = calib.HistogramCalibrator(8, None, False)
    q.calibrator = histogram
    q.enable_calib()
    q.disable_quant()
    q(torch.tensor([0.5, -3.0]))
    assert histogram.calib_range is not None and q.calibrator is histogram
    with pytest.raises(TypeError, match="calibrator must be a calibrator"):
        q.calibrator = "max"


def test_reset_amax_goes_back_to_dynamic_and_allows_another_shape():
    q = TensorQuantizer(QuantDescriptor(axis=0))
    q.amax = torch.ones(3, 1)
    x = torch.tensor([[1.0, 2.0], [0.5, 0.25], [4.0, -8.0]])
    q.reset_amax()
    assert q.amax is None and "_amax" not in q.state_dict()
    scale = 127 / x.abs().amax(dim=1, keepdim=True)  # dynamic: the amax of each row of this input
    torch.testing.assert_close(q(x), torch.round(x * scale) / scale)
    q.amax = torch.full((2, 1), 3.0)
    assert q.amax.shape == (2, 1)
    q.reset_amax()
    q.reset_amax()  # no amax: nothing to do
    assert q.amax is None
