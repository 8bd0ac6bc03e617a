"""Turn a simulated frame into a ``waymo_open_dataset.dataset_pb2.Frame``.

Written per frame: the context (name, five camera calibrations, the TOP LiDAR calibration with its
beam inclinations, stats), the vehicle pose, five small JPEG images, the TOP range images of
returns 1 and 2 (``MatrixFloat`` [H, W, 4]: range, intensity, elongation, no-label-zone flag -1;
-1 everywhere on pixels without a return), their camera projections (``MatrixInt32`` [H, W, 6]),
the per-pixel vehicle pose of return 1 (``MatrixFloat`` [H, W, 6]: roll, pitch, yaw, x, y, z, the
frame pose everywhere since the simulated sensor fires all rays at once), the laser labels, and
the projections of the labelled boxes into each camera (``projected_lidar_labels``).
"""
import hashlib
import zlib

import numpy as np

from integration.data.synthetic.geometry import yaw_matrix

from .images import render_jpeg
from .protos import waymo_module
from .rig import CAMERAS, TOP_LASER, top_extrinsic, top_inclinations_deg

LOCATIONS = {'singapore-onenorth': 'location_sf', 'boston-seaport': 'location_phx',
             'singapore-queenstown': 'location_other', 'singapore-hollandvillage': 'location_sf'}
MIN_PROJECTED_AREA_PX = 4.0


def compressed_matrix(message_class, array):
    """zlib of a ``MatrixFloat`` / ``MatrixInt32`` holding ``array`` (row-major) and its shape."""
    matrix = message_class()
    matrix.data.extend(np.asarray(array).ravel().tolist())
    matrix.shape.dims.extend(array.shape)
    return zlib.compress(matrix.SerializeToString())


def camera_projections(points):
    """Waymo's per-point camera projection [N, 6]: (camera, column, row) of the first two cameras
    whose image contains the point, zeros where fewer do; plus each camera's (pixels, inside mask)."""
    cp = np.zeros((len(points), 6), dtype=np.int32)
    found = np.zeros(len(points), dtype=np.int64)
    per_camera = {}
    for camera in CAMERAS:
        uv, inside = camera.project(points)
        per_camera[camera.name] = (uv, inside)
        for slot in (0, 1):
            take = inside & (found == slot)
            cp[take, 3 * slot] = camera.name
            cp[take, 3 * slot + 1:3 * slot + 3] = np.floor(uv[take]).astype(np.int32)
        found += inside
    return cp, per_camera


