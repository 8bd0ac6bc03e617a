"""``reconstruct``: learned weight rounding (AdaRound), block reconstruction (BRECQ) and QDrop after calibration.

Flow: validate everything (the model is untouched on bad input); find the blocks (``blocks``); run the float
model once over the calibration batches caching every block's float inputs and outputs (``cache``); then, block
by block in call order, learn the rounding of the block's weights (and, with ``learn_act``, the step sizes of its
activation quantizers) so that the quantized block, fed the quantized model's inputs (``inputs="quant"``) or the
float ones, reproduces the float outputs, freeze to
hard rounding and write the integers into the weights (``weight_payload``). A block whose learned rounding does
worse than round-to-nearest on the cached data keeps round-to-nearest. The result is an ordinary calibrated
model; ``save_calibration`` stores the learned integers.
"""
import itertools
import time

import torch

from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.ptq import weight_payload
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.forward import eval_mode, run_forward
from pytorch_quantization.ptq.quantizers import find_quantizers, set_amax
from pytorch_quantization.ptq.table import Table
from pytorch_quantization.ptq.reconstruct.act_quant import BlockActQuantizer
from pytorch_quantization.ptq.reconstruct.blocks import call_order, find_blocks, inside
from pytorch_quantization.ptq.reconstruct.cache import BlockCache, capture_inputs, snapshot
from pytorch_quantization.ptq.reconstruct.losses import centerpoint_task_loss, output_loss
from pytorch_quantization.ptq.reconstruct.rounding import AdaRoundQuantizer, beta_schedule, rounding_regularizer
from pytorch_quantization.ptq.reconstruct.state import ResumeState
from pytorch_quantization.ptq.reconstruct import sparse_grad

__all__ = ["reconstruct", "METHODS"]

METHODS = ("adaround", "brecq", "qdrop")
_LOSSES = ("output", "task")


def _progress(iterable, desc, enabled, total=None, leave=True):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=leave)


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_args(method, iters, batch_size, loss, task_loss_fn, drop_prob, num_batches):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _positive_int(iters, "iters")
    _positive_int(batch_size, "batch_size")
    if num_batches is not None:
        _positive_int(num_batches, "num_batches")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if task_loss_fn is not None and not callable(task_loss_fn):
        raise TypeError("task_loss_fn must be a callable (quant_output, float_output) -> scalar tensor")
    if not 0 <= drop_prob < 1:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob!r}")


def _targets(qmodel, keep):
    """The weight quantizer refs to reconstruct: active, calibrated, integer, not selected by ``keep``."""
    refs = find_quantizers(qmodel)
    if not refs:
        raise ValueError("qmodel has no quantizers; run ptq.quantize_model and ptq.calibrate on it first")
    keep_filter = NameFilter(keep)
    weights = [r for r in refs if r.role == "weight" and r.active and not isinstance(r.quantizer.num_bits, tuple)
               and keep_filter.match(r.layer_name, r.layer) is None]
    uncalibrated = [r.name for r in weights if r.quantizer.amax is None]
    if uncalibrated:
        raise ValueError(f"weight quantizers {uncalibrated[:5]} have no amax; run ptq.calibrate before reconstruct")
    if not weights:
        raise ValueError("qmodel has no enabled integer weight quantizer left to reconstruct (all disabled, kept "
                         "float, E4M3 or selected by keep=)")
    for ref in weights:
        weight_payload.weight_grid(ref.quantizer, ref.layer.weight)  # dtype / amax shape errors, before any change
    return refs, weights


def _check_float(qmodel, float_model, weights):
    if not isinstance(float_model, torch.nn.Module) or float_model is qmodel:
        raise ValueError("float_model must be the float model as a separate module (copy.deepcopy(model) taken "
                         "before quantize_model)")
    if any(isinstance(m, TensorQuantizer) and m.is_enabled for m in float_model.modules()):
        raise ValueError("float_model has enabled quantizers; pass the float model (a copy taken before "
                         "quantize_model)")
    modules = dict(float_model.named_modules())
    missing = [r.layer_name for r in weights if r.layer_name not in modules]
    differ = [r.layer_name for r in weights if r.layer_name in modules
              and getattr(modules[r.layer_name], "weight", None) is not None
              and tuple(modules[r.layer_name].weight.shape) != tuple(r.layer.weight.shape)]
    if missing or differ:
        raise ValueError(f"float_model does not match qmodel: layers missing {missing[:5]}, weight shapes differ "
                         f"{differ[:5]}; pass the float copy of the same model")


def _swap(layer, attr, replacement):
    original = getattr(layer, attr)
    setattr(layer, attr, replacement)
    return layer, attr, original


def _eval_loss(module, entries):
    with torch.no_grad():
        total = sum(float(output_loss(module(*snapshot(a), **snapshot(k)), out)) for a, k, out in entries)
    return total / len(entries)


