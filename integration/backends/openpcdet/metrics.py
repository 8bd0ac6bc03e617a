"""One table row (mAP, NDS, per-class AP) from what OpenPCDet's ``dataset.evaluation`` produced, in the
same form as ``integration.driver.results.summarize_nuscenes`` gives for MMDetection3D.

* nuScenes: ``NuScenesDataset.evaluation`` writes nuscenes-devkit's ``metrics_summary.json`` into its
  output folder; mAP = ``mean_ap``, NDS = ``nd_score``, per-class AP = ``mean_dist_aps`` (the mean over
  the 0.5 / 1 / 2 / 4 m matching distances, as in the MMDetection3D table).
* Waymo: the returned dict holds ``OBJECT_TYPE_TYPE_<TYPE>_LEVEL_<k>/AP`` and ``/APH``
  (``compat.waymo_eval``); the row has the same columns as MMDetection3D's Waymo row: mAPH and mAP at LEVEL_2
  and LEVEL_1, overall (the mean over Vehicle, Pedestrian, Cyclist) and per class.
"""
import json
import os

from integration.data.waymo.metric import summarize, table_row

__all__ = ["summarize_nuscenes_summary", "summarize_waymo"]


def summarize_nuscenes_summary(summary_path, classes):
    """Row values from a devkit ``metrics_summary.json``."""
    if not os.path.isfile(summary_path):
        raise FileNotFoundError(f"the nuScenes evaluation wrote no {summary_path}")
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    per_class = summary.get("mean_dist_aps", {})
    return {"mAP": float(summary["mean_ap"]), "NDS": float(summary["nd_score"]),
            "class_AP": {c: (float(per_class[c]) if c in per_class else None) for c in classes}}


def summarize_waymo(result):
    """The Waymo table row (``integration.data.waymo.metric.TABLE_COLUMNS``) from the dict OpenPCDet's Waymo
    evaluation returns (keys ``OBJECT_TYPE_TYPE_<TYPE>_LEVEL_<k>/AP`` and ``/APH``)."""
    breakdowns = {}
    for key, value in result.items():
        name, _, kind = key.partition("/")
        if name.startswith("OBJECT_TYPE_") and kind in ("AP", "APH"):
            breakdowns.setdefault(name, {})["m" + kind] = float(value)
    try:
        return table_row(summarize(breakdowns))
    except KeyError as err:
        raise KeyError(f"Waymo result has no {err} breakdown: {sorted(result)[:5]}...") from None
