"""Running an OpenPCDet source tree where its compiled CUDA ops are missing (CPU machines) or unused.

* ``placeholders``: import-time stand-ins for the compiled extensions, ``pcdet.version`` and optional
  third-party packages, so ``import pcdet.models`` / ``pcdet.datasets`` succeed; using one raises.
* ``bev_nms``: CPU rotated / axis-aligned BEV NMS, drop-ins for ``iou3d_nms_utils.nms_gpu`` / ``nms_normal_gpu``.
* ``scatter``: ``scatter_max`` / ``scatter_mean`` for the dynamic VFEs when ``torch_scatter`` is missing.
* ``fallbacks``: installs the two above into the imported pcdet modules.
* ``device``: ``cuda_calls_to(device)`` maps OpenPCDet's hard-coded ``.cuda()`` calls to the chosen device.
* ``dist_eval``: OpenPCDet's distributed test path on CPUs (DDP wrapping in ``eval_one_epoch``, frame shards).
* ``frame_seed``: frames prepared with a per-frame numpy seed (OpenPCDet draws sweeps / shuffles points at test
  time with the global RNG), so runs and process layouts give identical inputs.
"""
