"""CenterPoint post-training quantization through MMDetection3D and OpenPCDet.

Layout (imports point down: CLI -> driver -> backends -> pytorch_quantization; ``data/`` imports none of them):

* ``centerpoint_ptq.py``, ``prepare_data.py``, ``train_synthetic.py``: command lines only;
* ``driver/``: options, errors, results table, work-dir lock, distributed set-up, calibration files and the one
  mode loop (``pipeline``);
* ``backends/``: the ``Backend`` protocol (``base``), ``mmdet3d/`` and ``openpcdet/`` (with ``compat/``);
* ``data/``: the synthetic nuScenes-format generator, data preparation, devkit evaluation helpers;
* ``configs/``, ``checkpoints/``: the embedded default (tiny synthetic config and its trained weights).
"""
