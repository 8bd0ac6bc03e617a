"""``--bits-budget`` and ``--reconstruct``: what the driver does to a calibrated model before it is saved.

Order: mixed precision first (``ptq.mixed_precision`` on the proxy sensitivity ranking of one calibration frame;
it changes weight bit widths, and reconstruction must learn the rounding of the final grid), then
``ptq.reconstruct`` on the calibration loader against the float model the quantized one was made from (BRECQ and
QDrop also learn the step sizes of the activation quantizers inside each block, ``learn_act``, as both papers do). The
calibration file's metadata records the promoted layers (``mixed_precision``), so a reused file replays them before
its amaxes and learned weights are loaded (``replay``).
"""
import time

from integration.driver.errors import DriverError

__all__ = ["apply", "replay", "label", "reconstructable"]


def label(args, model):
    """What the table's ``reconstruct`` column says for the quantized ``model`` of this run (None: nothing used)."""
    parts = []
    if args.reconstruct is not None and reconstructable(model):
        parts.append(f"{args.reconstruct} x{args.reconstruct_iters}" + (" +task" if args.task_loss else ""))
    if args.bits_budget is not None:
        parts.append(f"budget {args.bits_budget:g} bits")
    return ", ".join(parts) or None


def reconstructable(model):
    """True when ``model`` has an enabled integer weight quantizer (fp8 weights have none to round)."""
    from pytorch_quantization import ptq
    return any(r.role == "weight" and r.active and not isinstance(r.quantizer.num_bits, tuple)
               for r in ptq.find_quantizers(model))


def _mixed_precision(model, mode, args, example, forward):
    from pytorch_quantization import ptq
    ranking = ptq.sensitivity(model, mode="proxy", samples=[example], forward_fn=forward)
    try:
        table = ptq.mixed_precision(model, ranking, budget=args.bits_budget)
    except ValueError as err:
        raise DriverError(f"--bits-budget: mode {mode}: {err}".splitlines()[0]) from None
    print(table.title)
    return [layer for layer, promoted in zip(table.column("layer"), table.column("promoted")) if promoted]


def apply(model, float_model, mode, args, loader, example, forward, backend):
    """Mixed precision and reconstruction of the calibrated ``model`` of ``mode`` in place; returns
    ``(metadata to add to its calibration file, seconds)``."""
    from pytorch_quantization import ptq
    metadata, start = {}, time.perf_counter()
    if args.bits_budget is not None:
        metadata["mixed_precision"] = _mixed_precision(model, mode, args, example, forward)
    if args.reconstruct is not None and reconstructable(model):
        table = ptq.reconstruct(model, float_model, loader, forward_fn=forward, method=args.reconstruct,
                                iters=args.reconstruct_iters, loss="task" if args.task_loss else "output",
                                task_loss_fn=backend.task_loss_fn() if args.task_loss else None, seed=args.seed,
                                learn_act=args.reconstruct != "adaround")
        learned = table.column("status").count("learned")
        print(f"{table.title}: {learned} of {len(table.rows)} blocks learned")
    elif args.reconstruct is not None:
        print(f"--reconstruct: mode {mode} has no integer weights to round; left as calibrated")
    return metadata, time.perf_counter() - start


def replay(model, mode, metadata, args):
    """Before a reused file of ``mode`` is loaded: promote the layers its ``metadata`` lists, as the run that wrote
    it did (the file's weight bit widths must match the model's)."""
    from pytorch_quantization import ptq
    promoted = metadata.get("mixed_precision")
    if not promoted:
        return
    try:
        ptq.mixed_precision(model, promoted, budget=args.bits_budget)
    except (ValueError, TypeError) as err:
        raise DriverError(f"--calib-file: mode {mode}: its mixed-precision layers do not fit: {err}"
                          .splitlines()[0]) from None
