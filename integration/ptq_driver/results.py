"""The driver's one comparison table: mode, mAP, NDS, per-class AP, ms/frame, calibration seconds."""
import json
import os
import re

from pytorch_quantization.ptq.atomic_io import atomic_write_text
from pytorch_quantization.ptq.table import Table

_AP_KEY = re.compile(r"/(?P<cls>[A-Za-z_]+)_AP_dist_(?P<dist>[0-9.]+)$")


def summarize_nuscenes(metrics, classes):
    """mAP, NDS and per-class AP from NuScenesMetric's flat dict.

    Per-class AP is the mean over the matching distances (0.5, 1, 2, 4 m), the nuScenes definition
    that mAP averages over classes.
    """
    def single(suffix):
        hits = [v for k, v in metrics.items() if k.endswith(suffix)]
        if len(hits) != 1:
            raise KeyError(f"metric dict has {len(hits)} keys ending in {suffix!r}: {sorted(metrics)[:5]}...")
        return float(hits[0])

    per_dist = {c: [] for c in classes}
    for key, value in metrics.items():
        m = _AP_KEY.search(key)
        if m and m.group("cls") in per_dist:
            per_dist[m.group("cls")].append(float(value))
    class_ap = {c: (sum(v) / len(v) if v else None) for c, v in per_dist.items()}
    return {"mAP": single("/mAP"), "NDS": single("/NDS"), "class_AP": class_ap}


def build_table(rows, classes):
    """``rows``: dicts with mode, mAP, NDS, class_AP, ms_per_frame, calib_s (None where not run)."""
    columns = ["mode", "mAP", "NDS"] + [f"AP {c}" for c in classes] + ["ms/frame", "calib s"]
    table = Table(columns, title="CenterPoint PTQ comparison")
    for r in rows:
        table.add([r["mode"], r["mAP"], r["NDS"]] + [r["class_AP"].get(c) for c in classes]
                  + [r["ms_per_frame"], r["calib_s"]])
    return table


def write_results(work_dir, table, rows, run_info):
    """``results.md`` (the table) and ``results.json`` (rows + how they were made), each atomically."""
    atomic_write_text(os.path.join(work_dir, "results.md"), table.to_markdown())
    payload = {"run": run_info, "results": rows}
    atomic_write_text(os.path.join(work_dir, "results.json"), json.dumps(payload, indent=2, sort_keys=True) + "\n")
