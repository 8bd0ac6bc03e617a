"""MMDetection3D backend: ``backend.MMDet3DBackend``, config helpers (``config``) and its metric (``metrics``)."""
