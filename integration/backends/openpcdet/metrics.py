"""One table row (mAP, NDS, per-class AP) from what OpenPCDet's ``dataset.evaluation`` produced, in the
same form as ``integration.driver.results.summarize_nuscenes`` gives for MMDetection3D.

* nuScenes: ``NuScenesDataset.evaluation`` writes nuscenes-devkit's ``metrics_summary.json`` into its
  output folder; mAP = ``mean_ap``, NDS = ``nd_score``, per-class AP = ``mean_dist_aps`` (the mean over
  the 0.5 / 1 / 2 / 4 m matching distances, as in the MMDetection3D table).
* Waymo: the returned dict holds ``OBJECT_TYPE_TYPE_<CLASS>_LEVEL_2/APH``; mAP = the mean LEVEL_2 mAPH over
  the config's classes (Waymo's headline metric), per-class AP = each class's LEVEL_2 mAPH, NDS = None.
"""
import json
import os

__all__ = ["summarize_nuscenes_summary", "summarize_waymo", "WAYMO_KEY"]

WAYMO_KEY = "OBJECT_TYPE_TYPE_{}_LEVEL_2/APH"


def summarize_nuscenes_summary(summary_path, classes):
    """Row values from a devkit ``metrics_summary.json``."""
    if not os.path.isfile(summary_path):
        raise FileNotFoundError(f"the nuScenes evaluation wrote no {summary_path}")
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    per_class = summary.get("mean_dist_aps", {})
    return {"mAP": float(summary["mean_ap"]), "NDS": float(summary["nd_score"]),
            "class_AP": {c: (float(per_class[c]) if c in per_class else None) for c in classes}}


def summarize_waymo(result, classes):
    """Row values from the dict OpenPCDet's Waymo evaluation returns."""
    class_ap = {}
    for c in classes:
        key = WAYMO_KEY.format(c.upper())
        class_ap[c] = float(result[key]) if key in result else None
    found = [v for v in class_ap.values() if v is not None]
    if not found:
        raise KeyError(f"Waymo result has no {WAYMO_KEY.format('<CLASS>')} key for {classes}: "
                       f"{sorted(result)[:5]}...")
    return {"mAP": sum(found) / len(found), "NDS": None, "class_AP": class_ap}
