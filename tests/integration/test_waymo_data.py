"""Synthetic Waymo segments: TFRecord framing, and a round trip through the unmodified
waymo-open-dataset utilities (range images -> points, box point counts, cameras, gt.bin).

Expectations are independent of the writer: TensorFlow's own TFRecord reader, waymo's
``frame_utils`` decoder and ``box_utils.is_within_box_3d`` containment, and the standard CRC-32C
check value. The TensorFlow parts skip when ``bash scripts/setup_waymo.sh`` has not been run.
"""
import io
import os

import numpy as np
import pytest

from integration.data.waymo.tfrecord import TFRecordError, crc32c, encode_record, read_records, write_records

SEED, SEGMENTS, FRAMES, COLUMNS, ROWS = 3, 2, 2, 360, 24
SETUP = 'waymo packages missing: run `bash scripts/setup_waymo.sh`'


def test_crc32c_check_value():
    assert crc32c(b'123456789') == 0xE3069283  # the CRC-32C catalogue's check value
    assert crc32c(b'') == 0


def test_records_round_trip_and_corruption(tmp_path):
    payloads = [b'', b'x', os.urandom(1000)]
    path = str(tmp_path / 'a.tfrecord')
    write_records(path, payloads)
    assert list(read_records(path)) == payloads
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:-3])
    with pytest.raises(TFRecordError, match='truncated record at byte'):
        list(read_records(path))
    flipped = bytearray(data)
    flipped[-10] ^= 1
    open(path, 'wb').write(bytes(flipped))
    with pytest.raises(TFRecordError, match='corrupt record data'):
        list(read_records(path))


def test_tensorflow_reads_our_records(tmp_path):
    tf = pytest.importorskip('tensorflow', reason=SETUP)
    payloads = [os.urandom(n) for n in (0, 1, 17, 5000)]
    path = str(tmp_path / 'b.tfrecord')
    open(path, 'wb').write(b''.join(encode_record(p) for p in payloads))
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == payloads


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    pytest.importorskip('tensorflow', reason=SETUP)
    pytest.importorskip('waymo_open_dataset.utils.frame_utils', reason=SETUP)
    from integration.data.waymo.generate import generate
    root = str(tmp_path_factory.mktemp('waymo') / 'data')
    manifest = generate(root, SEGMENTS, FRAMES, seed=SEED, columns=COLUMNS, rows=ROWS, log=lambda *_: None)
    return root, manifest


def read_frames(path):
    import tensorflow as tf
    from waymo_open_dataset import dataset_pb2
    frames = []
    for record in tf.data.TFRecordDataset(path):
        frame = dataset_pb2.Frame()
        frame.ParseFromString(record.numpy())
        frames.append(frame)
    return frames


def test_layouts_and_splits(dataset):
    root, manifest = dataset
    train = sorted(os.listdir(os.path.join(root, 'waymo_format', 'training')))
    val = sorted(os.listdir(os.path.join(root, 'waymo_format', 'validation')))
    assert len(train) == 1 and len(val) == 1
    assert all(n.startswith('segment-') and n.endswith('_with_camera_labels.tfrecord') for n in train + val)
    assert sorted(os.listdir(os.path.join(root, 'raw_data'))) == sorted(train + val)
    assert open(os.path.join(root, 'ImageSets', 'train.txt')).read().split() == train
    assert open(os.path.join(root, 'ImageSets', 'val.txt')).read().split() == val
    assert manifest['splits'] == {'training': train, 'validation': val}


def test_gt_bin_holds_the_validation_labels(dataset):
    from waymo_open_dataset.protos import metrics_pb2
    root, _ = dataset
    name = os.listdir(os.path.join(root, 'waymo_format', 'validation'))[0]
    frames = read_frames(os.path.join(root, 'waymo_format', 'validation', name))
    objects = metrics_pb2.Objects()
    objects.ParseFromString(open(os.path.join(root, 'waymo_format', 'gt.bin'), 'rb').read())
    expected = [(f.context.name, f.timestamp_micros, label.SerializeToString())
                for f in frames for label in f.laser_labels]
    got = [(o.context_name, o.frame_timestamp_micros, o.object.SerializeToString()) for o in objects.objects]
    assert got == expected and len(got) > 0


