"""The driver's one comparison table: mode, the backend's metric columns, ms/frame, calibration seconds, peak
memory of calibration and evaluation (MiB: resident set on CPU, allocated tensors on CUDA;
``integration.driver.memory``)."""
import json
import os

from pytorch_quantization.ptq.atomic_io import atomic_write_text
from pytorch_quantization.ptq.table import Table


def build_table(rows, metric_columns):
    """``rows``: dicts with mode, ms_per_frame, calib_s, calib_peak_mib, eval_peak_mib, memory (``"rss"`` or
    ``"cuda"``) and the ``metric_columns`` (``Backend.metric_columns``; ``AP <class>`` may come from a row's
    ``class_AP`` dict); None where not run. With ``reconstruct`` (what ``--reconstruct`` / ``--bits-budget`` did to
    a quantized mode) and ``reconstruct_s`` (its seconds, part of calib s) in any row, two more columns."""
    memory = "CUDA" if rows and rows[0].get("memory") == "cuda" else "RSS"
    learned = any(r.get("reconstruct") for r in rows)
    table = Table(["mode"] + list(metric_columns)
                  + ["ms/frame", "calib s", f"calib peak {memory} MiB", f"eval peak {memory} MiB"]
                  + (["reconstruct", "of which recon s"] if learned else []), title="CenterPoint PTQ comparison")
    for r in rows:
        values = dict({f"AP {c}": v for c, v in (r.get("class_AP") or {}).items()}, **r)
        table.add([r["mode"]] + [values.get(c) for c in metric_columns]
                  + [r["ms_per_frame"], r["calib_s"], r.get("calib_peak_mib"), r.get("eval_peak_mib")]
                  + ([r.get("reconstruct"), r.get("reconstruct_s")] if learned else []))
    return table


def write_results(work_dir, table, rows, run_info):
    """``results.md`` (the table) and ``results.json`` (rows + how they were made), each atomically."""
    atomic_write_text(os.path.join(work_dir, "results.md"), table.to_markdown())
    payload = {"run": run_info, "results": rows}
    atomic_write_text(os.path.join(work_dir, "results.json"), json.dumps(payload, indent=2, sort_keys=True) + "\n")
