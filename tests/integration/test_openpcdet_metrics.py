"""Rows of the comparison table from OpenPCDet evaluation outputs, and the table the driver writes."""
import json

import pytest

from integration.backends.openpcdet.metrics import summarize_nuscenes_summary, summarize_waymo
from integration.driver.results import build_table, write_results


def test_nuscenes_summary_gives_map_nds_and_mean_distance_ap(tmp_path):
    per_distance = {"car": {"0.5": 0.1, "1.0": 0.2, "2.0": 0.3, "4.0": 0.6}, "pedestrian": {"0.5": 0.0,
                    "1.0": 0.0, "2.0": 0.2, "4.0": 0.2}}
    summary = {"mean_ap": 0.2, "nd_score": 0.31, "label_aps": per_distance,
               "mean_dist_aps": {c: sum(v.values()) / 4 for c, v in per_distance.items()}}
    path = tmp_path / "metrics_summary.json"
    path.write_text(json.dumps(summary))
    row = summarize_nuscenes_summary(str(path), ["car", "pedestrian", "bus"])
    assert row["mAP"] == 0.2 and row["NDS"] == 0.31
    assert row["class_AP"]["car"] == pytest.approx(0.3) and row["class_AP"]["pedestrian"] == pytest.approx(0.1)
    assert row["class_AP"]["bus"] is None


def test_nuscenes_summary_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics_summary.json"):
        summarize_nuscenes_summary(str(tmp_path / "metrics_summary.json"), ["car"])


def test_waymo_row_from_openpcdet_keys():
    """Every type and level given: the row holds each class's values and the overall means over V/P/C."""
    values = {"VEHICLE": 0.6, "PEDESTRIAN": 0.5, "SIGN": 0.9, "CYCLIST": 0.4}
    result = {"recall/rcnn_0.3": 0.8}
    for name, v in values.items():
        for level, drop in ((1, 0.0), (2, 0.1)):
            result[f"OBJECT_TYPE_TYPE_{name}_LEVEL_{level}/AP"] = v - drop + 0.05
            result[f"OBJECT_TYPE_TYPE_{name}_LEVEL_{level}/APH"] = v - drop
    row = summarize_waymo(result)
    assert row["Vehicle L2 mAPH"] == pytest.approx(0.5) and row["Cyclist L1 mAP"] == pytest.approx(0.45)
    assert row["L2 mAPH"] == pytest.approx((0.5 + 0.4 + 0.3) / 3) and row["L1 mAP"] == pytest.approx(0.55)
    with pytest.raises(KeyError, match="LEVEL_1"):
        summarize_waymo({"x": 1.0})


def test_rows_make_the_driver_table(tmp_path):
    classes = ["Vehicle", "Pedestrian"]
    rows = [dict(mode="fp32", mAP=0.5, NDS=None, class_AP={"Vehicle": 0.6, "Pedestrian": 0.4}, ms_per_frame=12.5,
                 calib_s=None),
            dict(mode="w8a8", mAP=0.45, NDS=None, class_AP={"Vehicle": 0.55, "Pedestrian": 0.35},
                 ms_per_frame=20.0, calib_s=3.0)]
    table = build_table(rows, ["mAP", "NDS"] + [f"AP {c}" for c in classes])
    assert table.columns == ["mode", "mAP", "NDS", "AP Vehicle", "AP Pedestrian", "ms/frame", "calib s",
                             "calib peak RSS MiB", "eval peak RSS MiB"]
    assert table.column("AP Pedestrian") == [0.4, 0.35]
    assert table.column("eval peak RSS MiB") == [None, None]  # not measured in these rows
    write_results(str(tmp_path), table, rows, {"framework": "openpcdet"})
    text = (tmp_path / "results.md").read_text()
    assert "| w8a8 |" in text.replace("  ", " ")
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["run"] == {"framework": "openpcdet"} and payload["results"][1]["mAP"] == 0.45
