"""Detection frameworks behind the PTQ driver, each implementing ``base.Backend``.

``mmdet3d`` (MMDetection3D 1.4) and ``openpcdet`` (an OpenPCDet source tree, with ``compat/`` for running it
without its compiled CUDA ops). ``create(framework, ...)`` imports only the chosen one.
"""
from integration.backends.base import Backend

__all__ = ["Backend", "create"]


def create(framework, pcdet_root=None):
    """The backend object of ``framework`` (``"mmdet3d"`` or ``"openpcdet"``)."""
    if framework == "openpcdet":
        from integration.backends.openpcdet.backend import OpenPCDetBackend
        return OpenPCDetBackend(pcdet_root)
    from integration.backends.mmdet3d.backend import MMDet3DBackend
    return MMDet3DBackend()

