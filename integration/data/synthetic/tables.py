"""nuScenes table records (the schema the devkit's ``NuScenes`` class loads).

Only the tables and fields that nuscenes-devkit and MMDetection3D's converter read are written.
Tokens are md5 digests of a descriptive key, so output is reproducible byte for byte.
"""
import hashlib
import json
import os
import struct
import zlib

import numpy as np

from .classes import ATTRIBUTES, OBJECT_CLASSES
from .geometry import matrix_quaternion, yaw_matrix, yaw_quaternion

TABLE_NAMES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor',
               'ego_pose', 'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
LIDAR = 'LIDAR_TOP'
# Mounting close to the nuScenes vehicles: the top LiDAR is turned -90 degrees about z, so
# its x axis points to the ego's right (this exercises every frame transform downstream).
LIDAR_TRANSLATION = (0.943713, 0.0, 1.84023)
LIDAR_YAW = -np.pi / 2
CAMERAS = {  # channel: (translation in the ego frame, yaw of the optical axis)
    'CAM_FRONT': ((1.70, 0.02, 1.51), 0.0),
    'CAM_FRONT_RIGHT': ((1.55, -0.49, 1.50), np.deg2rad(-55.0)),
    'CAM_FRONT_LEFT': ((1.52, 0.49, 1.51), np.deg2rad(55.0)),
    'CAM_BACK': ((0.03, 0.0, 1.57), np.pi),
    'CAM_BACK_LEFT': ((1.04, 0.48, 1.56), np.deg2rad(110.0)),
    'CAM_BACK_RIGHT': ((1.04, -0.48, 1.56), np.deg2rad(-110.0)),
}
CAMERA_INTRINSIC = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
IMAGE_WH = (1600, 900)
VISIBILITY_LEVELS = (('1', 'v0-40'), ('2', 'v40-60'), ('3', 'v60-80'), ('4', 'v80-100'))
# Optical frame (x right, y down, z forward) expressed in the ego frame for a camera facing +x.
_CAM_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def make_token(seed, *parts):
    key = '|'.join(str(p) for p in (seed,) + parts)
    return hashlib.md5(key.encode('utf-8')).hexdigest()


def visibility_token(visible_fraction):
    """nuScenes visibility bin ('1'..'4') for the visible fraction of an object."""
    return VISIBILITY_LEVELS[int(np.searchsorted([0.4, 0.6, 0.8], visible_fraction, side='right'))][0]


def pose_matrix(translation, yaw):
    m = np.eye(4)
    m[:3, :3] = yaw_matrix(yaw)
    m[:3, 3] = translation
    return m


class NuScenesTables:
    """Accumulates records for every table; ``write`` dumps them as ``<version>/<table>.json``."""

    def __init__(self, seed):
        self.seed = seed
        self.records = {name: [] for name in TABLE_NAMES}
        self._static_tables()

    def token(self, *parts):
        return make_token(self.seed, *parts)

    def _static_tables(self):
        for name, spec in sorted(OBJECT_CLASSES.items()):
            self.records['category'].append({'token': self.token('category', spec.category),
                                             'name': spec.category, 'description': f'synthetic {name}'})
        for name in ATTRIBUTES:
            self.records['attribute'].append({'token': self.attribute_token(name), 'name': name,
                                              'description': name})
        for token, level in VISIBILITY_LEVELS:
            self.records['visibility'].append({'token': token, 'level': level,
                                               'description': f'visibility of whole object is {level}'})
        for channel, modality in [(LIDAR, 'lidar')] + [(c, 'camera') for c in CAMERAS]:
            self.records['sensor'].append({'token': self.token('sensor', channel), 'channel': channel,
                                           'modality': modality})

    def attribute_token(self, name):
        return self.token('attribute', name)

    def category_token(self, class_name):
        return self.token('category', OBJECT_CLASSES[class_name].category)

    def add_log_and_map(self, scene_key, logfile, location, date):
        log_token = self.token('log', scene_key)
        self.records['log'].append({'token': log_token, 'logfile': logfile, 'vehicle': 'n015',
                                    'date_captured': date, 'location': location})
        for record in self.records['map']:
            if record['category'] == location:
                record['log_tokens'].append(log_token)
                break
        else:
            map_token = self.token('map', location)
            self.records['map'].append({'token': map_token, 'log_tokens': [log_token],
                                        'category': location, 'filename': f'maps/{map_token}.png'})
        return log_token

    def add_calibrations(self, scene_key):
        """One calibrated_sensor per sensor per scene; returns {channel: token}."""
        tokens = {}
        rows = [(LIDAR, LIDAR_TRANSLATION, matrix_quaternion(yaw_matrix(LIDAR_YAW)), [])]
        for channel, (translation, yaw) in CAMERAS.items():
            rows.append((channel, translation, matrix_quaternion(yaw_matrix(yaw) @ _CAM_AXES),
                         CAMERA_INTRINSIC))
        for channel, translation, rotation, intrinsic in rows:
            tokens[channel] = self.token('calibrated_sensor', scene_key, channel)
            self.records['calibrated_sensor'].append({
                'token': tokens[channel], 'sensor_token': self.token('sensor', channel),
                'translation': list(translation), 'rotation': rotation, 'camera_intrinsic': intrinsic})
        return tokens

    def add_ego_pose(self, key, timestamp, translation, yaw):
        token = self.token('ego_pose', key)
        self.records['ego_pose'].append({'token': token, 'timestamp': timestamp,
                                         'rotation': yaw_quaternion(yaw),
                                         'translation': [float(v) for v in translation]})
        return token

    def write(self, out_dir, version):
        """Write the tables plus the map mask files ``map.json`` names (the devkit asserts they exist)."""
        folder = os.path.join(out_dir, version)
        os.makedirs(folder, exist_ok=True)
        for name in TABLE_NAMES:
            with open(os.path.join(folder, f'{name}.json'), 'w') as f:
                json.dump(self.records[name], f, indent=1)
        for record in self.records['map']:
            path = os.path.join(out_dir, record['filename'])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(blank_png(8, 8))


def blank_png(width, height):
    """An all-background 8-bit greyscale PNG: a placeholder semantic-prior map mask."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    rows = b''.join(b'\x00' + bytes(width) for _ in range(height))  # filter byte 0 per row
    header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(rows, 9))
            + chunk(b'IEND', b''))


def link_chain(records):
    """Set ``prev`` / ``next`` tokens along a time-ordered list of records."""
    for i, record in enumerate(records):
        record['prev'] = records[i - 1]['token'] if i > 0 else ''
        record['next'] = records[i + 1]['token'] if i + 1 < len(records) else ''
