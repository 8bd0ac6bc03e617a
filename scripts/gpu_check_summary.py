"""The summary of scripts/gpu_check.sh: every step's status, the kernel targets and the CenterPoint rows.

    python scripts/gpu_check_summary.py OUT_DIR [--dry-run 0|1]

Reads OUT_DIR/steps.tsv (name, status, seconds, note per line), OUT_DIR/bench_kernels.json and
OUT_DIR/centerpoint/results.json when present; prints one table and writes OUT_DIR/summary.json
atomically. Exit status 0 when no step failed, 1 otherwise.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pytorch_quantization.ptq.atomic_io import atomic_write_text  # noqa: E402  pylint: disable=wrong-import-position

ROW_KEYS = ("mode", "mAP", "NDS", "ms/frame", "ms_per_frame")


def read_steps(path):
    steps = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise ValueError(f"{path}: malformed line {line!r}; expected name, status, seconds, note")
            name, status, seconds, note = fields
            steps.append({"step": name, "status": status, "seconds": int(seconds), "note": note})
    return steps


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--dry-run", type=int, choices=(0, 1), default=0)
    args = parser.parse_args(argv)
    steps = read_steps(os.path.join(args.out_dir, "steps.tsv"))
    bench = read_json(os.path.join(args.out_dir, "bench_kernels.json"))
    centerpoint = read_json(os.path.join(args.out_dir, "centerpoint", "results.json"))
    rows = [{k: v for k, v in row.items() if k in ROW_KEYS} for row in (centerpoint or {}).get("results", [])]
    summary = {
        "dry_run": bool(args.dry_run),
        "passed": all(s["status"] != "failed" for s in steps),
        "steps": steps,
        "bench_settings": (bench or {}).get("settings"),
        "kernel_targets": (bench or {}).get("summary", []),
        "centerpoint": rows,
    }
    print(f"\n== gpu_check summary{' (dry run on CPU: nothing timed means anything)' if args.dry_run else ''}")
    for s in steps:
        print(f"  {s['step']:<12}{s['status']:<9}{s['seconds']:>5}s  {s['note']}")
    for t in summary["kernel_targets"]:
        print(f"  kernel {t['op']:<12}{t['pass']:<8}{t['size']:>8} {t['measured']:7.2f}  target {t['target']:<34}"
              f"{'met' if t['met'] else 'NOT MET'}")
    for row in rows:
        print("  centerpoint " + "  ".join(f"{k}={v}" for k, v in row.items()))
    path = os.path.join(args.out_dir, "summary.json")
    atomic_write_text(path, json.dumps(summary, indent=1) + "\n")
    print(f"  written: {path}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
