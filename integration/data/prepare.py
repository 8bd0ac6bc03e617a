"""Produce the dataset info files a detection framework loads, with that framework's own converter
(the logic behind ``integration/prepare_data.py``; errors are ``MissingDependency`` and ``ValueError``).

nuscenes + mmdet3d runs MMDetection3D 1.4's converter from the files its wheel ships
(``mmdet3d/.mim/tools/dataset_converters``) the way ``tools/create_data.py nuscenes`` does:
``create_nuscenes_infos`` then the v2 update, giving ``nuscenes_infos_{train,val}.pkl`` in the
format ``NuScenesDataset`` 1.4 loads (``--gt-database`` also builds the ObjectSample database).
Everything is built in a temp folder inside ``--out`` and renamed into place when complete.

nuscenes + openpcdet runs OpenPCDet's ``create_nuscenes_infos`` on its own ``data/nuscenes/<version>`` folder,
a link to ``--root`` made here (an existing link or folder there must already be ``--root``): the info files
(``nuscenes_infos_<N>sweeps_{train,val}.pkl``) and the ground-truth database land in ``--root`` itself, so
``--out`` is refused; ``--max-sweeps`` is honoured through a copy of the dataset config.

waymo (``integration.data.prepare_waymo``) needs waymo-open-dataset and TensorFlow (``scripts/setup_waymo.sh``);
openpcdet needs an OpenPCDet source tree; when they are missing the script says in one line what to install and
exits non-zero. OpenPCDet's Waymo converter reads ``data/waymo/{raw_data,ImageSets}``: the link is
``data/waymo`` -> ``--root``.

``ensure_synthetic_nuscenes(root)`` generates (once) and prepares the driver's default synthetic dataset.
"""
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUSCENES_VERSIONS = ('v1.0-trainval', 'v1.0-mini', 'v1.0-test')
NUSCENES_DATA_DIRS = ('samples', 'sweeps', 'maps')
MMDET3D_STACK = ('mmengine', 'mmcv', 'mmdet', 'mmdet3d', 'nuscenes', 'pyquaternion', 'shapely')
#: what OpenPCDet's nuScenes info generation imports besides pcdet (module -> pip package)
OPENPCDET_NUSCENES_STACK = {'skimage': 'scikit-image', 'nuscenes': 'nuscenes-devkit', 'pyquaternion': 'pyquaternion',
                            'easydict': 'easydict', 'yaml': 'pyyaml'}
OPENPCDET_GUIDE = 'README.md, section "CenterPoint PTQ through OpenPCDet"'
DEFAULT_MAX_SWEEPS = 10
SETUP_HINT = 'bash scripts/setup_mmdet3d.sh (MMDetection3D 1.4 stack with nuscenes-devkit)'
WAYMO_HINT = 'bash scripts/setup_waymo.sh (TensorFlow 2.21 and waymo-open-dataset beside the framework)'


class MissingDependency(RuntimeError):
    """A package or source tree the requested preparation needs is not available."""


def missing_modules(names):
    return [n for n in names if importlib.util.find_spec(n) is None]


def require(names, hint):
    missing = missing_modules(names)
    if missing:
        raise MissingDependency(f"missing Python package(s) {', '.join(missing)}; install with: {hint}")


def detect_nuscenes_version(root, version=None):
    """The nuScenes version under ``root`` (the one folder ``root/v1.0-*`` with a sample.json)."""
    if version is not None and version not in NUSCENES_VERSIONS:
        raise ValueError(f'--version must be one of {NUSCENES_VERSIONS}, got {version!r}')
    present = [v for v in NUSCENES_VERSIONS if os.path.isfile(os.path.join(root, v, 'sample.json'))]
    if version is None:
        if len(present) != 1:
            found = ', '.join(present) or 'none'
            raise ValueError(f'--root {root} must hold exactly one nuScenes version folder with tables '
                             f'(found: {found}); pass --version to choose')
        return present[0]
    if version not in present:
        raise ValueError(f'--root {root} has no {version}/sample.json; generate or download that version '
                         'first (e.g. python integration/data/nuscenes.py --out ROOT)')
    return version


def mmdet3d_tools_dir():
    """``tools/`` that the mmdet3d wheel ships under ``.mim`` (holds dataset_converters)."""
    spec = importlib.util.find_spec('mmdet3d')
    tools = os.path.join(os.path.dirname(spec.origin), '.mim', 'tools')
    if not os.path.isfile(os.path.join(tools, 'dataset_converters', 'nuscenes_converter.py')):
        raise MissingDependency(f'mmdet3d at {os.path.dirname(spec.origin)} lacks .mim/tools/dataset_converters; '
                                'reinstall it from the wheel: pip install --no-deps --force-reinstall mmdet3d==1.4.0')
    return tools


def load_converter(name):
    """Import ``tools/dataset_converters/<name>.py`` from the mmdet3d wheel under a private module name."""
    path = os.path.join(mmdet3d_tools_dir(), 'dataset_converters', f'{name}.py')
    module_name = f'_mmdet3d_tools_{name}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


