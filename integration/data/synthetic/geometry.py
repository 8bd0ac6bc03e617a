"""Rigid-body helpers shared by the scene model, the ray caster and the table writer.

Conventions follow nuScenes: quaternions are ``[w, x, y, z]``; a box's ``size`` is
``[width, length, height]`` and its local x axis points along its length (the heading).
"""
import numpy as np


def yaw_matrix(yaw):
    """3x3 rotation about +z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_quaternion(yaw):
    """Quaternion ``[w, x, y, z]`` of a rotation about +z, as plain floats for JSON."""
    return [float(np.cos(yaw / 2.0)), 0.0, 0.0, float(np.sin(yaw / 2.0))]


def matrix_quaternion(rot):
    """Quaternion ``[w, x, y, z]`` (w >= 0) of a proper 3x3 rotation matrix."""
    m = np.asarray(rot, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0.0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    if q[0] < 0.0:
        q = -q
    return [float(v) for v in q / np.linalg.norm(q)]


def points_in_boxes(points, centers, sizes_wlh, yaws):
    """Boolean matrix (N points, B boxes): point inside the closed yaw-rotated box."""
    points = np.asarray(points, dtype=np.float64)
    mask = np.zeros((len(points), len(centers)), dtype=bool)
    for b, (center, size, yaw) in enumerate(zip(centers, sizes_wlh, yaws)):
        local = (points - center) @ yaw_matrix(yaw)  # rows @ R == R^T applied to each row
        half = np.array([size[1], size[0], size[2]]) / 2.0
        mask[:, b] = np.all(np.abs(local) <= half, axis=1)
    return mask
