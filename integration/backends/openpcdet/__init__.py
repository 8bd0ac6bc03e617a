"""OpenPCDet backend: ``backend.OpenPCDetBackend``, configs (``config``), metrics (``metrics``) and ``compat/``
(running an OpenPCDet source tree without its compiled CUDA ops)."""
