"""A synthetic detection dataset: coloured squares, circles and triangles on a dark background.

Each image holds one to ``max_shapes`` shapes of random class, colour, size and position,
drawn with OpenCV; shapes never overlap (placements that would are drawn again), so every box
is fully visible. Boxes are tight: ``x1, y1, x2, y2`` in pixels, ``x2``/``y2`` one past the
last pixel drawn.

Example:
    >>> data = make_shapes(100, image_size=64, seed=0)
    >>> data.images.shape, data.boxes[0], data.labels[0]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASS_NAMES = ("square", "circle", "triangle")


@dataclass(frozen=True)
class ShapesData:
    """Images and their boxes.

    Attributes:
        images: ``(N, size, size, 3)`` uint8 RGB.
        boxes: per image, ``(K, 4)`` float32 corner boxes in pixels.
        labels: per image, ``(K,)`` int64 class ids (see ``class_names``).
        class_names: name of each class id.
    """

    images: np.ndarray
    boxes: list
    labels: list
    class_names: tuple = CLASS_NAMES


def _draw(image: np.ndarray, label: int, x: int, y: int, side: int, colour: tuple) -> None:
    last = side - 1
    if label == 0:
        cv2.rectangle(image, (x, y), (x + last, y + last), colour, thickness=-1)
    elif label == 1:  # an odd diameter centres the circle on a pixel
        radius = last // 2
        cv2.circle(image, (x + radius, y + radius), radius, colour, thickness=-1)
    else:
        points = np.array([[x, y + last], [x + last, y + last], [x + last // 2, y]], np.int32)
        cv2.fillPoly(image, [points], colour)


def make_shapes(
    count: int,
    image_size: int = 64,
    max_shapes: int = 3,
    min_size: int = 14,
    max_size: int = 28,
    seed: int = 0,
) -> ShapesData:
    """Generate ``count`` images of shapes.

    Args:
        count: number of images.
        image_size: side of the square images.
        max_shapes: at most this many shapes per image (at least one).
        min_size: smallest box side in pixels.
        max_size: largest box side in pixels (odd sizes are used for circles).
        seed: random seed (the same seed gives the same images).

    Returns:
        A :class:`ShapesData`.

    Raises:
        ValueError: sizes that cannot fit (``min_size > max_size`` or ``max_size > image_size``).
    """
    if not 2 <= min_size <= max_size <= image_size:
        raise ValueError(f"need 2 <= min_size <= max_size <= image_size, got {min_size}, {max_size}, {image_size}")
    rng = np.random.default_rng(seed)
    images = np.empty((count, image_size, image_size, 3), np.uint8)
    all_boxes, all_labels = [], []
    for n in range(count):
        image = rng.integers(0, 40, size=(image_size, image_size, 3), dtype=np.uint8)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            for _attempt in range(20):
                label = int(rng.integers(0, len(CLASS_NAMES)))
                side = int(rng.integers(min_size, max_size + 1))
                if label == 1:
                    side -= 1 - side % 2  # circles: odd diameter
                x, y = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
                box = np.array([x, y, x + side, y + side], np.float32)
                if all(box[0] >= b[2] + 1 or b[0] >= box[2] + 1 or box[1] >= b[3] + 1 or b[1] >= box[3] + 1
                       for b in boxes):
                    colour = tuple(int(c) for c in rng.integers(90, 256, size=3))
                    _draw(image, label, x, y, side, colour)
                    boxes.append(box)
                    labels.append(label)
                    break
        images[n] = image
        all_boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.array(labels, np.int64))
    return ShapesData(images, all_boxes, all_labels)
