"""Building blocks of the synthetic nuScenes-format LiDAR dataset.

``geometry`` (frames and boxes), ``classes`` (object catalogue), ``scene_model`` (road, ego
motion, actors), ``lidar_model`` (rotating multi-beam ray caster) and ``tables`` (nuScenes
JSON records). ``integration/data/nuscenes.py`` ties them together.
"""