@contextlib.contextmanager
def working_directory(path):
    """The v2 update opens ``NuScenes(dataroot='./data/nuscenes')``: run it from a folder that has one."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _move_into(src, dst):
    """Rename ``src`` to ``dst``, replacing an existing file or folder there."""
    if os.path.isdir(dst) and not os.path.islink(dst):
        trash = tempfile.mkdtemp(prefix='.prepare_data-old-', dir=os.path.dirname(dst))
        os.rename(dst, os.path.join(trash, 'old'))
        os.rename(src, dst)
        shutil.rmtree(trash)
    else:
        os.replace(src, dst)


def prepare_nuscenes_mmdet3d(root, version=None, out_dir=None, max_sweeps=DEFAULT_MAX_SWEEPS, gt_database=False,
                             info_prefix='nuscenes'):
    """Write MMDetection3D 1.4 info files for the nuScenes dataroot ``root``; returns their paths.

    ``out_dir`` defaults to ``root`` (where the mmdet3d configs expect them). Info paths inside
    the pkl files are relative (file names), so the dataset folder can move afterwards.
    """
    require(MMDET3D_STACK, SETUP_HINT)
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ValueError(f'--root {root} is not a folder')
    version = detect_nuscenes_version(root, version)
    if not isinstance(max_sweeps, int) or max_sweeps < 0:
        raise ValueError(f'max_sweeps must be an int >= 0, got {max_sweeps!r}')
    out_dir = os.path.abspath(os.fspath(out_dir or root))
    os.makedirs(out_dir, exist_ok=True)
    converter = load_converter('nuscenes_converter')
    updater = load_converter('update_infos_to_v2')

    staging = tempfile.mkdtemp(prefix='.prepare_data-', dir=out_dir)
    data_root = os.path.join('data', 'nuscenes')
    links = []
    try:
        os.makedirs(os.path.join(staging, data_root))
        for entry in (version,) + NUSCENES_DATA_DIRS:
            if os.path.exists(os.path.join(root, entry)):
                links.append(os.path.join(staging, data_root, entry))
                os.symlink(os.path.join(root, entry), links[-1])
        with working_directory(staging):
            converter.create_nuscenes_infos(data_root, info_prefix, version=version, max_sweeps=max_sweeps)
            splits = ('test',) if version == 'v1.0-test' else ('train', 'val')
            outputs = [f'{info_prefix}_infos_{split}.pkl' for split in splits]
            for name in outputs:
                updater.update_pkl_infos('nuscenes', out_dir=data_root, pkl_path=os.path.join(data_root, name))
            if gt_database and version != 'v1.0-test':
                from mmdet3d.utils import register_all_modules
                register_all_modules()  # the database builder instantiates NuScenesDataset + transforms
                load_converter('create_gt_database').create_groundtruth_database(
                    'NuScenesDataset', data_root, info_prefix, f'{info_prefix}_infos_train.pkl')
                outputs = [f'{info_prefix}_gt_database', f'{info_prefix}_dbinfos_train.pkl'] + outputs
        for link in links:
            os.unlink(link)
        written = []
        for name in outputs:  # the info pkl files come last: a reader never sees them before the database
            _move_into(os.path.join(staging, data_root, name), os.path.join(out_dir, name))
            written.append(os.path.join(out_dir, name))
        return written
    finally:
        for link in links:
            if os.path.islink(link):
                os.unlink(link)
        shutil.rmtree(staging, ignore_errors=True)


def _link_data_folder(target, root):
    """Make ``target`` (OpenPCDet's ``data/<dataset>/<version>``) a link to ``root``; an existing entry there must
    already lead to ``root`` (never reuse one pointing elsewhere)."""
    if os.path.lexists(target):
        if os.path.realpath(target) != os.path.realpath(root):
            kind = f'a link to {os.path.realpath(target)}' if os.path.islink(target) else 'a folder'
            raise ValueError(f'{target} already exists and is {kind}, not --root {root}; remove it (or pass the '
                             f'--root it holds) and rerun; see {OPENPCDET_GUIDE}')
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.symlink(root, target)
    print(f'linked {target} -> {root}')


def _dataset_cfg_with_sweeps(pcdet_root, cfg_name, max_sweeps, scratch):
    """``tools/cfgs/dataset_configs/<cfg_name>`` as is, or a copy in ``scratch`` with ``MAX_SWEEPS`` changed."""
    path = os.path.join(pcdet_root, 'tools', 'cfgs', 'dataset_configs', cfg_name)
    if max_sweeps is None:
        return path
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    if not any(line.startswith('MAX_SWEEPS:') for line in lines):
        raise ValueError(f'{path} has no MAX_SWEEPS entry, so --max-sweeps cannot be applied')
    copy_path = os.path.join(scratch, cfg_name)
    with open(copy_path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(f'MAX_SWEEPS: {max_sweeps}' if line.startswith('MAX_SWEEPS:') else line
                          for line in lines) + '\n')
    return copy_path


def prepare_openpcdet(dataset, root, version, pcdet_root, out_dir=None, max_sweeps=None):
    """Run OpenPCDet's own info generation on ``<pcdet_root>/data/<dataset>/`` linked to ``root``.

    Its outputs land in the linked folder, i.e. in ``root``: ``out_dir`` other than ``root`` is refused.
    ``max_sweeps`` (nuScenes; None: the dataset config's) is applied through a copy of the dataset config.
    """
    if not pcdet_root:
        raise MissingDependency('OpenPCDet is needed: clone https://github.com/open-mmlab/OpenPCDet and pass '
                                f'--pcdet-root to its source tree (see {OPENPCDET_GUIDE})')
    pcdet_root = os.path.abspath(pcdet_root)
    if not os.path.isfile(os.path.join(pcdet_root, 'pcdet', '__init__.py')):
        raise MissingDependency(f'--pcdet-root {pcdet_root} is not an OpenPCDet source tree (no pcdet/__init__.py); '
                                'pass the folder you cloned OpenPCDet into')
    root = os.path.abspath(root)
    if out_dir is not None and os.path.abspath(out_dir) != root:
        raise ValueError(f'--out: OpenPCDet writes its info files into the dataset folder it reads (--root {root}, '
                         f'through {pcdet_root}/data/{dataset}/); leave --out out')
    if dataset == 'waymo':
        if max_sweeps is not None:
            raise ValueError('--max-sweeps applies to nuScenes only; leave it out for waymo')
        require(['waymo_open_dataset', 'tensorflow'], WAYMO_HINT)
        target = os.path.join(pcdet_root, 'data', 'waymo')  # raw_data/ and ImageSets/ both sit in --root
        module, cfg, extra = 'pcdet.datasets.waymo.waymo_dataset', 'waymo_dataset.yaml', ['--func', 'create_waymo_infos']
    else:
        missing = missing_modules(OPENPCDET_NUSCENES_STACK)
        if missing:
            raise MissingDependency(f"OpenPCDet's nuScenes info generation needs {', '.join(missing)}; install with: "
                                    f"pip install {' '.join(OPENPCDET_NUSCENES_STACK[m] for m in missing)}")
        version = detect_nuscenes_version(root, version)
        target = os.path.join(pcdet_root, 'data', 'nuscenes', version)
        module, cfg = 'pcdet.datasets.nuscenes.nuscenes_dataset', 'nuscenes_dataset.yaml'
        extra = ['--func', 'create_nuscenes_infos', '--version', version]
    if max_sweeps is not None and (not isinstance(max_sweeps, int) or max_sweeps < 0):
        raise ValueError(f'--max-sweeps must be an int >= 0, got {max_sweeps!r}')
    _link_data_folder(target, root)
    scratch = tempfile.mkdtemp(prefix='prepare_data-cfg-')
    try:
        cfg_file = _dataset_cfg_with_sweeps(pcdet_root, cfg, max_sweeps, scratch)
        # through our compatibility runner: pcdet imports without its compiled CUDA ops (CPU fallbacks)
        command = [sys.executable, '-m', 'integration.backends.openpcdet.compat.run_module', '--pcdet-root',
                   pcdet_root, module, '--cfg_file', cfg_file] + extra
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [REPO_ROOT, pcdet_root, os.environ.get('PYTHONPATH')])))
        print('running:', ' '.join(command), f'(in {pcdet_root}); outputs go to {root}', flush=True)
        subprocess.run(command, cwd=pcdet_root, env=env, check=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [root]


def ensure_synthetic_nuscenes(root):
    """Generate (once) and prepare (once) the synthetic nuScenes-format dataset under ``root``."""
    from integration.data.nuscenes import DEFAULT_VAL_FRAMES_PER_SCENE, count_val_frames, generate
    if not os.path.isdir(os.path.join(root, 'v1.0-mini')):
        if os.path.isdir(root) and os.listdir(root):
            raise ValueError(f'{root} exists but holds no v1.0-mini tables; remove it to regenerate the synthetic '
                             f'dataset, or pass --data-root')
        print(f'generating the synthetic nuScenes-format dataset in {root} (once)')
        generate(root, val_frames_per_scene=DEFAULT_VAL_FRAMES_PER_SCENE)
    found = count_val_frames(root)
    if found != DEFAULT_VAL_FRAMES_PER_SCENE:
        raise ValueError(f'{root} holds an older synthetic dataset ({found} frames per validation scene, this version '
                         f'makes {DEFAULT_VAL_FRAMES_PER_SCENE}); remove {root} to regenerate it')
    infos = [os.path.join(root, f'nuscenes_infos_{s}.pkl') for s in ('train', 'val')]
    if not all(os.path.isfile(p) for p in infos):
        print(f'preparing info files in {root} (once)')
        prepare_nuscenes_mmdet3d(root, 'v1.0-mini')
