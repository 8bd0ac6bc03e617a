"""Simulate Waymo-style frames: the shared road-scene model seen by the TOP LiDAR rig.

Reuses the synthetic nuScenes scene model and ray caster (``integration.data.synthetic``). Every ray of
the caster is one range-image pixel (see ``rig.scan_frame_offset``). Return 1 is the nearest hit;
return 2 exists only on pixels whose first return lies on a labelled object and is the surface
behind it (a ray that partly passes the object), kept on half of those pixels. Labels follow Waymo's
types: vehicles (cars, trucks, buses, trailers, construction vehicles, motorcycles), pedestrians,
cyclists (every bicycle) and signs (posts added along the sidewalks); cones and barriers stay
unlabelled clutter. ``num_lidar_points_in_box`` counts the points of both returns inside the box.

Vehicles and cycles are ray-cast with a front profile, not as plain boxes: a full-height rear part and a
lower front part (a hood; for cycles the handlebar end), both inside the labelled box. A plain box looks
the same from the front and the back, so no detector could tell a heading from its reverse and Waymo's
heading-weighted APH would be capped near half the AP; the profile makes the direction observable, as the
shape of a real vehicle does. Pedestrians stay plain boxes.
"""
import base64
import hashlib
from dataclasses import dataclass

import numpy as np

from integration.data.synthetic.geometry import points_in_boxes
from integration.data.synthetic.lidar_model import scan
from integration.data.synthetic.scene_model import BOX_SINK, SIDEWALK_U, VIEW_MARGIN_S, build_scene

from .rig import pose_4x4, scan_frame_offset, top_extrinsic, top_spec

TYPE_VEHICLE, TYPE_PEDESTRIAN, TYPE_SIGN, TYPE_CYCLIST = 1, 2, 3, 4  # label_pb2.Label.Type
LEVEL_1, LEVEL_2 = 1, 2  # label_pb2.Label.DifficultyLevel
CLASS_TYPES = {'car': TYPE_VEHICLE, 'truck': TYPE_VEHICLE, 'bus': TYPE_VEHICLE, 'trailer': TYPE_VEHICLE,
               'construction_vehicle': TYPE_VEHICLE, 'motorcycle': TYPE_VEHICLE,
               'pedestrian': TYPE_PEDESTRIAN, 'bicycle': TYPE_CYCLIST}
FRAME_INTERVAL_S = 0.1       # Waymo's 10 Hz
LABEL_RADIUS_M = 75.0        # objects labelled within this BEV distance of the vehicle
LEVEL_2_MAX_POINTS = 5       # Waymo: boxes with at most 5 points are LEVEL_2
SIGN_SIZE_WLH = (0.75, 0.12, 2.6)
SIGN_SPACING_M = 45.0
SIGN_REFLECTIVITY = 0.9
SECOND_RETURN_KEEP = 0.5
PROFILED_TYPES = (TYPE_VEHICLE, TYPE_CYCLIST)
FRONT_LENGTH_FRACTION = 0.3  # the lower front part: this fraction of the box length ...
FRONT_HEIGHT_FRACTION = 0.55  # ... at this fraction of its height
BASE_TIMESTAMP_US = 1_550_000_000_000_000


@dataclass
class LidarReturn:
    """One return of the TOP range image: vehicle-frame points and their pixels."""
    points: np.ndarray     # (N, 3) float64, vehicle frame
    range: np.ndarray      # (N,) float32, metres from the sensor
    intensity: np.ndarray  # (N,) float32, 0..1
    rows: np.ndarray       # (N,) int
    cols: np.ndarray       # (N,) int


@dataclass
class Labels:
    boxes: np.ndarray       # (M, 7) center x, y, z, length, width, height, heading; vehicle frame
    types: np.ndarray       # (M,) Waymo type
    ids: list               # (M,) stable object ids
    num_points: np.ndarray  # (M,) points of both returns inside the box
    difficulty: np.ndarray  # (M,) LEVEL_1 / LEVEL_2
    speed: np.ndarray       # (M, 2) global-frame velocity, m/s


@dataclass
class FrameData:
    timestamp_micros: int
    pose: np.ndarray  # (4, 4) vehicle to global
    returns: tuple    # (first, second) LidarReturn
    labels: Labels


