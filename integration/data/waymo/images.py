"""Small camera images: the LiDAR points a camera sees, drawn over a sky / ground backdrop."""
import io

import numpy as np
from PIL import Image

SKY, GROUND = (150, 185, 225), (90, 90, 85)


def render_jpeg(camera, uv, depth):
    """JPEG bytes of ``camera``'s image with points at pixels ``uv`` (N, 2) shaded by ``depth`` (N,)."""
    image = np.empty((camera.height, camera.width, 3), dtype=np.uint8)
    image[:camera.height // 2] = SKY
    image[camera.height // 2:] = GROUND
    order = np.argsort(-depth)  # far first, so near points stay on top
    u = uv[order, 0].astype(np.int64)
    v = uv[order, 1].astype(np.int64)
    shade = np.clip(255.0 * (1.0 - depth[order] / 80.0), 40.0, 255.0).astype(np.uint8)
    image[v, u] = np.stack([shade, shade // 2, 255 - shade], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=85)
    return buffer.getvalue()
