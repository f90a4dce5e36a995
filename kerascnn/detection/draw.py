"""Drawing boxes, class names and scores on an image (OpenCV), optionally saved as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from kerascnn.detection.boxes import check_boxes

_PALETTE = ((255, 80, 80), (80, 220, 80), (90, 140, 255), (240, 200, 40), (220, 80, 220), (60, 220, 220))


def draw_boxes(
    image: np.ndarray,
    boxes,
    classes,
    scores=None,
    class_names: Sequence[str] | None = None,
    scale: int = 1,
    path: str | Path | None = None,
) -> np.ndarray:
    """A copy of ``image`` with each box outlined and labelled.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(K, 4)`` corner boxes in pixels.
        classes: ``(K,)`` class ids (the colour and the label).
        scores: optional ``(K,)`` scores, written after the label.
        class_names: names of the class ids.
        scale: enlarge the image first by this factor (labels on small images are unreadable).
        path: optional PNG file to write.

    Returns:
        The annotated RGB image, ``(H * scale, W * scale, 3)``.
    """
    boxes = check_boxes(boxes) * scale
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else image.copy()
    for i, (box, c) in enumerate(zip(boxes, np.asarray(classes).reshape(-1))):
        colour = _PALETTE[int(c) % len(_PALETTE)]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
        text = class_names[int(c)] if class_names else str(int(c))
        if scores is not None:
            text += f" {float(np.asarray(scores).reshape(-1)[i]):.2f}"
        cv2.putText(out, text, (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    if path is not None:
        cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    return out