def segment_name(seed, index):
    """A Waymo-style context name (``<20 digits>_<start>_000_<end>_000``), fixed by seed and index."""
    digits = str(int(hashlib.md5(f'{seed}|segment|{index}'.encode()).hexdigest(), 16))[:20]
    start = 1000 + 20 * index
    return f'{digits}_{start}_000_{start + 20}_000'


def front_profiles(boxes, profiled):
    """Ray-casting boxes: each ``profiled`` box (centres, sizes [w, l, h], yaws, reflectivities; global frame)
    replaced by its full-height rear part and its lower front part (module docstring), the others kept."""
    centers, sizes, yaws, refl = boxes
    c, s, y = centers[profiled], sizes[profiled], yaws[profiled]
    length, height = s[:, 1], s[:, 2]
    front_len, front_h = FRONT_LENGTH_FRACTION * length, FRONT_HEIGHT_FRACTION * height
    forward = np.stack([np.cos(y), np.sin(y), np.zeros_like(y)], axis=1)
    rear_c = c - forward * (front_len / 2.0)[:, None]
    front_c = c + forward * ((length - front_len) / 2.0)[:, None]
    front_c[:, 2] += (front_h - height) / 2.0  # same bottom as the box
    rear_s = np.stack([s[:, 0], length - front_len, height], axis=1)
    front_s = np.stack([s[:, 0], front_len, front_h], axis=1)
    rest = ~profiled
    return (np.concatenate([centers[rest], rear_c, front_c]), np.concatenate([sizes[rest], rear_s, front_s]),
            np.concatenate([yaws[rest], y, y]), np.concatenate([refl[rest], refl[profiled], refl[profiled]]))


def object_id(seed, key):
    return base64.urlsafe_b64encode(hashlib.md5(f'{seed}|{key}'.encode()).digest()).decode()[:22]


