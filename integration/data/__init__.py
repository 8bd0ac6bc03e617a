"""Datasets for the driver and its tests: ``synthetic/`` (ray-caster, scene model, nuScenes tables), ``nuscenes``
(the synthetic nuScenes-format generator), ``waymo/`` (synthetic Waymo-format segments, TFRecord I/O, the Waymo
metric), ``prepare`` (info files through each framework's converter) and ``nuscenes_eval`` (devkit evaluation on a
subset). Nothing here imports the driver or the backends.
"""