def box_corners(box):
    """The 8 corners (8, 3) of a [cx, cy, cz, length, width, height, heading] box."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    return (signs * np.asarray(box[3:6]) / 2.0) @ yaw_matrix(box[6]).T + np.asarray(box[:3])


def projected_box(camera, box):
    """Image-plane rectangle (u0, v0, u1, v1) of a 3D box in ``camera``, or None if not visible."""
    corners = box_corners(box)
    cam = (corners - camera.extrinsic[:3, 3]) @ camera.extrinsic[:3, :3]
    if np.any(cam[:, 0] <= 0.1):
        return None
    u = np.clip(camera.width / 2.0 - camera.focal * cam[:, 1] / cam[:, 0], 0, camera.width)
    v = np.clip(camera.height / 2.0 - camera.focal * cam[:, 2] / cam[:, 0], 0, camera.height)
    rect = (u.min(), v.min(), u.max(), v.max())
    return rect if (rect[2] - rect[0]) * (rect[3] - rect[1]) >= MIN_PROJECTED_AREA_PX else None


def camera_label_id(laser_id, camera):
    """A camera label's own id (Waymo's camera and laser labels are numbered separately)."""
    return hashlib.md5(f'{laser_id}|{camera.label}'.encode()).hexdigest()[:22]


class FrameBuilder:
    """Builds the frames of one simulated segment (``simulate.SegmentSimulator``)."""

    def __init__(self, simulator):
        self.pb = waymo_module('dataset_pb2')
        self.sim = simulator
        self.rows, self.columns = simulator.rows, simulator.columns

    def build(self, data):
        frame = self.pb.Frame()
        self._context(frame.context, data)
        frame.timestamp_micros = data.timestamp_micros
        frame.pose.transform.extend(data.pose.ravel().tolist())
        projections = [camera_projections(r.points) for r in data.returns]
        self._images(frame, data, projections[0][1])
        self._lasers(frame, data, [p[0] for p in projections])
        self._labels(frame, data)
        return frame

    def _context(self, context, data):
        context.name = self.sim.name
        for camera in CAMERAS:
            calib = context.camera_calibrations.add()
            calib.name = camera.name
            calib.intrinsic.extend(camera.intrinsic)
            calib.extrinsic.transform.extend(camera.extrinsic.ravel().tolist())
            calib.width, calib.height = camera.width, camera.height
            calib.rolling_shutter_direction = self.pb.CameraCalibration.GLOBAL_SHUTTER
        laser = context.laser_calibrations.add()
        laser.name = TOP_LASER
        inclinations = np.deg2rad(top_inclinations_deg(self.rows))
        laser.beam_inclinations.extend(inclinations.tolist())
        half_step = (inclinations[-1] - inclinations[0]) / (2.0 * (self.rows - 1))
        laser.beam_inclination_min = float(inclinations[0] - half_step)
        laser.beam_inclination_max = float(inclinations[-1] + half_step)
        laser.extrinsic.transform.extend(top_extrinsic().ravel().tolist())
        context.stats.time_of_day = 'Day'
        context.stats.weather = 'sunny'
        context.stats.location = LOCATIONS[self.sim.scene.location]
        types, counts = np.unique(data.labels.types, return_counts=True)
        for kind, count in zip(types, counts):
            entry = context.stats.laser_object_counts.add()
            entry.type, entry.count = int(kind), int(count)

    def _images(self, frame, data, per_camera):
        points = data.returns[0].points
        for camera in CAMERAS:
            uv, inside = per_camera[camera.name]
            depth = np.linalg.norm(points[inside] - camera.extrinsic[:3, 3], axis=1)
            image = frame.images.add()
            image.name = camera.name
            image.image = render_jpeg(camera, uv[inside], depth)
            image.pose.transform.extend(data.pose.ravel().tolist())
            seconds = data.timestamp_micros * 1e-6
            image.pose_timestamp = image.camera_trigger_time = image.camera_readout_done_time = seconds

    def _lasers(self, frame, data, projections):
        matrix_float, matrix_int = self.pb.MatrixFloat, self.pb.MatrixInt32
        laser = frame.lasers.add()
        laser.name = TOP_LASER
        for ret, cp, target in zip(data.returns, projections, (laser.ri_return1, laser.ri_return2)):
            image = np.full((self.rows, self.columns, 4), -1.0, dtype=np.float32)
            image[ret.rows, ret.cols] = np.stack([ret.range, ret.intensity, np.zeros_like(ret.range),
                                                  np.full_like(ret.range, -1.0)], axis=1)
            cameras = np.zeros((self.rows, self.columns, 6), dtype=np.int32)
            cameras[ret.rows, ret.cols] = cp
            target.range_image_compressed = compressed_matrix(matrix_float, image)
            target.camera_projection_compressed = compressed_matrix(matrix_int, cameras)
        rot, origin = data.pose[:3, :3], data.pose[:3, 3]
        rpy_xyz = np.array([0.0, 0.0, np.arctan2(rot[1, 0], rot[0, 0]), *origin], dtype=np.float32)
        pose_image = np.broadcast_to(rpy_xyz, (self.rows, self.columns, 6))
        laser.ri_return1.range_image_pose_compressed = compressed_matrix(matrix_float, pose_image)

    def _labels(self, frame, data):
        labels = data.labels
        projected = {camera.name: frame.projected_lidar_labels.add() for camera in CAMERAS}
        in_camera = {camera.name: frame.camera_labels.add() for camera in CAMERAS}
        for camera in CAMERAS:
            projected[camera.name].name = in_camera[camera.name].name = camera.name
        for box, kind, oid, count, level, speed in zip(labels.boxes, labels.types, labels.ids, labels.num_points,
                                                       labels.difficulty, labels.speed):
            label = frame.laser_labels.add()
            self._set_box(label.box, box)
            label.type, label.id = int(kind), oid
            label.num_lidar_points_in_box = label.num_top_lidar_points_in_box = int(count)
            label.detection_difficulty_level = label.tracking_difficulty_level = int(level)
            label.metadata.speed_x, label.metadata.speed_y = float(speed[0]), float(speed[1])
            best_area = 0.0
            for camera in CAMERAS:
                rect = projected_box(camera, box)
                if rect is None:
                    continue
                p = projected[camera.name].labels.add()
                p.box.center_x, p.box.center_y = (rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0
                p.box.length, p.box.width = rect[2] - rect[0], rect[3] - rect[1]
                p.type, p.id = int(kind), f'{oid}_{camera.label}'
                c = in_camera[camera.name].labels.add()
                c.box.CopyFrom(p.box)
                c.type, c.id, c.association.laser_object_id = int(kind), camera_label_id(oid, camera), oid
                area = p.box.length * p.box.width
                if area > best_area:
                    best_area, label.most_visible_camera_name = area, camera.label
            if best_area > 0.0:
                self._set_box(label.camera_synced_box, box)

    @staticmethod
    def _set_box(target, box):
        (target.center_x, target.center_y, target.center_z, target.length, target.width, target.height,
         target.heading) = (float(v) for v in box)
