"""ptq.reconstruct end to end on a small voxel (spconv) CenterPoint with random weights: the SubMConv3d /
SparseConv3d layers of MMDetection3D's SparseEncoder get learned rounding (hard, on the calibrated grid) and the
head outputs move closer to the float model's than with round-to-nearest."""
import pytest
import torch

from conftest import requires_mmdet3d

pytest.importorskip("spconv.pytorch", reason="the voxel CenterPoint's sparse encoder needs spconv (pip install spconv)")

from benchmarks.bench_reconstruct_voxel import (build_model, calibrated, head_error, head_outputs,  # noqa: E402
                                                reconstructed, synthetic_frames)
from pytorch_quantization import _reference  # noqa: E402
from pytorch_quantization.utils.threads import intra_op_threads  # noqa: E402

pytestmark = requires_mmdet3d
# left round-to-nearest (keep=) so the test spends its steps on the first two sparse stages: conv_input and
# encoder_layer1 / 2 (8 SubMConv3d in SparseBasicBlocks, 1 SubMConv3d, 2 SparseConv3d)
KEEP = ["pts_middle_encoder.encoder_layers.encoder_layer3.*", "pts_middle_encoder.encoder_layers.encoder_layer4.*",
        "pts_middle_encoder.conv_out.*", "pts_backbone.*", "pts_neck.*", "pts_bbox_head.*"]


def _grid_integers(quantizer, weight):
    """``weight * bound / amax`` (exact integers for a weight written on the calibrated grid)."""
    bound = _reference.integer_range(quantizer.num_bits, quantizer.unsigned, False)[1]
    return weight.detach().double() * bound / quantizer.amax.double()


@pytest.fixture(scope="module")
def setup():
    # spconv's CPU convolution races on more than one intra-op thread (ptq/reconstruct/sparse_grad.py): the
    # head errors compared below would carry that noise
    with intra_op_threads(1):
        base = build_model(seed=0)
        frames = synthetic_frames(4)
        yield base, frames[:2], frames[2:]


def test_brecq_learns_the_sparse_encoder_rounding_and_lowers_head_error(setup):
    base, calib, held = setup
    qmodel = calibrated(base, "w4", calib)
    sparse = [n for n, m in qmodel.named_modules() if type(m).__name__ in ("QuantSubMConv3d", "QuantSparseConv3d")]
    assert len(sparse) == 21  # 17 SubMConv3d + 4 SparseConv3d in the config
    stages = ("pts_middle_encoder.conv_input", "pts_middle_encoder.encoder_layers.encoder_layer1",
              "pts_middle_encoder.encoder_layers.encoder_layer2")
    targets = [n for n in sparse if n.startswith(stages)]
    rtn_weights = {n: qmodel.get_submodule(n).weight.detach().clone() for n in targets}
    assert sorted(type(qmodel.get_submodule(n)).__name__ for n in targets) == ["QuantSparseConv3d"] * 2 + [
        "QuantSubMConv3d"] * 9
    learned, table, _ = reconstructed(base, qmodel, calib, "brecq", 200, keep=KEEP)
    assert sum(table.column("layers")) == len(targets)
    assert table.column("status").count("learned") >= len(table.rows) - 1
    # the regulariser drove the soft rounding variables to 0 / 1 before they were frozen
    assert min(table.column("binary")) > 0.8
    changed = 0
    for name, rtn in rtn_weights.items():
        layer = learned.get_submodule(name)
        quantizer = layer._weight_quantizer  # pylint: disable=protected-access
        assert quantizer.learned_rounding == "brecq"
        grid = _grid_integers(quantizer, layer.weight)
        assert float((grid - grid.round()).abs().max()) < 1e-4  # hard rounding: integers on the calibrated grid
        step = (grid.round() - _grid_integers(quantizer, rtn).round()).abs()
        assert float(step.max()) <= 1.0  # learned rounding moves a weight by one step at most
        changed += int((step > 0).sum())
    assert changed > 0
    reference = head_outputs(base, held)
    rtn_sqnr, rtn_mse = head_error(reference, head_outputs(qmodel, held))
    sqnr, mse = head_error(reference, head_outputs(learned, held))
    assert mse < rtn_mse and sqnr > rtn_sqnr
