"""Rotating multi-beam LiDAR simulated by ray casting against terrain and oriented boxes.

The sensor fires every beam at every azimuth step at one instant (no motion distortion).
Each ray returns its nearest hit: terrain (first crossing of the height field, found by
marching then bisection) or a box (slab test in the box's own frame). Object boxes are
inset by ``box_inset`` from their annotation and range noise is clipped below that inset, so
every return from an object lies strictly inside its annotated box, as in nuScenes, where
annotations enclose the object's points.
"""
from dataclasses import dataclass

import numpy as np

from .geometry import yaw_matrix

GROUND_REFLECTIVITY = 0.08  # asphalt


@dataclass(frozen=True)
class LidarSpec:
    elevations_deg: tuple = tuple(np.linspace(-30.67, 10.67, 32).tolist())  # HDL-32E-like
    azimuth_steps: int = 1000
    min_range: float = 1.0
    max_range: float = 90.0
    range_noise_std: float = 0.012
    range_noise_clip: float = 0.03
    box_inset: float = 0.05
    dropout: float = 0.02
    intensity_noise_std: float = 2.0

    def ray_directions(self):
        """Unit directions (R, 3) in the sensor frame and each ray's beam (ring) index."""
        elev = np.deg2rad(np.asarray(self.elevations_deg))
        azim = np.arange(self.azimuth_steps) * (2 * np.pi / self.azimuth_steps)
        el, az = np.meshgrid(elev, azim)  # rows: azimuth steps, columns: beams
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
        rings = np.broadcast_to(np.arange(len(elev)), el.shape)
        return dirs.reshape(-1, 3), rings.reshape(-1)


def _ground_hits(origin, dirs, relief, max_range, steps=16, bisections=16):
    """Distance to the first terrain crossing along each ray (inf where none within range)."""
    t_hit = np.full(len(dirs), np.inf)
    z_lo, z_hi = relief.bounds
    down = dirs[:, 2] < -1e-9
    d = dirs[down]
    t_near = np.clip((z_hi - origin[2]) / d[:, 2], 0.0, max_range)
    t_far = np.clip((z_lo - origin[2]) / d[:, 2], 0.0, max_range)

    def above(t):  # ray height minus terrain height at distance t (rays x samples)
        p = origin + t[..., None] * d[:, None, :] if t.ndim == 2 else origin + t[:, None] * d
        return p[..., 2] - relief.height(p[..., 0], p[..., 1])

    ts = t_near[:, None] + (t_far - t_near)[:, None] * np.linspace(0.0, 1.0, steps + 1)[None, :]
    below = above(ts) <= 0.0
    found = below.any(axis=1)
    first = np.argmax(below, axis=1)
    lo = ts[np.arange(len(d)), np.maximum(first - 1, 0)]
    hi = ts[np.arange(len(d)), first]
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        under = above(mid) <= 0.0
        hi = np.where(under, mid, hi)
        lo = np.where(under, lo, mid)
    hits = np.where(found & (hi < max_range), hi, np.inf)
    t_hit[np.flatnonzero(down)] = hits
    return t_hit


def _box_sector(origin, center, size_wlh, yaw):
    """Azimuth interval (centre, lower and upper offset) that a box covers seen from ``origin``."""
    half_l, half_w = size_wlh[1] / 2.0, size_wlh[0] / 2.0
    corners = np.array([[half_l, half_w], [half_l, -half_w], [-half_l, half_w], [-half_l, -half_w]])
    rel = corners @ yaw_matrix(yaw)[:2, :2].T + (center[:2] - origin[:2])
    mid = np.arctan2(rel[:, 1].sum(), rel[:, 0].sum())
    offsets = (np.arctan2(rel[:, 1], rel[:, 0]) - mid + np.pi) % (2 * np.pi) - np.pi
    return mid, offsets.min(), offsets.max()


def _rays_in_sector(order, sorted_az, mid, lo, hi, pad=1e-3):
    """Indices of rays whose azimuth lies in [mid + lo, mid + hi] (wrapping at +-pi).

    ``order`` sorts the rays by azimuth and ``sorted_az`` holds the sorted values.
    """
    start = (mid + lo - pad + np.pi) % (2 * np.pi) - np.pi
    stop = (mid + hi + pad + np.pi) % (2 * np.pi) - np.pi
    i0, i1 = np.searchsorted(sorted_az, [start, stop])
    if start <= stop:
        return order[i0:i1]
    return np.concatenate([order[i0:], order[:i1]])


