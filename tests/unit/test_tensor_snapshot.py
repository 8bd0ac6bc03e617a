"""``tensors_snapshot``: the compiled one-call reading of tensor tokens (``csrc/tensor_snapshot.h``) changes exactly
when the Python ``tensor_token`` of some tensor changes, for every kind of edit the weight cache must see."""
import pytest
import torch

from pytorch_quantization import ops
from pytorch_quantization.nn.modules import tensor_quantizer

pytestmark = pytest.mark.skipif("tensor_snapshot" not in ops.C_FUNCTIONS, reason="compiled extension "
                                "pytorch_quantization._C not built (pip install -e . --no-build-isolation); the Python "
                                "tokens are used then")

snapshot = ops.C_FUNCTIONS.get("tensor_snapshot")


def python_tokens(tensors):
    return tuple(map(tensor_quantizer.tensor_token, tensors))


def in_place(w, _other):
    with torch.no_grad():
        w.mul_(2)


def data_assigned(w, _other):
    w.data = torch.randn(4, 3)


def pruned_view(w, _other):
    w.data = w.data[:2]  # same data pointer, other shape


def retyped(w, _other):
    w.data = w.data.double()


def swapped_object(_w, other):
    return other


@pytest.mark.parametrize("edit", [in_place, data_assigned, pruned_view, retyped, swapped_object])
def test_every_edit_changes_both_or_neither(edit):
    w, other, amax = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4, 3)), torch.tensor(1.0)
    before_c, before_py = snapshot((w, amax, None)), python_tokens((w, amax, None))
    assert snapshot((w, amax, None)) == before_c  # reading changes nothing
    replaced = edit(w, other)
    current = w if replaced is None else replaced
    assert (snapshot((current, amax, None)) != before_c) == (python_tokens((current, amax, None)) != before_py)
    assert snapshot((current, amax, None)) != before_c


def test_order_none_and_identity_matter():
    a, b = torch.zeros(3), torch.zeros(3)
    assert snapshot((a, b)) != snapshot((b, a))
    assert snapshot((a, None)) != snapshot((a,))
    assert snapshot((a,)) != snapshot((a.view(3),))  # a view is another object


def test_inference_tensors_read_without_error_and_differ():
    with torch.inference_mode():
        t = torch.ones(2)
    assert snapshot((t,)) == snapshot((t,))
    assert python_tokens((t,))[0][1] == -1  # the Python token agrees: no version counter


def test_bad_arguments_name_the_fix():
    with pytest.raises(TypeError, match="tuple of tensors"):
        snapshot([torch.ones(1)])
    with pytest.raises(TypeError, match="item 1 is a int, not a tensor or None"):
        snapshot((torch.ones(1), 3))
