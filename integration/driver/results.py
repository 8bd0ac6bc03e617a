"""The driver's one comparison table: mode, mAP, NDS, per-class AP, ms/frame, calibration seconds, peak memory of
calibration and evaluation (MiB: resident set on CPU, allocated tensors on CUDA; ``integration.driver.memory``)."""
import json
import os

from pytorch_quantization.ptq.atomic_io import atomic_write_text
from pytorch_quantization.ptq.table import Table


def build_table(rows, classes):
    """``rows``: dicts with mode, mAP, NDS, class_AP, ms_per_frame, calib_s, calib_peak_mib, eval_peak_mib and
    memory (``"rss"`` or ``"cuda"``) (None where not run); with ``reconstruct`` (what ``--reconstruct`` /
    ``--bits-budget`` did to a quantized mode) and ``reconstruct_s`` (its seconds, part of calib s) in any row, two
    more columns."""
    memory = "CUDA" if rows and rows[0].get("memory") == "cuda" else "RSS"
    learned = any(r.get("reconstruct") for r in rows)
    columns = (["mode", "mAP", "NDS"] + [f"AP {c}" for c in classes]
               + ["ms/frame", "calib s", f"calib peak {memory} MiB", f"eval peak {memory} MiB"]
               + (["reconstruct", "of which recon s"] if learned else []))
    table = Table(columns, title="CenterPoint PTQ comparison")
    for r in rows:
        table.add([r["mode"], r["mAP"], r["NDS"]] + [r["class_AP"].get(c) for c in classes]
                  + [r["ms_per_frame"], r["calib_s"], r.get("calib_peak_mib"), r.get("eval_peak_mib")]
                  + ([r.get("reconstruct"), r.get("reconstruct_s")] if learned else []))
    return table


def write_results(work_dir, table, rows, run_info):
    """``results.md`` (the table) and ``results.json`` (rows + how they were made), each atomically."""
    atomic_write_text(os.path.join(work_dir, "results.md"), table.to_markdown())
    payload = {"run": run_info, "results": rows}
    atomic_write_text(os.path.join(work_dir, "results.json"), json.dumps(payload, indent=2, sort_keys=True) + "\n")
