"""Synthetic Waymo Open Dataset segments and the Waymo detection metric.

``generate`` writes ``segment-*_with_camera_labels.tfrecord`` files of ``dataset_pb2.Frame`` (laid
out for MMDetection3D and OpenPCDet) and the validation ``gt.bin``; ``metric`` evaluates detections
with the official metrics op in the separate TensorFlow 2.13 environment that
``scripts/setup_waymo.sh`` creates.
"""
