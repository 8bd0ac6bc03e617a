"""OpenPCDet configs for the PTQ driver: where the source tree is, loading a model config with its
``_BASE_CONFIG_`` (paths relative to ``tools/``), pointing the dataset at a data root, the pre-flight
checks, and the calibration split. Everything here works on plain dicts / EasyDicts, so it is tested
without OpenPCDet installed.
"""
import copy
import importlib.util
import os
import sys

from integration.data.prepare import working_directory
from integration.driver.errors import DriverError

__all__ = ["locate_pcdet", "resolve_config_path", "load_config", "set_data_path", "missing_inputs",
           "check_inputs", "calibration_dataset_cfg", "check_eval_dependencies", "WAYMO_INSTALL_HINT"]

PCDET_HINT = ("OpenPCDet is needed for --framework openpcdet: clone https://github.com/open-mmlab/OpenPCDet "
              "and pass --pcdet-root <its source tree> (its CUDA ops need not be built for --device cpu)")
WAYMO_INSTALL_HINT = ("OpenPCDet's Waymo dataset needs TensorFlow and waymo-open-dataset, and the metric its "
                      "TensorFlow 2.13 environment: bash scripts/setup_waymo.sh")
NUSCENES_INSTALL_HINT = "nuScenes evaluation needs the devkit: pip install nuscenes-devkit"


def _is_source_tree(root):
    return os.path.isfile(os.path.join(root, "pcdet", "__init__.py")) and os.path.isdir(os.path.join(root, "tools"))


def locate_pcdet(pcdet_root=None):
    """The OpenPCDet source tree (``--pcdet-root``, else the one an installed ``pcdet`` comes from).

    The tree's ``tools/`` folder is needed too (model configs, ``eval_utils``); the tree is put first on
    ``sys.path`` so ``import pcdet`` finds it.
    """
    if pcdet_root is not None:
        root = os.path.abspath(pcdet_root)
        if not _is_source_tree(root):
            raise DriverError(f"--pcdet-root: {root} is not an OpenPCDet source tree (no pcdet/__init__.py "
                              f"and tools/ in it)")
    else:
        spec = importlib.util.find_spec("pcdet")
        if spec is None or not spec.submodule_search_locations:
            raise DriverError(PCDET_HINT)
        root = os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
        if not _is_source_tree(root):
            raise DriverError(f"pcdet is installed from {root}, which has no tools/ folder; pass --pcdet-root "
                              f"<OpenPCDet source tree>")
    if root not in sys.path:
        sys.path.insert(0, root)
    return root


