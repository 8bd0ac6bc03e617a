"""One table row (mAP, NDS, per-class AP) from MMDetection3D's ``NuScenesMetric`` result dict."""
import re

__all__ = ["summarize_nuscenes"]

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
