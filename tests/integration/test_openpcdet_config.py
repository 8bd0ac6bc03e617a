"""OpenPCDet config handling of the PTQ driver (integration.backends.openpcdet.config) on plain dicts and
temporary folder layouts; no OpenPCDet needed."""
import importlib.util
import os

import pytest

from integration.backends.openpcdet import config as pcdet_config
from integration.driver.errors import DriverError


def nuscenes_cfg(data_path="/nowhere", version="v1.0-trainval"):
    return {"DATA_CONFIG": {
        "DATASET": "NuScenesDataset", "DATA_PATH": data_path, "VERSION": version, "MAX_SWEEPS": 10,
        "INFO_PATH": {"train": ["nuscenes_infos_10sweeps_train.pkl"], "test": ["nuscenes_infos_10sweeps_val.pkl"]}}}


def waymo_cfg(data_path):
    return {"DATA_CONFIG": {"DATASET": "WaymoDataset", "DATA_PATH": data_path,
                            "PROCESSED_DATA_TAG": "waymo_processed_data_v0_5_0",
                            "DATA_SPLIT": {"train": "train", "test": "val"}}}


def devkit_root(tmp_path, version="v1.0-mini", infos=True):
    root = tmp_path / "nuscenes"
    (root / version).mkdir(parents=True)
    (root / version / "sample.json").write_text("[]")
    if infos:
        for split in ("train", "val"):
            (root / f"nuscenes_infos_10sweeps_{split}.pkl").write_bytes(b"x")
    return root


def test_devkit_dataroot_is_linked_below_work_dir_and_version_follows_the_data(tmp_path):
    root = devkit_root(tmp_path)
    cfg = nuscenes_cfg()
    path = pcdet_config.set_data_path(cfg, str(root), str(tmp_path / "work"))
    assert cfg["DATA_CONFIG"]["VERSION"] == "v1.0-mini"  # the only version the root holds
    assert path == str(tmp_path / "work" / "pcdet_data") == cfg["DATA_CONFIG"]["DATA_PATH"]
    assert os.path.realpath(os.path.join(path, "v1.0-mini")) == os.path.realpath(root)
    assert pcdet_config.missing_inputs(cfg["DATA_CONFIG"]) == []
    # a second call (next run, same work dir) reuses the link
    assert pcdet_config.set_data_path(nuscenes_cfg(), str(root), str(tmp_path / "work")) == path


def test_pcdet_layout_parent_is_used_as_is(tmp_path):
    parent = tmp_path / "data" / "nuscenes"
    (parent / "v1.0-trainval" / "v1.0-trainval").mkdir(parents=True)
    (parent / "v1.0-trainval" / "v1.0-trainval" / "sample.json").write_text("[]")
    cfg = nuscenes_cfg()
    assert pcdet_config.set_data_path(cfg, str(parent), str(tmp_path / "work")) == str(parent)
    assert cfg["DATA_CONFIG"]["VERSION"] == "v1.0-trainval"
    assert not (tmp_path / "work").exists()


def test_no_data_root_keeps_the_config_path():
    cfg = nuscenes_cfg("/data/nuscenes")
    assert pcdet_config.set_data_path(cfg, None, "/tmp/unused") == "/data/nuscenes"


def test_missing_info_files_name_the_prepare_command(tmp_path):
    root = devkit_root(tmp_path, infos=False)
    cfg = nuscenes_cfg()
    pcdet_config.set_data_path(cfg, str(root), str(tmp_path / "work"))
    missing = pcdet_config.missing_inputs(cfg["DATA_CONFIG"])
    assert [os.path.basename(p) for p in missing] == ["nuscenes_infos_10sweeps_train.pkl",
                                                        "nuscenes_infos_10sweeps_val.pkl"]
    with pytest.raises(DriverError, match="prepare_data.py nuscenes --framework openpcdet"):
        pcdet_config.check_inputs(cfg["DATA_CONFIG"])


def test_waymo_inputs(tmp_path):
    cfg = waymo_cfg(str(tmp_path))
    assert len(pcdet_config.missing_inputs(cfg["DATA_CONFIG"])) == 3
    (tmp_path / "ImageSets").mkdir()
    for split in ("train", "val"):
        (tmp_path / "ImageSets" / f"{split}.txt").write_text("segment-1\n")
    (tmp_path / "waymo_processed_data_v0_5_0").mkdir()
    assert pcdet_config.missing_inputs(cfg["DATA_CONFIG"]) == []


def test_unsupported_dataset_is_refused():
    with pytest.raises(DriverError, match="KittiDataset"):
        pcdet_config.missing_inputs({"DATASET": "KittiDataset", "DATA_PATH": "/x"})


def test_calibration_cfg_reads_training_split_in_test_mode():
    original = nuscenes_cfg()["DATA_CONFIG"]
    calib = pcdet_config.calibration_dataset_cfg(original)
    assert calib["INFO_PATH"]["test"] == ["nuscenes_infos_10sweeps_train.pkl"]
    assert original["INFO_PATH"]["test"] == ["nuscenes_infos_10sweeps_val.pkl"]  # the input is untouched
    waymo = pcdet_config.calibration_dataset_cfg(waymo_cfg("/w")["DATA_CONFIG"])
    assert waymo["DATA_SPLIT"] == {"train": "train", "test": "train"}


@pytest.mark.skipif(importlib.util.find_spec("waymo_open_dataset") is not None,
                    reason="waymo-open-dataset is installed here, so nothing is missing")
def test_waymo_evaluation_says_what_to_install():
    with pytest.raises(DriverError, match="waymo-open-dataset"):
        pcdet_config.check_eval_dependencies({"DATASET": "WaymoDataset"}, "waymo")
    pcdet_config.check_eval_dependencies({"DATASET": "WaymoDataset"}, "kitti")  # KITTI-style metric: no TF


def test_locate_pcdet_rejects_a_folder_that_is_not_a_source_tree(tmp_path):
    with pytest.raises(DriverError, match="not an OpenPCDet source tree"):
        pcdet_config.locate_pcdet(str(tmp_path))


def test_config_path_is_also_looked_up_below_tools(tmp_path):
    cfg_file = tmp_path / "tools" / "cfgs" / "m.yaml"
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text("CLASS_NAMES: []\n")
    assert pcdet_config.resolve_config_path("cfgs/m.yaml", str(tmp_path)) == str(cfg_file)
    assert pcdet_config.resolve_config_path("tools/cfgs/m.yaml", str(tmp_path)) == str(cfg_file)
    with pytest.raises(DriverError, match="--config"):
        pcdet_config.resolve_config_path("cfgs/other.yaml", str(tmp_path))