class _Settings:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _learn_block(qmodel, block, layer_refs, act_refs, entries, s, generator, task):
    """Learn one block; returns ``(rtn loss, learned loss, binary fraction, integers, amaxes)``."""
    module = qmodel.get_submodule(block) if block else qmodel
    rtn = _eval_loss(module, entries)
    rounders = [AdaRoundQuantizer(r.quantizer, r.layer.weight) for r in layer_refs]
    acts = [BlockActQuantizer(r.quantizer, s.learn_act, s.drop_prob, generator) for r in act_refs]
    swaps = [_swap(r.layer, "_weight_quantizer", q) for r, q in zip(layer_refs, rounders)]
    swaps += [_swap(r.layer, r.name.rsplit(".", 1)[-1], a) for r, a in zip(act_refs, acts)]
    sparse = [sparse_grad.install(r.layer) for r in layer_refs if sparse_grad.needs_sparse_grad(r.layer)]
    try:
        alphas = [q.alpha for q in rounders]
        steps = [a.log_ratio for a in acts if a.learnable]
        groups = [{"params": alphas, "lr": s.lr}] + ([{"params": steps, "lr": s.lr_act}] if steps else [])
        optimizer = torch.optim.Adam(groups)
        params = alphas + steps
        for step in _progress(range(s.iters), f"  {block or 'model'}", s.progress, leave=False):
            picks = torch.randint(len(entries), (s.batch_size,), generator=generator).tolist()
            loss = sum(output_loss(module(*snapshot(entries[i][0]), **snapshot(entries[i][1])), entries[i][2])
                       for i in picks) / s.batch_size
            if task is not None:
                j = int(torch.randint(len(task[0]), (1,), generator=generator))
                loss = loss + s.task_weight * s.task_loss_fn(run_forward(qmodel, task[0][j], s.forward_fn), task[1][j])
            beta = beta_schedule(step, s.iters)
            if beta is not None:
                loss = loss + s.reg_weight * rounding_regularizer(rounders, beta)
            optimizer.zero_grad(set_to_none=True)
            for param, grad in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
                param.grad = grad
            optimizer.step()
        with torch.no_grad():
            h = torch.cat([q.h().reshape(-1) for q in rounders])
            binary = float(((h == 0) | (h == 1)).float().mean())
        for q in rounders:
            q.hard = True
        for a in acts:
            a.drop_prob = 0.0
        learned = _eval_loss(module, entries)
        integers = {r.layer_name: q.integers() for r, q in zip(layer_refs, rounders)}
        amaxes = {r.name: a.learned_amax().detach() for r, a in zip(act_refs, acts) if a.learnable}
    finally:
        for handle in sparse:
            sparse_grad.uninstall(handle)
        for layer, attr, original in swaps:
            setattr(layer, attr, original)
    return rtn, learned, binary, integers, amaxes


def _apply(refs_by_layer, acts_by_name, integers, amaxes, method):
    for name, q in integers.items():
        ref = refs_by_layer[name]
        weight_payload.write_integer_weight(ref.layer, ref.quantizer, q)
        setattr(ref.quantizer, weight_payload.MARK, method)
    for name, amax in amaxes.items():
        set_amax(acts_by_name[name].quantizer, amax)