class SegmentSimulator:
    """One segment: a sampled road scene, its sign posts and the TOP LiDAR's frames."""

    def __init__(self, seed, index, frames, columns, rows):
        self.seed, self.index, self.frames = seed, index, frames
        self.name = segment_name(seed, index)
        self.spec = top_spec(columns, rows)
        self.rows, self.columns = rows, columns
        rng = np.random.default_rng([seed, index, 0x5A])
        self.scene = build_scene(self.name, index, max(frames - 1, 1) * FRAME_INTERVAL_S, rng)
        self.signs = self._place_signs(rng)
        self.ids = [object_id(seed, a.key) for a in self.scene.actors]
        self.ids += [object_id(seed, f'{self.name}/sign/{i}') for i in range(len(self.signs[0]))]
        self.types = np.array([CLASS_TYPES.get(a.name, 0) for a in self.scene.actors]
                              + [TYPE_SIGN] * len(self.signs[0]), dtype=np.int64)
        self.scan_to_vehicle = top_extrinsic() @ pose_4x4((0.0, 0.0, 0.0), scan_frame_offset(columns))

    def _place_signs(self, rng):
        m = self.scene
        s_end = m.ego_speed * m.duration + VIEW_MARGIN_S
        centers, sizes, yaws = [], [], []
        s, side = -VIEW_MARGIN_S + float(rng.uniform(0.0, SIGN_SPACING_M)), int(rng.choice([-1, 1]))
        while s < s_end:
            xy = m.road_to_global(s, side * (SIDEWALK_U[0] + 0.4))
            z = float(m.relief.height(xy[0], xy[1])) + SIGN_SIZE_WLH[2] / 2.0 - BOX_SINK
            centers.append([xy[0], xy[1], z])
            sizes.append(SIGN_SIZE_WLH)
            yaws.append(m.road_yaw + side * np.pi / 2)
            s, side = s + SIGN_SPACING_M * float(rng.uniform(0.7, 1.3)), -side
        return (np.array(centers, dtype=np.float64).reshape(-1, 3), np.array(sizes, dtype=np.float64).reshape(-1, 3),
                np.array(yaws, dtype=np.float64))

    def timestamp(self, j):
        return BASE_TIMESTAMP_US + self.index * 3_600_000_000 + j * int(FRAME_INTERVAL_S * 1e6)

    def frame(self, j):
        """Simulate frame ``j`` (0-based)."""
        t = j * FRAME_INTERVAL_S
        translation, yaw = self.scene.ego_pose(t)
        pose = pose_4x4(translation, yaw)
        centers, sizes, yaws, refl = self.scene.boxes(t)
        n_actors = len(self.scene.actors)
        sc, ss, sy = self.signs
        objects = (np.concatenate([centers[:n_actors], sc]), np.concatenate([sizes[:n_actors], ss]),
                   np.concatenate([yaws[:n_actors], sy]),
                   np.concatenate([refl[:n_actors], np.full(len(sc), SIGN_REFLECTIVITY)]))
        clutter = tuple(a[n_actors:] for a in (centers, sizes, yaws, refl))
        everything = tuple(np.concatenate([o, c]) for o, c in zip(objects, clutter))
        scan_pose = pose @ self.scan_to_vehicle
        rng = np.random.default_rng([self.seed, self.index, j])
        profiled = np.concatenate([np.isin(self.types, PROFILED_TYPES), np.zeros(len(clutter[0]), dtype=bool)])
        first = self._return(scan(self.spec, scan_pose, front_profiles(everything, profiled), self.scene.relief,
                                  rng))
        behind = self._return(scan(self.spec, scan_pose, clutter, self.scene.relief, rng))

        obj_c, obj_y = self._to_vehicle(pose, objects[0], objects[2])
        obj_s = objects[1]
        near = np.flatnonzero(np.linalg.norm(obj_c[:, :2], axis=1) < LABEL_RADIUS_M + 10.0)
        inside_first = points_in_boxes(first.points, obj_c[near], obj_s[near], obj_y[near])
        second = self._second_return(first, inside_first.any(axis=1), behind, rng)
        counts = inside_first.sum(axis=0) + points_in_boxes(second.points, obj_c[near], obj_s[near],
                                                            obj_y[near]).sum(axis=0)
        labels = self._labels(near, counts, obj_c, obj_s, obj_y)
        return FrameData(self.timestamp(j), pose, (first, second), labels)

    def _to_vehicle(self, pose, centers, yaws):
        rot, origin = pose[:3, :3], pose[:3, 3]
        heading = (yaws - np.arctan2(rot[1, 0], rot[0, 0]) + np.pi) % (2 * np.pi) - np.pi
        return (centers - origin) @ rot, heading

    def _return(self, result):
        """Vehicle-frame points and range-image pixels of a ray-caster sweep."""
        pts = result.points[:, :3].astype(np.float64)
        k = np.rint(np.arctan2(pts[:, 1], pts[:, 0]) * self.columns / (2 * np.pi)).astype(np.int64) % self.columns
        rows = self.rows - 1 - result.points[:, 4].astype(np.int64)  # row 0 is the highest beam
        cols = (self.columns - k) % self.columns
        vehicle = pts @ self.scan_to_vehicle[:3, :3].T + self.scan_to_vehicle[:3, 3]
        return LidarReturn(vehicle, np.linalg.norm(pts, axis=1).astype(np.float32),
                           (result.points[:, 3] / 255.0).astype(np.float32), rows, cols)

    def _second_return(self, first, on_object, behind, rng):
        """Keep ``behind`` points on pixels whose first return hit an object and that lie beyond it."""
        pixel_first = np.full(self.rows * self.columns, -1.0)
        hit = first.rows[on_object] * self.columns + first.cols[on_object]
        pixel_first[hit] = first.range[on_object]
        beyond = pixel_first[behind.rows * self.columns + behind.cols]
        keep = (beyond > 0) & (behind.range > beyond + 0.5) & (rng.random(len(behind.range)) < SECOND_RETURN_KEEP)
        return LidarReturn(*(a[keep] for a in (behind.points, behind.range, behind.intensity,
                                               behind.rows, behind.cols)))

    def _labels(self, near, counts, centers, sizes, yaws):
        keep = (self.types[near] > 0) & (counts > 0) & (np.linalg.norm(centers[near, :2], axis=1) < LABEL_RADIUS_M)
        idx, counts = near[keep], counts[keep]
        boxes = np.concatenate([centers[idx], sizes[idx][:, [1, 0, 2]], yaws[idx, None]], axis=1)
        velocities = []
        for i in idx:
            if i < len(self.scene.actors):
                actor = self.scene.actors[i]
                velocities.append([actor.speed * np.cos(actor.yaw), actor.speed * np.sin(actor.yaw)])
            else:
                velocities.append([0.0, 0.0])
        difficulty = np.where(counts <= LEVEL_2_MAX_POINTS, LEVEL_2, LEVEL_1)
        return Labels(boxes, self.types[idx], [self.ids[i] for i in idx], counts.astype(np.int64),
                      difficulty.astype(np.int64), np.array(velocities, dtype=np.float64).reshape(-1, 2))
