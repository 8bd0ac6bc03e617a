"""Placeholder modules that let ``import pcdet.models`` / ``import pcdet.datasets`` succeed without
OpenPCDet's compiled extensions.

``pcdet.models`` imports every op module and ``pcdet.datasets`` every dataset module, so an OpenPCDet
source tree whose CUDA ops were never built (any CPU-only machine) cannot even import CenterPoint. ``install()``
appends an import finder to the END of ``sys.meta_path``: it serves a placeholder only for a name below that
no real module answers to, so a built extension or an installed package always wins. Names it serves:

* ``COMPILED_OPS``: the seven extension modules OpenPCDet's setup.py builds;
* ``pcdet.version``: written by setup.py; a source tree that was never installed lacks it;
* ``OPTIONAL_PACKAGES`` (and their submodules): third-party packages that dataset modules import at
  module level but CenterPoint on nuScenes / Waymo never calls (SharedArray: shared-memory caching;
  av2: Argoverse 2; torchvision: camera image normalisation).
  Not kornia: the Argoverse 2 modules TorchScript-compile kornia 0.6 functions at import, so it must be
  really installed (``pip install kornia==0.6.12``; 0.7 and later do not compile there).

Importing a name from a placeholder works; calling it (or anything reached through it) raises
``MissingOpError`` (a ``RuntimeError``) that names the op and what to build or install.
"""
import importlib.abc
import importlib.util
import sys
import types

__all__ = ["COMPILED_OPS", "OPTIONAL_PACKAGES", "MissingOpError", "install", "served", "is_placeholder"]

COMPILED_OPS = (
    "pcdet.ops.iou3d_nms.iou3d_nms_cuda",
    "pcdet.ops.roiaware_pool3d.roiaware_pool3d_cuda",
    "pcdet.ops.roipoint_pool3d.roipoint_pool3d_cuda",
    "pcdet.ops.pointnet2.pointnet2_stack.pointnet2_stack_cuda",
    "pcdet.ops.pointnet2.pointnet2_batch.pointnet2_batch_cuda",
    "pcdet.ops.bev_pool.bev_pool_ext",
    "pcdet.ops.ingroup_inds.ingroup_inds_cuda",
)
VERSION_MODULE = "pcdet.version"
OPTIONAL_PACKAGES = {
    "SharedArray": "pip install SharedArray (only needed with USE_SHARED_MEMORY)",
    "av2": "pip install av2 (only needed for the Argoverse 2 dataset)",
    "torchvision": "install the torchvision build that matches your torch (only needed for camera inputs)",
}
_OPS_HINT = ("build OpenPCDet's CUDA ops (`python setup.py develop` in its source tree, with a CUDA torch); "
             "integration.backends.openpcdet.compat.fallbacks has CPU versions only of the ops CenterPoint inference and "
             "nuScenes info generation call")


class MissingOpError(RuntimeError):
    """A placeholder was used: the real extension / package is not available."""


class _Unavailable:
    """Stands for any attribute of a placeholder module; using it raises ``MissingOpError``."""

    def __init__(self, qualname, hint):
        self._qualname, self._hint = qualname, hint

    def __call__(self, *args, **kwargs):
        raise MissingOpError(f"{self._qualname} was called, but it is not available here: {self._hint}")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._qualname}.{attr}", self._hint)


class PlaceholderModule(types.ModuleType):
    """A module whose every public attribute is an ``_Unavailable``."""

    def __init__(self, name, hint):
        super().__init__(name, f"placeholder for {name}: {hint}")
        self.__path__ = []  # a package, so ``import av2.utils.io`` also resolves through the finder
        self._placeholder_hint = hint

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self.__name__}.{attr}", self._placeholder_hint)


def _hint_for(fullname):
    if fullname in COMPILED_OPS:
        return _OPS_HINT
    return OPTIONAL_PACKAGES.get(fullname.split(".")[0])


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self.served = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname != VERSION_MODULE and _hint_for(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec):
        self.served.append(spec.name)
        if spec.name == VERSION_MODULE:
            module = types.ModuleType(spec.name, "pcdet.version stand-in: the source tree was never installed")
            module.__version__ = "0+source"
            return module
        return PlaceholderModule(spec.name, _hint_for(spec.name))

    def exec_module(self, module):
        """Nothing to run: the module is complete when created."""


_FINDER = _PlaceholderFinder()


def install():
    """Add the placeholder finder (once) at the end of ``sys.meta_path``."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def served():
    """Names the finder has served so far, in import order."""
    return list(_FINDER.served)


def is_placeholder(module):
    return isinstance(module, PlaceholderModule)
