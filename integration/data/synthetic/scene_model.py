"""Scene model: a straight multi-lane road through gently rolling terrain, an ego vehicle
driving along it at constant speed, and actors of the ten detection classes.

Road frame: ``s`` along the road, ``u`` to its left. Layout across the road (|u| in metres):
travel lanes at 1.75 / 5.25 (positive u drives against the road direction; a construction zone may
closes an outer lane), bike lane 7.6,
parking strip 9.6, sidewalk 11.5-14.5, buildings (unannotated clutter) from 17 outwards.
Every actor moves along its own heading at constant speed, so positions at any time are
closed-form and the velocities nuScenes derives from consecutive annotations are exact.
"""
from dataclasses import dataclass, field

import numpy as np

from .classes import OBJECT_CLASSES, attribute_for

LOCATIONS = ('singapore-onenorth', 'boston-seaport', 'singapore-queenstown',
             'singapore-hollandvillage')
LANES = ((-5.25, 1), (-1.75, 1), (1.75, -1), (5.25, -1))  # (u, direction along s)
EGO_LANE_U = -1.75
BIKE_LANE_U = 7.6
PARKING_U = 9.6
SIDEWALK_U = (11.5, 14.5)
BUILDING_U = 17.0
EGO_CLEAR_S = (-6.0, 8.0)  # ego footprint plus a safety gap, in s relative to the ego origin
VIEW_MARGIN_S = 80.0       # actors are placed this far beyond the ego's path
BOX_SINK = 0.02            # annotated boxes reach this far below the terrain under their centre


