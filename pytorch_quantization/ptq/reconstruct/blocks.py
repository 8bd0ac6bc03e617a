"""Which layers are reconstructed together: one block per layer (AdaRound) or blocks from the module tree.

Automatic blocks (BRECQ / QDrop) are the largest called submodules holding at most ``max_layers`` of the
layers being reconstructed (a residual block, a PFN layer, one head branch such as CenterPoint's ``reg`` or
``heatmap`` conv pair); a module never called by the forward (a ``ModuleList``) is split into its children.
Layers left outside every block are reconstructed alone. Blocks are returned in first-call order.
"""
import torch

from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.forward import eval_mode, run_forward

__all__ = ["call_order", "find_blocks", "inside"]


def call_order(model, batch, forward_fn):
    """``{module name: index}`` of the modules called when ``model`` runs ``batch``, by first call."""
    order = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_module, _args, name=name):
            order.setdefault(name, len(order))
        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):
            run_forward(model, batch, forward_fn)
    finally:
        for handle in handles:
            handle.remove()
    return order


def inside(layer, block):
    """True when module ``layer`` is ``block`` or lies inside it (``""`` is the whole model)."""
    return block == "" or layer == block or layer.startswith(block + ".")


def _auto(model, layers, order, max_layers):
    found = []

    def visit(name, module):
        held = [n for n in layers if inside(n, name)]
        if not held:
            return
        if name and name in order and (len(held) <= max_layers or name in layers):
            found.append(name)
            return
        for child, sub in module.named_children():
            visit(f"{name}.{child}" if name else child, sub)

    visit("", model)
    return found


def find_blocks(model, layers, order, *, per_layer, blocks=None, max_layers=4):
    """``[(block name, [layer names])]`` in call order.

    Args:
        layers: names of the layers to reconstruct (each a quantized layer of ``model``).
        order: ``call_order`` of ``model``.
        per_layer: one block per layer (AdaRound).
        blocks: explicit block module names / globs / regexes / callable (overrides the automatic choice).
    """
    uncalled = [n for n in layers if n not in order]
    if uncalled:
        raise ValueError(f"layers {uncalled[:5]} are not called by the forward on the first batch, so there is "
                         "no data to reconstruct them with; check forward_fn, or leave them out with keep=")
    if per_layer:
        names = list(layers)
    elif blocks is not None:
        chosen = NameFilter(blocks)
        modules = dict(model.named_modules())
        names = [n for n in modules if n and chosen.match(n, modules[n]) is not None]
        if not names:
            raise ValueError(f"blocks={blocks!r} matches no module of the model")
        nested = [(a, b) for a in names for b in names if a != b and inside(b, a)]
        if nested:
            raise ValueError(f"blocks overlap: {nested[0][1]!r} lies inside {nested[0][0]!r}; name disjoint modules")
        not_called = [n for n in names if n not in order]
        if not_called:
            raise ValueError(f"blocks {not_called[:5]} are never called by the forward; name called modules")
    else:
        names = _auto(model, layers, order, max_layers)
    grouped = [(b, [n for n in layers if inside(n, b)]) for b in names]
    grouped = [(b, held) for b, held in grouped if held]
    covered = {n for _, held in grouped for n in held}
    grouped += [(n, [n]) for n in layers if n not in covered]
    return sorted(grouped, key=lambda item: order[item[0]])
