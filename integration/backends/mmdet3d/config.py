"""Reading an MMDetection3D config for the driver: data-root rewriting and pre-flight checks.

Config files fix their dataset paths at parse time (``data_root + 'nuscenes_infos_val.pkl'``), so
overriding the ``data_root`` variable afterwards changes nothing. ``set_data_root`` instead rebases
every path-like string that starts with the config's own ``data_root`` and every ``data_root`` key.
"""
import os

from integration.driver.errors import DriverError

DATASET_KEYS = ("train_dataloader", "val_dataloader", "test_dataloader")


def load_config(path):
    from mmengine.config import Config
    try:
        return Config.fromfile(path)
    except Exception as err:  # mmengine raises many types for a broken config
        raise DriverError(f"--config: cannot load {path}: {type(err).__name__}: {err}".splitlines()[0]) from None


def set_data_root(cfg, root):
    """Point every dataset, sampler database and metric of ``cfg`` at ``root`` (in place)."""
    old = cfg.get("data_root")
    new = root.rstrip("/") + "/"

    def rebase(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data_root" and isinstance(value, str):
                    node[key] = new
                else:
                    node[key] = rebase(value)
            return node
        if isinstance(node, list):
            return [rebase(v) for v in node]
        if isinstance(node, tuple):
            return tuple(rebase(v) for v in node)
        if old and isinstance(node, str) and node.startswith(old):
            return new + node[len(old):]
        return node

    for key in list(cfg.keys()):
        cfg[key] = rebase(cfg[key])
    cfg["data_root"] = new
    return cfg


def base_dataset_cfg(dataset_cfg):
    """The innermost dataset of wrappers such as CBGSDataset / RepeatDataset."""
    while "dataset" in dataset_cfg and isinstance(dataset_cfg["dataset"], dict):
        dataset_cfg = dataset_cfg["dataset"]
    return dataset_cfg


def evaluator_cfg(cfg):
    """The config's test metric (``test_evaluator``, else ``val_evaluator``); error when it has none."""
    for key in ("test_evaluator", "val_evaluator"):
        ev = cfg.get(key)
        if ev:
            return ev
    raise DriverError("--config: the config defines no test_evaluator or val_evaluator, so there is no "
                      "metric to compare modes with; add one (e.g. dict(type='NuScenesMetric', ...))")


WAYMO_METRICS = ("WaymoOpMetric", "WaymoMetric")


def is_waymo(cfg):
    """True when the config's metric is (MMDetection3D's or our) Waymo metric."""
    return evaluator_cfg(cfg).get("type") in WAYMO_METRICS


def use_waymo_op_metric(cfg):
    """Replace MMDetection3D's ``WaymoMetric`` (it calls a binary no package ships) by ``WaymoOpMetric``."""
    ev = evaluator_cfg(cfg)
    if ev.get("type") == "WaymoMetric":
        import integration.backends.mmdet3d.waymo_metric  # noqa: F401  registers WaymoOpMetric
        ev["type"] = "WaymoOpMetric"


def prepare_command(root, waymo=False):
    if waymo:
        return f"python integration/prepare_data.py waymo --framework mmdet3d --root {root}"
    version = "v1.0-mini" if os.path.isdir(os.path.join(root, "v1.0-mini")) else "v1.0-trainval"
    return (f"python integration/prepare_data.py nuscenes --framework mmdet3d --root {root} "
            f"--version {version}")


def check_info_files(cfg, root):
    """Every annotation file the driver reads must exist below ``root``; say how to make them if not."""
    needed = []
    for key in ("train_dataloader", "val_dataloader"):
        ds = base_dataset_cfg(cfg[key]["dataset"])
        ann = ds.get("ann_file")
        if ann:
            needed.append(ann if os.path.isabs(ann) else os.path.join(ds.get("data_root", ""), ann))
    ev = evaluator_cfg(cfg)
    if ev.get("ann_file"):
        needed.append(ev["ann_file"])
    missing = [p for p in needed if not os.path.isfile(p)]
    waymo = is_waymo(cfg)
    if missing:
        other = " (it was converted for OpenPCDet)" if waymo and os.path.isdir(
            os.path.join(root, "waymo_processed_data_v0_5_0")) else ""
        raise DriverError(f"--data-root: {root} has no {os.path.relpath(missing[0], root)}{other}; prepare it with: "
                          f"{prepare_command(root, waymo)}")


def fill_dataset_version(cfg):
    """Give the val / test datasets the nuScenes version their info file was made from.

    NuScenesDataset defaults to ``v1.0-trainval`` and info-file metadata does not override it, so
    an unmodified config evaluated on ``v1.0-mini`` data makes NuScenesMetric open the wrong devkit
    tables. A version the config sets explicitly is kept.
    """
    from mmengine.fileio import load
    for key in ("val_dataloader", "test_dataloader"):
        ds = base_dataset_cfg(cfg[key]["dataset"])
        meta = ds.get("metainfo") or {}
        if "version" in meta or not ds.get("ann_file"):
            continue
        ann = ds["ann_file"] if os.path.isabs(ds["ann_file"]) else os.path.join(ds.get("data_root", ""),
                                                                                   ds["ann_file"])
        version = (load(ann).get("metainfo") or {}).get("version")
        if version:
            ds["metainfo"] = dict(meta, version=version)