@dataclass(frozen=True)
class Relief:
    """Terrain height: a base plus a few long-wavelength sinusoids (gentle slopes)."""
    base: float
    amplitudes: tuple
    wave_vectors: tuple  # (kx, ky) per component, rad/m
    phases: tuple

    def height(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        z = np.full(np.broadcast(x, y).shape, self.base)
        for a, (kx, ky), p in zip(self.amplitudes, self.wave_vectors, self.phases):
            z = z + a * np.sin(kx * x + ky * y + p)
        return z

    @property
    def bounds(self):
        spread = float(np.sum(np.abs(self.amplitudes)))
        return self.base - spread, self.base + spread


@dataclass(frozen=True)
class Actor:
    """An annotated object. ``start_xy`` is its global BEV centre at scene time 0."""
    key: str
    name: str
    size_wlh: tuple
    start_xy: tuple
    yaw: float
    speed: float
    parked: bool

    def xy(self, t):
        heading = np.array([np.cos(self.yaw), np.sin(self.yaw)])
        return np.asarray(self.start_xy) + self.speed * t * heading

    @property
    def attribute(self):
        return attribute_for(self.name, self.speed, self.parked)


@dataclass(frozen=True)
class Structure:
    """Unannotated static clutter (a building block)."""
    center_xy: tuple
    yaw: float
    size_wlh: tuple


@dataclass
class SceneModel:
    name: str
    location: str
    origin: np.ndarray
    road_yaw: float
    ego_speed: float
    duration: float
    relief: Relief
    actors: list = field(default_factory=list)
    structures: list = field(default_factory=list)

    def road_to_global(self, s, u):
        c, si = np.cos(self.road_yaw), np.sin(self.road_yaw)
        return self.origin + np.array([s * c - u * si, s * si + u * c])

    def ego_pose(self, t):
        """Ego translation (on the terrain) and yaw at scene time ``t``."""
        xy = self.road_to_global(self.ego_speed * t, EGO_LANE_U)
        return np.array([xy[0], xy[1], float(self.relief.height(xy[0], xy[1]))]), self.road_yaw

    def actor_center(self, actor, t):
        xy = actor.xy(t)
        z = float(self.relief.height(xy[0], xy[1])) + actor.size_wlh[2] / 2.0 - BOX_SINK
        return np.array([xy[0], xy[1], z])

    def boxes(self, t):
        """All boxes at time ``t``: actors first (same order as ``self.actors``), then structures.

        Returns centres (B, 3), sizes (B, 3) as [w, l, h], yaws (B,), reflectivities (B,).
        """
        centers, sizes, yaws, refl = [], [], [], []
        for actor in self.actors:
            centers.append(self.actor_center(actor, t))
            sizes.append(actor.size_wlh)
            yaws.append(actor.yaw)
            refl.append(OBJECT_CLASSES[actor.name].reflectivity)
        for st in self.structures:
            x, y = st.center_xy
            centers.append([x, y, float(self.relief.height(x, y)) + st.size_wlh[2] / 2.0 - 0.5])
            sizes.append(st.size_wlh)
            yaws.append(st.yaw)
            refl.append(0.25)
        return (np.array(centers, dtype=np.float64).reshape(-1, 3),
                np.array(sizes, dtype=np.float64).reshape(-1, 3),
                np.array(yaws, dtype=np.float64), np.array(refl, dtype=np.float64))


def _size(rng, name, scale_h=1.0):
    spec = OBJECT_CLASSES[name]
    dims = np.array(spec.size_wlh) * (1.0 + spec.size_jitter * np.clip(rng.standard_normal(3), -2, 2))
    dims[2] *= scale_h
    return tuple(float(d) for d in dims)


def _pick(rng, weights):
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _fill_line(rng, s_lo, s_hi, draw, gap, blocked=()):
    """Place objects one after another along ``s``; ``draw()`` -> (name, size_wlh, length along s).

    Objects whose extent meets a ``blocked`` (lo, hi) interval are skipped.
    Yields (s_centre, name, size).
    """
    s = s_lo + gap()
    while s < s_hi:
        name, size, length = draw()
        centre = s + length / 2.0
        if not any(centre + length / 2.0 > lo and centre - length / 2.0 < hi for lo, hi in blocked):
            yield centre, name, size
        s = centre + length / 2.0 + gap()


class _SceneBuilder:
    """Samples one scene's content from a seeded generator."""

    VEHICLE_MIX = {'car': 0.70, 'truck': 0.10, 'bus': 0.06, 'trailer': 0.03,
                   'construction_vehicle': 0.03, 'motorcycle': 0.08}
    PARKED_MIX = {'car': 0.80, 'truck': 0.10, 'trailer': 0.05, 'construction_vehicle': 0.05}

    def __init__(self, model, rng):
        self.m, self.rng = model, rng
        self.count = 0
        t = model.duration
        self.window = (-VIEW_MARGIN_S, model.ego_speed * t + VIEW_MARGIN_S)
        self.path_mid = model.ego_speed * t / 2.0  # s of the ego half-way through the scene
        self.blocked = {EGO_LANE_U: [EGO_CLEAR_S]}  # line u -> s-intervals kept free at time 0

    def add(self, name, size, s, u, yaw_rel, speed, parked):
        xy = self.m.road_to_global(s, u)
        yaw = float((self.m.road_yaw + yaw_rel + np.pi) % (2 * np.pi) - np.pi)
        self.m.actors.append(Actor(f'{self.m.name}/{self.count}', name, size,
                                   (float(xy[0]), float(xy[1])), yaw, float(speed), parked))
        self.count += 1

    def span(self, velocity_s):
        """s-interval at time 0 from which a mover at ``velocity_s`` crosses the view window."""
        drift = velocity_s * self.m.duration
        return self.window[0] - max(0.0, drift), self.window[1] - min(0.0, drift)

    def vehicle(self, mix):
        name = _pick(self.rng, mix)
        size = _size(self.rng, name)
        return name, size, size[1]

    def lanes(self, closed_u=None):
        rng = self.rng
        for u, direction in LANES:
            if u == closed_u:
                continue
            if u == EGO_LANE_U:
                speed = self.m.ego_speed
            else:
                speed = 0.0 if rng.random() < 0.2 else float(rng.uniform(4.0, 14.0))
            lo, hi = self.span(direction * speed)
            gap = lambda: 3.0 + float(rng.exponential(30.0 if speed > 0 else 8.0))  # noqa: E731
            for s, name, size in _fill_line(rng, lo, hi, lambda: self.vehicle(self.VEHICLE_MIX),
                                            gap, self.blocked.get(u, [])):
                self.add(name, size, s, u, 0.0 if direction > 0 else np.pi, speed, parked=False)

    def bike_lanes(self):
        rng = self.rng
        for side in (-1, 1):
            direction = -side  # same direction as the adjacent travel lanes
            speed = float(rng.uniform(2.5, 6.0))
            lo, hi = self.span(direction * speed)
            gap = lambda: 4.0 + float(rng.exponential(40.0))  # noqa: E731
            for s, _, _ in _fill_line(rng, lo, hi, lambda: ('bicycle', None, 1.8), gap):
                size = _size(rng, 'bicycle', scale_h=1.35)  # rider on board
                self.add('bicycle', size, s, side * BIKE_LANE_U, 0.0 if direction > 0 else np.pi,
                         speed, parked=False)

    def construction_zone(self, side):
        """Close the outer lane on ``side``: cones on its inner edge, barriers on its outer edge and
        a construction vehicle inside (``lanes`` leaves that lane without traffic)."""
        rng = self.rng
        lane_u = side * LANES[-1][0]
        start = self.path_mid - float(rng.uniform(5.0, 35.0))
        end = start + float(rng.uniform(25.0, 45.0))
        s = start
        while s < end:
            self.add('traffic_cone', _size(rng, 'traffic_cone'), s, lane_u - side * 1.6,
                     float(rng.uniform(-np.pi, np.pi)), 0.0, parked=True)
            s += float(rng.uniform(2.5, 4.0))
        s = start
        while s < end:
            size = _size(rng, 'barrier')
            self.add('barrier', size, s + size[0] / 2.0, lane_u + side * 1.65, np.pi / 2, 0.0, parked=True)
            s += size[0] + 0.1
        size = _size(rng, 'construction_vehicle')
        self.add('construction_vehicle', size, (start + end) / 2.0, lane_u,
                 float(rng.choice([0.0, np.pi])) + 0.05 * float(rng.standard_normal()), 0.0, True)

    def roadside(self):
        rng = self.rng
        for side in (-1, 1):
            gap = lambda: (float(rng.uniform(1.0, 4.0)) if rng.random() < 0.4  # noqa: E731
                           else float(rng.uniform(10.0, 40.0)))
            for s, name, size in _fill_line(rng, *self.window, lambda: self.vehicle(self.PARKED_MIX), gap,
                                            self.blocked.get(side * PARKING_U, [])):
                self.add(name, size, s, side * PARKING_U,
                         float(rng.choice([0.0, np.pi])) + 0.04 * float(rng.standard_normal()),
                         0.0, parked=True)
            self.curb_cycles(side)
            self.pedestrians(side)

    def showcase(self):
        """Guarantee every class close to the ego's path, so each scene (and split) has them all:
        a motorcycle ahead of and a bus behind the ego in its lane (keeping its pace), a parked
        truck and trailer, and a crossing with parked cycles and waiting pedestrians beside its
        path. The construction zone adds cones, barriers and a construction vehicle."""
        rng = self.rng
        for name, s in (('motorcycle', float(rng.uniform(10.0, 16.0))), ('bus', -float(rng.uniform(16.0, 24.0)))):
            size = _size(rng, name)
            self.add(name, size, s, EGO_LANE_U, 0.0, self.m.ego_speed, parked=False)
            self.blocked[EGO_LANE_U].append((s - size[1] / 2.0 - 3.0, s + size[1] / 2.0 + 3.0))
        side = int(rng.choice([-1, 1]))
        for name, s in (('truck', self.path_mid - float(rng.uniform(5.0, 15.0))),
                        ('trailer', self.path_mid + float(rng.uniform(5.0, 15.0)))):
            size = _size(rng, name)
            self.add(name, size, s, side * PARKING_U, float(rng.choice([0.0, np.pi])), 0.0, parked=True)
            self.blocked.setdefault(side * PARKING_U, []).append((s - size[1] / 2.0 - 1.0, s + size[1] / 2.0 + 1.0))
        crossing = self.path_mid + float(rng.uniform(-10.0, 10.0))
        self.blocked.setdefault(-side * PARKING_U, []).append((crossing - 8.0, crossing + 12.0))
        self.curb_cycles(-side, near=crossing)
        for k in range(int(rng.integers(2, 4))):  # pedestrians waiting at the crossing, facing the road
            self.add('pedestrian', _size(rng, 'pedestrian'), crossing - 3.0 - 1.0 * k,
                     -side * (SIDEWALK_U[0] + 0.6), side * np.pi / 2, 0.0, parked=False)

    def curb_cycles(self, side, near=None):
        """Clusters of parked bicycles / motorcycles at the curb (one cluster at ``near`` if given)."""
        rng = self.rng
        starts = [near] if near is not None else [float(rng.uniform(*self.window))
                                                   for _ in range(int(rng.integers(0, 3)))]
        for s in starts:
            for k in range(int(rng.integers(2, 5))):
                name = 'bicycle' if rng.random() < 0.7 else 'motorcycle'
                self.add(name, _size(rng, name), s + 1.2 * k, side * (SIDEWALK_U[0] + 0.2),
                         np.pi / 2 + 0.1 * float(rng.standard_normal()), 0.0, parked=True)

    def pedestrians(self, side):
        rng = self.rng
        length = self.window[1] - self.window[0]
        lanes_u = (SIDEWALK_U[0] + 1.7, SIDEWALK_U[1] - 0.5)  # clear of the curb cycles
        for lane_u in lanes_u:  # each walking line shares one speed and direction: no collisions
            direction = int(rng.choice([-1, 1]))
            speed = float(rng.uniform(0.9, 1.7)) if rng.random() < 0.7 else 0.0
            lo, hi = self.span(direction * speed)
            gap = lambda: 1.0 + float(rng.exponential(length / 4.0))  # noqa: E731
            for s, _, size in _fill_line(rng, lo, hi, lambda: ('pedestrian', None, 0.9), gap):
                yaw = (0.0 if direction > 0 else np.pi) if speed > 0 else float(rng.uniform(-np.pi, np.pi))
                self.add('pedestrian', _size(rng, 'pedestrian'), s, side * lane_u, yaw, speed, False)

    def median_barriers(self):
        rng = self.rng
        if rng.random() >= 0.35:
            return
        s = float(rng.uniform(self.window[0], self.window[1] - 40.0))
        end = s + float(rng.uniform(30.0, 80.0))
        while s < end:
            size = _size(rng, 'barrier')
            self.add('barrier', size, s + size[0] / 2.0, 0.0, np.pi / 2, 0.0, parked=True)
            s += size[0] + 0.08

    def buildings(self):
        rng = self.rng
        for side in (-1, 1):
            s = self.window[0] - 20.0
            while s < self.window[1] + 20.0:
                length, depth = float(rng.uniform(8.0, 40.0)), float(rng.uniform(6.0, 20.0))
                u = side * (BUILDING_U + float(rng.uniform(0.0, 4.0)) + depth / 2.0)
                xy = self.m.road_to_global(s + length / 2.0, u)
                self.m.structures.append(Structure(
                    (float(xy[0]), float(xy[1])), self.m.road_yaw,
                    (depth, length, float(rng.uniform(4.0, 25.0)))))
                s += length + float(rng.uniform(2.0, 15.0))


def build_scene(name, index, duration, rng):
    """Sample a complete scene (``duration`` seconds long) from ``rng``."""
    k = rng.uniform(2 * np.pi / 120.0, 2 * np.pi / 40.0, size=3)  # wavelengths 40..120 m
    angles = rng.uniform(-np.pi, np.pi, size=3)
    relief = Relief(base=float(rng.uniform(-1.0, 1.0)),
                    amplitudes=tuple(float(a) for a in rng.uniform(0.05, 0.2, size=3)),
                    wave_vectors=tuple((float(kk * np.cos(a)), float(kk * np.sin(a)))
                                       for kk, a in zip(k, angles)),
                    phases=tuple(float(p) for p in rng.uniform(-np.pi, np.pi, size=3)))
    ego_speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(3.0, 12.0))
    model = SceneModel(name=name, location=LOCATIONS[index % len(LOCATIONS)],
                       origin=rng.uniform(300.0, 1800.0, size=2), road_yaw=float(rng.uniform(-np.pi, np.pi)),
                       ego_speed=ego_speed, duration=duration, relief=relief)
    builder = _SceneBuilder(model, rng)
    zone_side = int(rng.choice([-1, 1]))
    builder.showcase()
    builder.lanes(closed_u=zone_side * LANES[-1][0])
    builder.construction_zone(zone_side)
    builder.bike_lanes()
    builder.roadside()
    builder.median_barriers()
    builder.buildings()
    return model