def _nearest_box_hits(origin, dirs, centers, sizes_wlh, yaws, inset):
    """Nearest box entry along each ray.

    Returns per ray the entry distance (inf on a miss), the box index (-1 on a miss) and the
    cosine of incidence on the entry face, plus per box the number of rays entering it. Only rays
    inside a box's azimuth sector are tested against it.
    """
    n_rays = len(dirs)
    best_t = np.full(n_rays, np.inf)
    best_box = np.full(n_rays, -1, dtype=np.int64)
    best_cos = np.zeros(n_rays)
    rays_in = np.zeros(len(centers), dtype=np.int64)
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    order = np.argsort(azimuth, kind='stable')
    sorted_az = azimuth[order]
    for b in range(len(centers)):
        rel = origin[:2] - centers[b, :2]
        local_xy = rel @ yaw_matrix(yaws[b])[:2, :2]
        if abs(local_xy[0]) <= sizes_wlh[b, 1] / 2 and abs(local_xy[1]) <= sizes_wlh[b, 0] / 2:
            candidates = np.arange(n_rays)  # sensor above or below the box: test every ray
        else:
            candidates = _rays_in_sector(order, sorted_az, *_box_sector(origin, centers[b], sizes_wlh[b], yaws[b]))
        if len(candidates) == 0:
            continue
        rot = yaw_matrix(yaws[b])
        o_local = (origin - centers[b]) @ rot
        d_local = dirs[candidates] @ rot
        half = np.maximum(np.array([sizes_wlh[b, 1], sizes_wlh[b, 0], sizes_wlh[b, 2]]) / 2.0 - inset, 0.01)
        with np.errstate(divide='ignore', invalid='ignore'):
            t1 = (-half - o_local) / d_local
            t2 = (half - o_local) / d_local
        t_min = np.minimum(t1, t2)
        t_near = t_min.max(axis=1)
        hit = (np.maximum(t1, t2).min(axis=1) >= t_near) & (t_near > 0.0)
        rays_in[b] = int(hit.sum())
        closer = hit & (t_near < best_t[candidates])
        idx = candidates[closer]
        best_t[idx] = t_near[closer]
        best_box[idx] = b
        face = np.argmax(t_min[closer], axis=1)
        best_cos[idx] = np.abs(d_local[closer][np.arange(len(idx)), face])
    return best_t, best_box, best_cos, rays_in


@dataclass
class Scan:
    """One sweep: points in the sensor frame (N, 5: x, y, z, intensity, ring) plus hit stats."""
    points: np.ndarray
    box_rays: np.ndarray     # per box: rays whose line enters the box (occluded or not)
    box_returns: np.ndarray  # per box: rays whose nearest hit is the box


def scan(spec, sensor_to_global, boxes, relief, rng):
    """Simulate one sweep.

    ``sensor_to_global`` is a 4x4 pose; ``boxes`` = (centres, sizes_wlh, yaws, reflectivity) in
    the global frame. The rng draws noise, dropout and intensity jitter.
    """
    dirs_sensor, rings = spec.ray_directions()
    rot, origin = sensor_to_global[:3, :3], sensor_to_global[:3, 3]
    dirs = dirs_sensor @ rot.T
    centers, sizes, yaws, refl = boxes

    near = np.linalg.norm(centers[:, :2] - origin[:2], axis=1) < spec.max_range + np.linalg.norm(sizes[:, :2], axis=1)
    box_ids = np.flatnonzero(near)
    t_box, box_of_ray, cos_box, rays_in = _nearest_box_hits(
        origin, dirs, centers[box_ids], sizes[box_ids], yaws[box_ids], spec.box_inset)
    t_ground = _ground_hits(origin, dirs, relief, spec.max_range)

    on_box = t_box < t_ground
    t = np.where(on_box, t_box, t_ground)
    valid = np.isfinite(t) & (t >= spec.min_range) & (t <= spec.max_range)
    box_of_ray = np.where(on_box, np.append(box_ids, -1)[box_of_ray], -1)  # global box index

    box_rays = np.zeros(len(centers), dtype=np.int64)
    box_rays[box_ids] = rays_in
    box_returns = np.bincount(box_of_ray[valid & on_box], minlength=len(centers)).astype(np.int64)

    noise = np.clip(rng.normal(0.0, spec.range_noise_std, len(t)), -spec.range_noise_clip, spec.range_noise_clip)
    keep = valid & (rng.random(len(t)) >= spec.dropout)
    cos_inc = np.where(on_box, cos_box, np.abs(dirs[:, 2]))
    reflect = np.append(refl, GROUND_REFLECTIVITY)[box_of_ray]  # index -1: terrain
    with np.errstate(invalid='ignore', over='ignore'):
        intensity = 255.0 * reflect * (0.3 + 0.7 * cos_inc) * np.exp(-t / 120.0)
    intensity = np.clip(np.round(intensity + rng.normal(0.0, spec.intensity_noise_std, len(t))), 0, 255)

    r = (t + noise)[keep]
    points = np.concatenate([dirs_sensor[keep] * r[:, None], intensity[keep, None], rings[keep, None]], axis=1)
    return Scan(points.astype(np.float32), box_rays, box_returns)