def resolve_config_path(path, pcdet_root):
    """``path`` as given, else relative to the source tree or to its ``tools/`` (``cfgs/...``)."""
    for candidate in (path, os.path.join(pcdet_root, path), os.path.join(pcdet_root, "tools", path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise DriverError(f"--config: {path} is not a file (also looked under {pcdet_root} and its tools/)")


def load_config(path, pcdet_root):
    """OpenPCDet's own ``cfg_from_yaml_file`` into a fresh config (``ROOT_DIR``, ``LOCAL_RANK`` set as in
    ``pcdet.config.cfg``); run from ``tools/`` so ``_BASE_CONFIG_`` paths resolve as in OpenPCDet's scripts.
    Relative ``DATA_PATH`` values are made absolute (they are relative to ``tools/`` too)."""
    from easydict import EasyDict
    from pcdet.config import cfg_from_yaml_file
    path = resolve_config_path(path, pcdet_root)
    cfg = EasyDict(ROOT_DIR=pcdet_root, LOCAL_RANK=0)
    tools = os.path.join(pcdet_root, "tools")
    try:
        with working_directory(tools):
            cfg_from_yaml_file(path, cfg)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise DriverError(f"--config: cannot load {path}: {type(err).__name__}: {err}".splitlines()[0]) from None
    for key in ("DATA_CONFIG", "MODEL", "CLASS_NAMES"):
        if key not in cfg:
            raise DriverError(f"--config: {path} has no {key}; give an OpenPCDet model config (tools/cfgs/...)")
    data_path = cfg.DATA_CONFIG.get("DATA_PATH")
    if data_path and not os.path.isabs(data_path):
        cfg.DATA_CONFIG.DATA_PATH = os.path.normpath(os.path.join(tools, data_path))
    cfg.TAG = os.path.splitext(os.path.basename(path))[0]
    return cfg


def _is_nuscenes_dataroot(path, version):
    """A nuscenes-devkit dataroot: ``<path>/<version>/sample.json`` (the JSON tables live there)."""
    return os.path.isfile(os.path.join(path, version, "sample.json"))


NUSCENES_VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")


def _present_version(root, configured):
    """``configured``, unless ``root`` holds exactly one other nuScenes version (either layout)."""
    present = [v for v in NUSCENES_VERSIONS
               if _is_nuscenes_dataroot(root, v) or _is_nuscenes_dataroot(os.path.join(root, v), v)]
    return present[0] if configured not in present and len(present) == 1 else configured


def set_data_path(cfg, data_root, work_dir):
    """Point ``cfg.DATA_CONFIG`` at ``data_root`` (in place); returns the DATA_PATH used.

    OpenPCDet reads nuScenes from ``DATA_PATH/VERSION/`` (samples, sweeps, the JSON folder and its info
    files). ``data_root`` may be that parent, or the devkit dataroot itself (what nuscenes-devkit and
    integration/data/nuscenes.py use); for the latter a link ``<work_dir>/pcdet_data/VERSION ->
    data_root`` is made and used as the parent. When the root holds exactly one nuScenes version and it
    is not the config's ``VERSION`` (v1.0-mini data, v1.0-trainval config), ``VERSION`` becomes that one.
    Waymo roots are used as given.
    """
    ds = cfg["DATA_CONFIG"]
    if data_root is None:
        return ds["DATA_PATH"]
    root = os.path.abspath(data_root)
    if not os.path.isdir(root):
        raise DriverError(f"--data-root: {root} is not a directory")
    if ds.get("DATASET") == "NuScenesDataset" and ds.get("VERSION"):
        version = ds["VERSION"] = _present_version(root, ds["VERSION"])
        if _is_nuscenes_dataroot(root, version) and not _is_nuscenes_dataroot(os.path.join(root, version), version):
            parent = os.path.join(os.path.abspath(work_dir), "pcdet_data")
            link = os.path.join(parent, version)
            os.makedirs(parent, exist_ok=True)
            if os.path.islink(link) and os.path.realpath(link) != os.path.realpath(root):
                os.unlink(link)
            if not os.path.lexists(link):
                os.symlink(root, link)
            root = parent
    ds["DATA_PATH"] = root
    return root


def _prepare_command(ds):
    name = "waymo" if ds.get("DATASET") == "WaymoDataset" else "nuscenes"
    return (f"python integration/prepare_data.py {name} --framework openpcdet --root <raw data> "
            f"--pcdet-root <OpenPCDet source tree>")


def missing_inputs(dataset_cfg):
    """Files / folders the train and val splits need that do not exist (nuScenes and Waymo layouts)."""
    ds = dataset_cfg
    root = ds["DATA_PATH"]
    needed = []
    if ds.get("DATASET") == "NuScenesDataset":
        base = os.path.join(root, ds["VERSION"])
        for split in ("train", "test"):
            needed += [os.path.join(base, p) for p in ds["INFO_PATH"][split]]
    elif ds.get("DATASET") == "WaymoDataset":
        for split in ("train", "test"):
            needed.append(os.path.join(root, "ImageSets", f"{ds['DATA_SPLIT'][split]}.txt"))
        needed.append(os.path.join(root, ds["PROCESSED_DATA_TAG"]))
    else:
        raise DriverError(f"--config: dataset {ds.get('DATASET')} is not supported by the PTQ driver "
                          f"(NuScenesDataset and WaymoDataset are)")
    return [p for p in needed if not os.path.exists(p)]


def check_inputs(dataset_cfg):
    missing = missing_inputs(dataset_cfg)
    if missing:
        raise DriverError(f"--data-root: {missing[0]} does not exist; prepare the data with: "
                          f"{_prepare_command(dataset_cfg)}")


def calibration_dataset_cfg(dataset_cfg):
    """A copy of ``dataset_cfg`` whose ``test`` mode reads the TRAINING split.

    Calibration frames come from the training split but must go through the test-time processing
    (no augmentation, no ground-truth sampling): OpenPCDet picks both the split (``INFO_PATH`` for
    nuScenes, ``DATA_SPLIT`` for Waymo) and the processing from one ``training`` flag.
    """
    cfg = copy.deepcopy(dataset_cfg)
    for key in ("INFO_PATH", "DATA_SPLIT"):
        if key in cfg:
            cfg[key]["test"] = copy.deepcopy(cfg[key]["train"])
    return cfg


def check_eval_dependencies(dataset_cfg, eval_metric):
    """Say what to install when the dataset's evaluation cannot run here (before any work starts)."""
    def missing(*modules):
        return [m for m in modules if importlib.util.find_spec(m) is None]

    if dataset_cfg.get("DATASET") == "WaymoDataset" and eval_metric == "waymo":
        from integration.data.waymo.metric import metrics_python
        from integration.data.waymo.protos import WaymoEnvironmentError
        if missing("tensorflow", "waymo_open_dataset"):
            raise DriverError(WAYMO_INSTALL_HINT)
        try:
            metrics_python()
        except WaymoEnvironmentError as err:
            raise DriverError(str(err)) from None
    if dataset_cfg.get("DATASET") == "NuScenesDataset" and missing("nuscenes"):
        raise DriverError(NUSCENES_INSTALL_HINT)
