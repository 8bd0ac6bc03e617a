"""The study's outputs: one table (results.md with its notes, results.json, results.csv) and three PNG plots.

Markdown: configuration, mAP and NDS with each one's difference to fp32 and its 95% paired-bootstrap interval
(``*`` where the interval excludes zero), ms/frame and calibration seconds; the notes say how the intervals were
made, which configuration the per-layer plot shows, auto's choices, and every clipping warning. CSV adds the
per-class AP. Plots: ``study_map.png`` (mAP and NDS differences with intervals), ``study_class_ap.png`` (per-class
AP differences), ``study_layers.png`` (per-layer clipped fraction and own output SQNR of the chosen configuration:
the quantized-activation row with the best mAP).
"""
import collections
import json
import os

from pytorch_quantization.ptq import study_plots
from pytorch_quantization.ptq.atomic_io import atomic_write_text
from pytorch_quantization.ptq.stats import BootstrapResult
from pytorch_quantization.ptq.table import Table
from integration.driver.bootstrap import CONFIDENCE, REPLICATES

__all__ = ["write", "chosen_row", "difference_cell", "PLOTS"]

PLOTS = ("study_map.png", "study_class_ap.png", "study_layers.png")


def difference_cell(interval):
    """``+0.0012 [-0.0030, +0.0051]`` with `` *`` when the interval excludes zero ('' without an interval)."""
    if interval is None:
        return ""
    mark = " *" if interval["excludes_zero"] else ""
    return f"{interval['delta']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]{mark}"


def chosen_row(rows):
    """The quantized-activation row with the highest mAP (the last quantized row when none quantizes activations)."""
    with_acts = [r for r in rows if r["method"] is not None]
    if with_acts:
        return max(with_acts, key=lambda r: r["mAP"])
    quantized = [r for r in rows if r["mode"] != "fp32"]
    return quantized[-1] if quantized else None


def _table(rows):
    table = Table(["configuration", "mAP", "ΔmAP [95% CI]", "NDS", "ΔNDS [95% CI]", "ms/frame", "calib s"],
                  title="CenterPoint PTQ study (differences to fp32; * = interval excludes 0)")
    for r in rows:
        iv = r["intervals"] or {}
        table.add([r["label"], r["mAP"], difference_cell(iv.get("mAP")), r["NDS"], difference_cell(iv.get("NDS")),
                   r["ms_per_frame"], r["calib_s"]])
    return table


def _csv_table(rows, classes):
    columns = ["configuration", "mode", "method", "skip_zeros", "mAP", "dmAP", "dmAP_low", "dmAP_high",
               "dmAP_resolved", "NDS", "dNDS", "dNDS_low", "dNDS_high", "dNDS_resolved"] \
        + [f"AP {c}" for c in classes] + ["ms_per_frame", "calib_s", "calib_file", "reused"]
    table = Table(columns)
    for r in rows:
        cells = [r["label"], r["mode"], r["method"], r["skip_zeros"], r["mAP"]]
        for metric in ("mAP", "NDS"):
            iv = (r["intervals"] or {}).get(metric)
            if metric == "NDS":
                cells.append(r["NDS"])
            cells += [None] * 4 if iv is None else [iv["delta"], iv["low"], iv["high"], iv["excludes_zero"]]
        cells += [r["class_AP"].get(c) for c in classes] + [r["ms_per_frame"], r["calib_s"], r["calib_file"],
                                                             r["reused"]]
        table.add(cells)
    return table


def _auto_summary(choices):
    kinds = collections.Counter(c["choice"].split(" ")[0] for c in choices.values())
    return ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())


def _notes(rows, frames, chosen):
    checks = [abs(r[f"fast_{m}"] - r[m]) for r in rows if r["fast_mAP"] is not None for m in ("mAP", "NDS")]
    if frames is None:
        lines = ["No per-frame detection records were captured (the metric is not the nuscenes-devkit's), so the "
                 "differences carry no interval."]
    else:
        lines = [f"Intervals: {100 * CONFIDENCE:.0f}% percentile intervals of a paired bootstrap over the {frames} "
                 f"validation frames ({REPLICATES} resamples drawn with replacement, the same draws for fp32 and "
                 f"every row); mAP and NDS are recomputed on each resample from per-frame matched detections "
                 f"(integration/data/nuscenes_ap.py; a frame drawn twice counts twice). On the full set that "
                 f"metric differs from the devkit's mAP and NDS by at most {max(checks):.1e}."]
    if chosen is not None:
        lines.append(f"study_layers.png shows {chosen['label']} (the best quantized-activation configuration).")
    for r in rows:
        if r["auto_choices"]:
            lines.append(f"{r['label']}: per-quantizer choices ({len(r['auto_choices'])} quantizers): "
                         f"{_auto_summary(r['auto_choices'])}; each one is in {r['calib_file']}.")
    passes = {r["mode"]: r["statistics_pass_s"] for r in rows if r.get("statistics_pass_s")}
    for mode, seconds in passes.items():
        lines.append(f"{mode}: one statistics pass ({seconds:.1f} s) fed every method.")
    for r in rows:
        lines += [f"warning ({r['label']}): {w}" for w in r["warnings"]]
    return lines


def _plots(work_dir, rows, classes, chosen):
    deltas = {metric: {r["label"]: BootstrapResult(**{k: v for k, v in r["intervals"][metric].items()
                                                       if k != "excludes_zero"})
                       for r in rows if r["intervals"]} for metric in ("mAP", "NDS")}
    if deltas["mAP"]:
        study_plots.plot_deltas(deltas["mAP"], os.path.join(work_dir, PLOTS[0]), metric="mAP")
    base = rows[0]["class_AP"]
    per_class = {r["label"]: {c: r["class_AP"][c] - base[c] for c in classes
                              if r["class_AP"].get(c) is not None and base.get(c) is not None}
                 for r in rows[1:]}
    if per_class:
        study_plots.plot_class_deltas(per_class, os.path.join(work_dir, PLOTS[1]))
    if chosen is not None and chosen["layer_sqnr_db"]:
        layers = list(chosen["layer_sqnr_db"])
        study_plots.plot_layers(layers, chosen["layer_clipped"], chosen["layer_sqnr_db"],
                                os.path.join(work_dir, PLOTS[2]), title=f"{chosen['label']}: per-layer clipping "
                                                                        f"and own output SQNR")


def write(args, rows, classes, calib_frames, frames):
    """Print the table and notes; write results.md / .json / .csv and the plots to ``args.work_dir``."""
    chosen = chosen_row(rows)
    table, notes = _table(rows), _notes(rows, frames, chosen)
    print(table)
    print("\n".join(notes))
    atomic_write_text(os.path.join(args.work_dir, "results.md"),
                      table.to_markdown() + "\n" + "\n".join(f"- {line}" for line in notes) + "\n")
    _csv_table(rows, classes).save(os.path.join(args.work_dir, "results.csv"))
    run_info = dict(vars(args), calib_frames=calib_frames, classes=classes, val_frames=frames,
                    bootstrap=dict(replicates=REPLICATES, confidence=CONFIDENCE, paired=True))
    payload = {"run": run_info, "results": rows, "notes": notes}
    atomic_write_text(os.path.join(args.work_dir, "results.json"),
                      json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    _plots(args.work_dir, rows, classes, chosen)
    print(f"wrote {os.path.join(args.work_dir, 'results.md')}, results.json, results.csv and the study plots")
