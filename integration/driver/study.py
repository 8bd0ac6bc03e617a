"""``--study``: every mode x calibration method in one run, with paired-bootstrap intervals against fp32.

fp32 is evaluated once (first; it is added when ``--modes`` lacks it). Per quantized mode ONE copy of the float
model is quantized; a weight-only mode is one row (its amaxes come from the weights). A mode with activation
quantizers gets ONE statistics pass over the calibration frames (``ptq.collect_statistics``: maxima and both
histogram variants at once, plus a few cached layer inputs when ``auto`` is asked for) and every method's amaxes
are computed from it (``ptq.compute_amax`` / ``ptq.auto_amax``), never re-collected. A combination whose
``calib_<mode>_<method>.json`` in ``--calib-file DIR`` was made with this run's settings is loaded instead (a
file that does not fit is ignored and recalibrated). Each combination's calibration is written with the method's
metadata (auto's per-quantizer choices included), its clipping diagnostics are kept (warnings go to the table's
notes), each layer's own output SQNR is measured on one calibration frame (``ptq.sensitivity(mode="proxy")``),
and it is evaluated with the config's metric while the per-frame detection records are captured from the
nuscenes-devkit evaluation (``integration.data.nuscenes_records``). ``study_report`` turns the rows into the
table and plots; ``bootstrap`` gives each row's difference to fp32 with its 95% paired-bootstrap interval.
"""
import argparse
import copy
import dataclasses
import os
import time
from typing import Optional

from integration.data.nuscenes_records import capture_detection_eval, frame_records
from integration.driver import calib_files, pipeline, study_report
from integration.driver.bootstrap import Intervals
from integration.driver.errors import DriverError

__all__ = ["Combination", "plan", "plan_files", "run_study"]

HISTOGRAM_METHODS = ("percentile", "mse", "entropy")


@dataclasses.dataclass
class Combination:
    """One row of the study: ``method`` None for a weight-only mode; ``skip_zeros`` None where it does not apply."""

    mode: str
    method: Optional[str]
    skip_zeros: Optional[bool]
    reuse: Optional[str] = None

    @property
    def label(self):
        if self.method is None:
            return f"{self.mode} (weights only)"
        return f"{self.mode} {self.method}" + ("+skip_zeros" if self.skip_zeros else "")

    @property
    def file_name(self):
        tail = "" if self.method is None else f"_{self.method}" + ("_skipzeros" if self.skip_zeros else "")
        return f"calib_{self.mode}{tail}.json"

    def settings(self, args):
        """``args`` with this combination's calibration method and skip_zeros (what its file records)."""
        method = self.method or "max"
        return argparse.Namespace(**dict(vars(args), calib_method=method, skip_zeros=bool(self.skip_zeros)))


def _has_activations(mode):
    from pytorch_quantization.ptq.config import PRESETS
    return PRESETS[mode]["input"] is not None


def _is_fp8(mode):
    from pytorch_quantization.ptq.config import PRESETS
    return isinstance(PRESETS[mode]["input"]["num_bits"], (tuple, list))


def _variants(skip_zeros):
    return (False, True) if skip_zeros == "both" else (bool(skip_zeros),)


def plan(args):
    """Every combination of the study, in run order, with the calibration file each one reuses (or None)."""
    combos = []
    for mode in args.modes:
        if mode == "fp32":
            continue
        if not _has_activations(mode):
            combos.append(Combination(mode, None, None))
            continue
        for method in args.calib_methods:
            if method == "entropy" and _is_fp8(mode):
                continue  # entropy calibration needs integer activation quantizers
            skips = _variants(args.skip_zeros) if method in HISTOGRAM_METHODS else (None,)
            combos.extend(Combination(mode, method, skip) for skip in skips)
    for combo in combos:
        combo.reuse = _fitting_file(args, combo)
    return combos


def _fitting_file(args, combo):
    """``--calib-file DIR``'s file for ``combo`` when it exists and records this run's settings, else None."""
    if args.calib_file is None:
        return None
    path = os.path.join(args.calib_file, combo.file_name)
    if not os.path.isfile(path):
        return None
    metadata = calib_files.check_file(path).get("metadata", {})
    try:
        calib_files.check_settings(path, combo.mode, metadata, combo.settings(args))
    except DriverError as err:
        print(f"not reusing {path}: {str(err).split(': ', 1)[-1]}")
        return None
    return path


def plan_files(args):
    """``{combination label: reused file or None}`` (what ``pipeline.prepare`` keeps and plans frames for)."""
    return {combo.label: combo.reuse for combo in plan(args)}


class _Progress:
    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def step(self, what):
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(f"[study {self.done}/{self.total}] {what} ({self.total - self.done} evaluation(s) left, "
              f"{elapsed / 60:.1f} min so far)", flush=True)


def _evaluate(backend, model, cfg, args, name):
    with capture_detection_eval() as captured:
        values, ms = pipeline._evaluate(backend, model, cfg, args, name)  # pylint: disable=protected-access
    return values, ms, frame_records(captured[-1]) if captured else None


def _layer_sqnr(model, example, backend):
    from pytorch_quantization import ptq
    table = ptq.sensitivity(model, mode="proxy", samples=[example], forward_fn=pipeline.forward_fn(backend))
    return dict(zip(table.column("layer"), table.column("layer_sqnr_db")))


def _calibrate(model, combo, stats, args):
    """Set ``combo``'s amaxes on ``model``; returns (method labels per quantizer, extra metadata)."""
    from pytorch_quantization import ptq
    if combo.method == "auto":
        chosen = ptq.auto_amax(model, stats)
        ptq.apply_amax(model, chosen.amaxes, chosen.labels)
        return chosen.labels, {"auto_choices": chosen.choices}
    amaxes = ptq.compute_amax(stats, combo.method, percentile=args.percentile, skip_zeros=bool(combo.skip_zeros))
    ptq.apply_amax(model, amaxes, combo.method)
    return combo.method, {}