def reconstruct(qmodel, float_model, data, *, forward_fn=None, method="adaround", iters=100, batch_size=1,
                loss="output", task_loss_fn=None, keep=None, blocks=None, inputs="quant", learn_act=False,
                drop_prob=0.5, lr=5e-2, lr_act=1e-3, reg_weight=0.1, task_weight=1.0, num_batches=None,
                cache_mb=2048, cache_dir=None, seed=0, resume_dir=None, progress=True):
    """Learn the weight rounding of a calibrated model block by block (see the module docstring).

    Args:
        qmodel: a quantized, calibrated model (``quantize_model`` + ``calibrate``); changed in place.
        float_model: the float model it was made from (``copy.deepcopy`` taken before ``quantize_model``).
        data: calibration batches (an iterable; ``num_batches`` caps it); ``forward_fn(model, batch)`` as in
            ``calibrate``.
        method: ``"adaround"`` (one layer at a time), ``"brecq"`` (blocks from the module tree, or ``blocks``)
            or ``"qdrop"`` (BRECQ with each activation kept float with probability ``drop_prob`` while learning).
        iters: optimisation steps per block; ``batch_size``: cached block calls per step.
        loss: ``"output"`` (block output error) or ``"task"`` (adds ``task_weight * task_loss_fn(quant output,
            float output)`` on the whole model's outputs, default ``centerpoint_task_loss``; costs a full
            forward per step).
        keep: layers (globs / regexes / callable) whose weights stay round-to-nearest. Layers left float by
            ``skip`` or ``keep_float`` are never touched.
        blocks: module names / patterns to reconstruct as blocks (BRECQ / QDrop), overriding the automatic ones.
        inputs: what a block is fed while learning: ``"quant"`` (default: the inputs the quantized model, with
            the blocks before already reconstructed, gives it, so each block compensates the error of the earlier
            ones, at one pass of the quantized model over the data per block) or ``"float"`` (the cached float
            inputs; no extra passes). On the embedded tiny CenterPoint (w4, AdaRound, 100 iters, 8 frames)
            ``"quant"`` reached mAP 0.442 where ``"float"`` (500 iters, 16 frames) reached 0.259 (fp32 0.457).
        learn_act: also learn the step sizes of the block's activation quantizers (LSQ; BRECQ / QDrop).
        lr, lr_act, reg_weight: Adam learning rates of the rounding variables / log step sizes; weight of the
            rounding regulariser.
        cache_mb / cache_dir: memory for the float block cache; beyond it batches spill to ``cache_dir`` or,
            without one, are left out (a warning says how many were used).
        seed: every random choice (sampled calls, QDrop masks) comes from generators seeded with it.
        resume_dir: save every finished block there and skip the blocks a previous run finished.
        progress: tqdm progress bars.

    Returns:
        a ``Table``: block, layers, loss_rtn, loss_learned (relative squared error on the cached calls), binary
        (fraction of rounding variables at exactly 0 or 1 before freezing), status, seconds.

    Raises:
        ValueError / TypeError: bad arguments, no data, a model that is not quantized and calibrated, a float
        model that does not match; all raised before the model is changed. An error during the optimisation
        leaves the blocks finished before it applied (and saved, with ``resume_dir``).

    Do not recalibrate weights afterwards (``calibrate`` recomputes weight amax from the new weights); load a
    saved calibration with ``load_calibration`` instead.
    """
    _check_args(method, iters, batch_size, loss, task_loss_fn, drop_prob, num_batches)
    if inputs not in ("float", "quant"):
        raise ValueError(f"inputs must be 'float' or 'quant', got {inputs!r}")
    refs, weights = _targets(qmodel, keep)
    _check_float(qmodel, float_model, weights)
    data = list(itertools.islice(data, num_batches))
    if not data:
        raise ValueError("data yielded no batches; pass a non-empty iterable of calibration batches")
    per_layer = method == "adaround"
    order = call_order(float_model, data[0], forward_fn)
    layer_names = [r.layer_name for r in weights]
    grouped = find_blocks(qmodel, layer_names, order, per_layer=per_layer, blocks=blocks)
    s = _Settings(iters=iters, batch_size=batch_size, learn_act=learn_act and not per_layer,
                  drop_prob=drop_prob if method == "qdrop" else 0.0, lr=lr, lr_act=lr_act, reg_weight=reg_weight,
                  task_weight=task_weight, forward_fn=forward_fn, progress=progress,
                  task_loss_fn=task_loss_fn or centerpoint_task_loss)
    state = ResumeState(resume_dir, {"method": method, "iters": iters, "batch_size": batch_size, "loss": loss,
                                     "seed": seed, "learn_act": s.learn_act, "drop_prob": s.drop_prob, "lr": lr,
                                     "reg_weight": reg_weight, "batches": len(data), "inputs": inputs,
                                     "blocks": [[b, held] for b, held in grouped]})
    by_layer = {r.layer_name: r for r in weights}
    by_name = {r.name: r for r in refs}
    table = Table(["block", "layers", "loss_rtn", "loss_learned", "binary", "status", "seconds"],
                  title=f"reconstruct ({method}, {iters} iters, loss {loss}, {len(data)} batches)")
    todo = []
    for index, (block, held) in enumerate(grouped):
        if block in state.done:
            _apply(by_layer, by_name, *state.load(index), method)
            table.add([block, len(held), float("nan"), float("nan"), float("nan"), "resumed", 0.0])
        else:
            todo.append((index, block, held))
    if not todo:
        return table
    cache = BlockCache(float_model, [b for _, b, _ in todo], data, forward_fn, memory_mb=cache_mb,
                       spill_dir=cache_dir, keep_final=loss == "task",
                       progress=lambda it: _progress(it, "float cache", progress, total=len(data), leave=False))
    task = (data[:cache.batches_used], cache.final) if loss == "task" else None
    with eval_mode(qmodel):
        for index, block, held in _progress(todo, "reconstruct", progress):
            start = time.perf_counter()
            acts = [] if per_layer else [r for r in refs if r.role == "input" and r.active
                                         and r.quantizer.amax is not None and inside(r.layer_name, block)]
            generator = torch.Generator().manual_seed(seed + index)
            entries = list(cache.entries(block))
            if inputs == "quant":
                fed = capture_inputs(qmodel, block, data[:cache.batches_used], forward_fn)
                if len(fed) != len(entries):
                    raise RuntimeError(f"block {block!r} is called {len(fed)} times by the quantized model but "
                                       f"{len(entries)} times by the float model; use inputs='float'")
                entries = [(args, kwargs, out) for (args, kwargs), (_, _, out) in zip(fed, entries)]
            rtn, learned, binary, integers, amaxes = _learn_block(
                qmodel, block, [by_layer[n] for n in held], acts, entries, s, generator, task)
            cache.drop(block)
            if learned > rtn:
                integers = {n: weight_payload.integer_weight(by_layer[n].quantizer, by_layer[n].layer.weight)
                            for n in held}
                amaxes, status = {}, "kept round-to-nearest (learned was worse)"
            else:
                status = "learned"
            _apply(by_layer, by_name, integers, amaxes, method)
            state.save(index, block, integers, amaxes)
            table.add([block, len(held), rtn, learned, binary, status, time.perf_counter() - start])
    return table