def test_frames_decode_to_the_ray_cast_points(dataset):
    """Every frame's range images decode (waymo's own utilities) to the simulated points, pixel by
    pixel, with both camera projections; box point counts match waymo's containment test."""
    import tensorflow as tf
    from PIL import Image
    from waymo_open_dataset import dataset_pb2
    from waymo_open_dataset.utils import box_utils, frame_utils

    from integration.data.waymo.frame_builder import camera_projections
    from integration.data.waymo.simulate import SegmentSimulator
    root, _ = dataset
    seen = set()
    for split in ('training', 'validation'):
        name = os.listdir(os.path.join(root, 'waymo_format', split))[0]
        frames = read_frames(os.path.join(root, 'waymo_format', split, name))
        assert len(frames) == FRAMES
        index = 0 if split == 'training' else 1
        sim = SegmentSimulator(SEED, index, FRAMES, COLUMNS, ROWS)
        stamps = [f.timestamp_micros for f in frames]
        assert stamps == sorted(set(stamps))
        for j, frame in enumerate(frames):
            expected = sim.frame(j)
            assert frame.context.name == sim.name
            assert np.allclose(np.reshape(frame.pose.transform, (4, 4)), expected.pose)
            assert [c.name for c in frame.context.camera_calibrations] == [1, 2, 3, 4, 5]
            laser_ids = {label.id for label in frame.laser_labels}
            for projected, labelled in zip(frame.projected_lidar_labels, frame.camera_labels):
                assert projected.name == labelled.name and len(projected.labels) == len(labelled.labels) > 0
                suffix = '_' + dataset_pb2.CameraName.Name.Name(projected.name)
                assert all(p.id.endswith(suffix) for p in projected.labels)
                assert {p.id[:-len(suffix)] for p in projected.labels} <= laser_ids
                assert {c.association.laser_object_id for c in labelled.labels} <= laser_ids
            for image, calib in zip(frame.images, frame.context.camera_calibrations):
                assert image.name == calib.name
                assert Image.open(io.BytesIO(image.image)).size == (calib.width, calib.height)
            ri, cp, _, top_pose = frame_utils.parse_range_image_and_camera_projection(frame)
            assert ri[1][0].shape.dims == [ROWS, COLUMNS, 4]
            decoded_all = []
            for k, ret in enumerate(expected.returns):
                points, cp_points = frame_utils.convert_range_image_to_point_cloud(frame, ri, cp, top_pose,
                                                                                   ri_index=k)
                order = np.lexsort((ret.cols, ret.rows))  # the decoder walks pixels row-major
                assert points[0].shape == (len(order), 3)
                np.testing.assert_allclose(points[0], ret.points[order], atol=2e-3)
                np.testing.assert_array_equal(cp_points[0], camera_projections(ret.points[order])[0])
                decoded_all.append(points[0])
            assert len(expected.returns[1].range) > 0  # both returns carry points
            cloud = tf.constant(np.concatenate(decoded_all), dtype=tf.float32)
            boxes = np.array([[b.box.center_x, b.box.center_y, b.box.center_z, b.box.length, b.box.width,
                               b.box.height, b.box.heading] for b in frame.laser_labels])
            inside = box_utils.is_within_box_3d(cloud, tf.constant(boxes, dtype=tf.float32)).numpy()
            counts = [label.num_lidar_points_in_box for label in frame.laser_labels]
            np.testing.assert_array_equal(inside.sum(axis=0), counts)
            assert min(counts) >= 1
            levels = np.array([label.detection_difficulty_level for label in frame.laser_labels])
            np.testing.assert_array_equal(levels, np.where(np.array(counts) <= 5, 2, 1))
            seen.update(label.type for label in frame.laser_labels)
    assert seen == {1, 2, 3, 4}  # vehicles, pedestrians, signs and cyclists


def test_generator_rejects_bad_arguments(tmp_path):
    from integration.data.waymo.generate import check_args
    with pytest.raises(ValueError, match='segments must be an int >= 2'):
        check_args(str(tmp_path), 1, 2, None, 0, 100, 8)
    with pytest.raises(ValueError, match='val_segments must leave at least one training segment'):
        check_args(str(tmp_path), 3, 2, 3, 0, 100, 8)
    with pytest.raises(ValueError, match='frames must be an int >= 1'):
        check_args(str(tmp_path), 3, 0, None, 0, 100, 8)