def _mode_rows(ctx, mode, combos, progress):
    """Quantize one copy for ``mode``, one statistics pass, then calibrate + evaluate every combination."""
    from pytorch_quantization import ptq
    from pytorch_quantization.ptq.calibrate import AUTO_CACHE_BATCHES
    args, backend = ctx["args"], ctx["backend"]
    if combos[0].method is None:  # weight-only: the normal path (amaxes from the weights)
        combo = combos[0]
        model, seconds, metadata = pipeline.quantize_and_calibrate(ctx["float_model"], mode, combo.settings(args),
                                                                   combo.reuse, ctx["loader"], ctx["example"], backend)
        return [_finish(ctx, model, combo, seconds, metadata, None, progress)]
    model = copy.deepcopy(ctx["float_model"])
    forward = pipeline.forward_fn(backend)
    if args.fold_bn:
        ptq.fold_batchnorm(model, ctx["example"], forward_fn=forward)
    pipeline.quantize(model, mode, args.skip_layers or None)
    stats, stats_s = None, 0.0
    if any(c.reuse is None for c in combos):
        start = time.perf_counter()
        stats = ptq.collect_statistics(
            model, ctx["loader"], forward_fn=forward, skip_zeros="both" if len(_variants(args.skip_zeros)) > 1
            else _variants(args.skip_zeros)[0],
            cache_batches=AUTO_CACHE_BATCHES if any(c.method == "auto" for c in combos) else 0)
        stats_s = time.perf_counter() - start
        print(f"{mode}: one statistics pass over {stats.batches} calibration frames in {stats_s:.1f} s feeds "
              f"{sum(c.reuse is None for c in combos)} method(s)")
    rows = []
    for combo in combos:
        start = time.perf_counter()
        settings = combo.settings(args)
        if combo.reuse is not None:
            metadata = pipeline._load_calibration(model, mode, combo.reuse, settings)  # pylint: disable=W0212
            labels = metadata.get("calib_method", combo.method)
        else:
            labels, extra = _calibrate(model, combo, stats, args)
            metadata = dict(calib_files.run_settings(settings), mode=mode, framework=args.framework,
                            config=os.path.abspath(args.config) if os.path.isfile(args.config) else args.config,
                            statistics_pass_s=stats_s, **extra)
        diagnostics = ptq.clipping_diagnostics(model, stats, method=labels) if stats is not None else None
        row = _finish(ctx, model, combo, time.perf_counter() - start, metadata, diagnostics, progress)
        row["statistics_pass_s"] = stats_s
        rows.append(row)
    return rows


def _finish(ctx, model, combo, seconds, metadata, diagnostics, progress):
    """Save the calibration, measure layer SQNR, evaluate; the row of ``combo``."""
    from pytorch_quantization import ptq
    args, backend = ctx["args"], ctx["backend"]
    ptq.save_calibration(model, os.path.join(args.work_dir, combo.file_name), metadata=metadata)
    sqnr = _layer_sqnr(model, ctx["example"], backend)
    progress.step(f"evaluating {combo.label}")
    values, ms, records = _evaluate(backend, model, ctx["cfg"], args, combo.file_name[len("calib_"):-5])
    clipped = {}
    warnings = []
    if diagnostics is not None:
        for rec in diagnostics.table.records():
            clipped[rec["layer"]] = max(clipped.get(rec["layer"], 0.0), rec["clipped_fraction"])
        warnings = list(diagnostics.warnings)
    return dict(label=combo.label, mode=combo.mode, method=combo.method, skip_zeros=combo.skip_zeros, **values,
                ms_per_frame=ms, calib_s=seconds, calib_file=combo.file_name, reused=combo.reuse,
                auto_choices=metadata.get("auto_choices") if metadata else None, warnings=warnings,
                layer_clipped=clipped, layer_sqnr_db=sqnr, records=records)


def run_study(args, backend, cfg, float_model, files, calib_frames, loader, example):
    """The whole study (module docstring); writes the table, its notes and the plots to the work dir."""
    del files  # re-planned here with the full combinations
    combos = plan(args)
    ctx = dict(args=args, backend=backend, cfg=cfg, float_model=float_model, loader=loader, example=example)
    progress = _Progress(len(combos) + 1)
    progress.step("evaluating fp32 (the baseline of every interval)")
    values, ms, baseline = _evaluate(backend, float_model, cfg, args, "fp32")
    rows = [dict(label="fp32", mode="fp32", method=None, skip_zeros=None, **values, ms_per_frame=ms, calib_s=None,
                 calib_file=None, reused=None, auto_choices=None, warnings=[], layer_clipped={}, layer_sqnr_db={},
                 records=baseline)]
    for mode in dict.fromkeys(c.mode for c in combos):
        rows += _mode_rows(ctx, mode, [c for c in combos if c.mode == mode], progress)
    intervals = Intervals(baseline) if baseline is not None else None
    for row in rows:
        records = row.pop("records")
        full = None if records is None else intervals.full(records)
        row["fast_mAP"], row["fast_NDS"] = (None, None) if full is None else (full["mAP"], full["NDS"])
        row["intervals"] = None
        if intervals is not None and row["mode"] != "fp32" and records is not None:
            row["intervals"] = {k: r.as_dict() for k, r in intervals.compare(records).items()}
    classes = [c[len("AP "):] for c in backend.metric_columns(cfg) if c.startswith("AP ")]
    study_report.write(args, rows, classes, calib_frames,
                       None if baseline is None else len(baseline))
