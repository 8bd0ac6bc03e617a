"""The simulated Waymo sensor rig: the TOP LiDAR and the five cameras, in the vehicle frame.

Waymo frames: vehicle x forward, y left, z up, origin on the ground; a camera frame has x along
the optical axis, y left, z up; ``extrinsic`` maps sensor to vehicle coordinates. Enum values are
those of ``dataset_pb2.LaserName`` / ``CameraName``.
"""
from dataclasses import dataclass

import numpy as np

from integration.data.synthetic.geometry import yaw_matrix
from integration.data.synthetic.lidar_model import LidarSpec

TOP_LASER = 1  # dataset_pb2.LaserName.TOP
TOP_ROWS = 64
TOP_COLUMNS = 2650  # the real TOP range image width
TOP_MAX_RANGE_M = 75.0
TOP_TRANSLATION = (1.43, 0.0, 2.184)
TOP_YAW = 0.05  # a small mounting yaw exercises the decoder's azimuth correction


def top_inclinations_deg(rows=TOP_ROWS):
    """Ascending beam inclinations spanning -17.6..+2.4 degrees, denser towards the horizon."""
    t = np.linspace(0.0, 1.0, rows)
    return -17.6 + 20.0 * (1.0 - (1.0 - t) ** 1.6)


def top_spec(columns=TOP_COLUMNS, rows=TOP_ROWS):
    """Ray-caster parameters of the TOP LiDAR (one ray per range-image pixel)."""
    return LidarSpec(elevations_deg=tuple(top_inclinations_deg(rows).tolist()), azimuth_steps=int(columns),
                     min_range=1.0, max_range=TOP_MAX_RANGE_M)


def pose_4x4(translation, yaw):
    m = np.eye(4)
    m[:3, :3] = yaw_matrix(yaw)
    m[:3, 3] = translation
    return m


def top_extrinsic():
    return pose_4x4(TOP_TRANSLATION, TOP_YAW)


def scan_frame_offset(columns):
    """Yaw of the ray caster's sensor frame relative to the TOP LiDAR frame.

    The ray caster fires ray ``k`` at azimuth ``2 pi k / W`` in its own frame; Waymo's decoder gives
    column ``w`` the azimuth ``pi - 2 pi (w + 0.5) / W - atan2(E10, E00)`` in the LiDAR frame. With
    this offset ray ``k`` lands exactly on column ``(W - k) mod W``.
    """
    extrinsic = top_extrinsic()
    return -np.pi - np.pi / columns - np.arctan2(extrinsic[1, 0], extrinsic[0, 0])


@dataclass(frozen=True)
class Camera:
    name: int        # dataset_pb2.CameraName
    label: str       # its enum name
    translation: tuple
    yaw: float
    width: int
    height: int
    focal: float

    @property
    def extrinsic(self):
        return pose_4x4(self.translation, self.yaw)

    @property
    def intrinsic(self):
        """Waymo's nine intrinsics: f_u, f_v, c_u, c_v, k1, k2, p1, p2, k3 (no distortion)."""
        return [self.focal, self.focal, self.width / 2.0, self.height / 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]

    def project(self, points_vehicle):
        """Pixel coordinates (N, 2) of vehicle-frame points and whether each lies in the image."""
        cam = (np.asarray(points_vehicle, dtype=np.float64) - self.extrinsic[:3, 3]) @ self.extrinsic[:3, :3]
        depth = cam[:, 0]
        with np.errstate(divide='ignore', invalid='ignore'):
            u = self.width / 2.0 - self.focal * cam[:, 1] / depth
            v = self.height / 2.0 - self.focal * cam[:, 2] / depth
        inside = (depth > 0.1) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return np.stack([u, v], axis=1), inside


# Small images (a tenth of the real 1920 x 1280 / 1920 x 886) with the real fields of view.
CAMERAS = (
    Camera(1, 'FRONT', (1.54, -0.02, 2.12), 0.0, 192, 128, 205.0),
    Camera(2, 'FRONT_LEFT', (1.50, 0.10, 2.12), np.deg2rad(45.0), 192, 128, 205.0),
    Camera(3, 'FRONT_RIGHT', (1.50, -0.10, 2.12), np.deg2rad(-45.0), 192, 128, 205.0),
    Camera(4, 'SIDE_LEFT', (1.25, 0.12, 2.10), np.deg2rad(90.0), 192, 88, 205.0),
    Camera(5, 'SIDE_RIGHT', (1.25, -0.12, 2.10), np.deg2rad(-90.0), 192, 88, 205.0),
)
