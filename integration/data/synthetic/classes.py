"""Catalogue of the ten nuScenes detection classes as the generator models them.

Mean sizes are close to the nuScenes training-set averages (``[width, length, height]`` in
metres); ``reflectivity`` (0..1) drives the simulated return intensity.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectClass:
    name: str          # detection class name (nuScenes detection benchmark)
    category: str      # full nuScenes category name written to category.json
    size_wlh: tuple    # mean [width, length, height]
    size_jitter: float  # relative standard deviation of each dimension
    reflectivity: float


OBJECT_CLASSES = {c.name: c for c in (
    ObjectClass('car', 'vehicle.car', (1.95, 4.62, 1.73), 0.07, 0.45),
    ObjectClass('truck', 'vehicle.truck', (2.51, 6.93, 2.84), 0.12, 0.40),
    ObjectClass('bus', 'vehicle.bus.rigid', (2.94, 11.19, 3.47), 0.06, 0.40),
    ObjectClass('trailer', 'vehicle.trailer', (2.90, 12.29, 3.87), 0.08, 0.35),
    ObjectClass('construction_vehicle', 'vehicle.construction', (2.73, 6.37, 3.19), 0.10, 0.55),
    ObjectClass('pedestrian', 'human.pedestrian.adult', (0.67, 0.73, 1.77), 0.08, 0.20),
    ObjectClass('motorcycle', 'vehicle.motorcycle', (0.77, 2.11, 1.47), 0.08, 0.35),
    ObjectClass('bicycle', 'vehicle.bicycle', (0.60, 1.70, 1.28), 0.08, 0.30),
    ObjectClass('traffic_cone', 'movable_object.trafficcone', (0.41, 0.41, 1.07), 0.08, 0.85),
    ObjectClass('barrier', 'movable_object.barrier', (2.53, 0.50, 0.98), 0.05, 0.60),
)}

VEHICLES = ('car', 'truck', 'bus', 'trailer', 'construction_vehicle')
CYCLES = ('motorcycle', 'bicycle')

# nuScenes attribute names; every annotation of a class below carries exactly one of them.
ATTRIBUTES = ('vehicle.moving', 'vehicle.stopped', 'vehicle.parked', 'cycle.with_rider',
              'cycle.without_rider', 'pedestrian.moving', 'pedestrian.standing',
              'pedestrian.sitting_lying_down')


def attribute_for(name, speed, parked):
    """The one attribute nuScenes would give an object of class ``name`` in this state.

    ``parked`` marks objects placed off the travel lanes; cones and barriers get none.
    """
    moving = speed > 0.2
    if name in VEHICLES:
        return 'vehicle.moving' if moving else ('vehicle.parked' if parked else 'vehicle.stopped')
    if name in CYCLES:
        return 'cycle.without_rider' if parked else 'cycle.with_rider'
    if name == 'pedestrian':
        return 'pedestrian.moving' if moving else 'pedestrian.standing'
    return None