def test_mmdet3d_converter_reads_the_segments(dataset, tmp_path):
    """MMDetection3D 1.4's own Waymo converter (shipped in the wheel) turns the segments into KITTI-style
    points and info files: both returns' points and every Vehicle/Pedestrian/Cyclist label arrive."""
    import pickle
    import subprocess
    import sys
    mmdet3d = pytest.importorskip('mmdet3d', reason='MMDetection3D missing: run `bash scripts/setup_env.sh`')
    mim = os.path.join(os.path.dirname(mmdet3d.__file__), '.mim')
    root, _ = dataset
    out = str(tmp_path / 'converted')
    env = dict(os.environ, PYTHONPATH=mim, TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run([sys.executable, 'tools/create_data.py', 'waymo', '--root-path', root, '--out-dir', out,
                           '--workers', '0', '--extra-tag', 'waymo', '--version', 'v1.4-mini'],
                          cwd=mim, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kitti = os.path.join(out, 'kitti_format')
    infos = pickle.load(open(os.path.join(kitti, 'waymo_infos_val.pkl'), 'rb'))['data_list']
    name = os.listdir(os.path.join(root, 'waymo_format', 'validation'))[0]
    frames = read_frames(os.path.join(root, 'waymo_format', 'validation', name))
    assert [i['timestamp'] for i in infos] == [f.timestamp_micros for f in frames]
    from integration.data.waymo.simulate import SegmentSimulator
    sim = SegmentSimulator(SEED, 1, FRAMES, COLUMNS, ROWS)
    for j, (info, frame) in enumerate(zip(infos, frames)):
        expected = sim.frame(j)
        cloud = np.fromfile(os.path.join(kitti, 'training', 'velodyne', info['lidar_points']['lidar_path']),
                            dtype=np.float32).reshape(-1, 6)
        returns = [r.points[np.lexsort((r.cols, r.rows))] for r in expected.returns]
        np.testing.assert_allclose(cloud[:, :3], np.concatenate(returns), atol=2e-3)
        labels = [b for b in frame.laser_labels if b.type in (1, 2, 4)]
        assert [i['num_lidar_pts'] for i in info['instances']] == [b.num_lidar_points_in_box for b in labels]
        bottoms = [[b.box.center_x, b.box.center_y, b.box.center_z - b.box.height / 2] for b in labels]
        np.testing.assert_allclose([i['bbox_3d'][:3] for i in info['instances']], bottoms, atol=1e-4)
        assert sorted(info['images']) == ['CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT',
                                          'CAM_SIDE_RIGHT']


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from integration.data.waymo.__main__ import main
    assert main(['--out', str(tmp_path / 'x'), '--segments', '1']) == 2
    assert capsys.readouterr().err == 'error: segments must be an int >= 2, got 1\n'
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'keep.txt').write_text('mine')
    assert main(['--out', str(tmp_path / 'full')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'is not empty' in err and '--overwrite' in err
    assert os.listdir(tmp_path / 'full') == ['keep.txt']


def test_generation_is_reproducible(tmp_path):
    pytest.importorskip('waymo_open_dataset.protos.metrics_pb2', reason=SETUP)
    import filecmp
    from integration.data.waymo.generate import generate
    roots = [str(tmp_path / name) for name in ('a', 'b')]
    for root in roots:
        generate(root, 2, 1, seed=11, columns=120, rows=8, log=lambda *_: None)
    names = []
    for folder, _, files in os.walk(roots[0]):
        names += [os.path.relpath(os.path.join(folder, f), roots[0]) for f in files]
    assert len(names) == 8  # 2 x 2 tfrecords, gt.bin, two ImageSets lists, the manifest
    match, mismatch, errors = filecmp.cmpfiles(roots[0], roots[1], names, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_vehicles_and_cycles_show_a_lower_front():
    """Points on a vehicle or cycle respect its front profile: nothing in the front part of the box rises
    above the front height, while the rear part does (so a heading and its reverse look different);
    pedestrians stay plain boxes. Checked in each box's own frame, independently of the ray caster."""
    from integration.data.waymo.simulate import (FRONT_HEIGHT_FRACTION, FRONT_LENGTH_FRACTION, TYPE_CYCLIST,
                                                 TYPE_PEDESTRIAN, TYPE_VEHICLE, SegmentSimulator)
    sim = SegmentSimulator(SEED, 0, FRAMES, 1024, 64)
    frame = sim.frame(0)
    points = np.concatenate([r.points for r in frame.returns])
    rear_above = {TYPE_VEHICLE: 0, TYPE_CYCLIST: 0, TYPE_PEDESTRIAN: 0}
    front_above = dict(rear_above)
    for box, kind in zip(frame.labels.boxes, frame.labels.types):
        if kind not in rear_above:
            continue
        (x, y, z, length, width, height, heading) = box
        c, s = np.cos(heading), np.sin(heading)
        rel = points - np.array([x, y, z])
        local = np.stack([rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c, rel[:, 2]], axis=1)
        inside = (np.abs(local[:, 0]) <= length / 2) & (np.abs(local[:, 1]) <= width / 2) & (
            np.abs(local[:, 2]) <= height / 2)
        local = local[inside]
        above = local[:, 2] > -height / 2 + FRONT_HEIGHT_FRACTION * height
        front = local[:, 0] > length / 2 - FRONT_LENGTH_FRACTION * length
        front_above[kind] += int((above & front).sum())
        rear_above[kind] += int((above & ~front).sum())
    assert front_above[TYPE_VEHICLE] == 0 and front_above[TYPE_CYCLIST] == 0
    assert rear_above[TYPE_VEHICLE] > 0 and rear_above[TYPE_CYCLIST] > 0
    assert front_above[TYPE_PEDESTRIAN] > 0  # plain boxes: points anywhere up to the full height
