"""A still portrait as a template: a video of any length with subtle idle life (a slow head sway
and natural blinks), so that the presenter does not look frozen."""
from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from . import landmarks as lm
from .warp import triangulate, warp_region

BLINK_SECONDS = 0.22
EYES = [
    (lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER, (33, 133)),
    (lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER, (263, 362)),
]


SWAY_DEGREES = (0.7, 0.35)  # amplitudes of the two rotations about the neck
SWAY_DRIFT = (0.004, 0.003)  # amplitudes of the drift, as shares of the frame's width and height


def _sway(t: float, size: tuple[int, int], pivot: np.ndarray) -> np.ndarray:
    """2x3 similarity: a rotation of about a degree at most about the neck plus a drift of a few
    pixels, from incommensurate sines so that it never visibly repeats."""
    width, height = size
    angle = SWAY_DEGREES[0] * np.sin(2 * np.pi * t / 5.3) + SWAY_DEGREES[1] * np.sin(2 * np.pi * t / 3.1 + 1.0)
    matrix = cv2.getRotationMatrix2D((float(pivot[0]), float(pivot[1])), angle, 1.0)
    matrix[0, 2] += SWAY_DRIFT[0] * width * np.sin(2 * np.pi * t / 6.7)
    matrix[1, 2] += SWAY_DRIFT[1] * height * np.sin(2 * np.pi * t / 4.3 + 0.5)
    return matrix


def _sway_reach(points: np.ndarray, pivot: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The farthest (x, y) any of `points` moves under the sway."""
    turn = np.radians(sum(SWAY_DEGREES)) * float(np.linalg.norm(points - pivot, axis=1).max())
    return turn + np.array(SWAY_DRIFT) * size


def blink_times(duration: float, seed: int = 7) -> np.ndarray:
    """Blink onsets every 2.5-5.5 s, as people blink when they speak."""
    rng = np.random.default_rng(seed)
    times, t = [], 1.2
    while t < duration:
        times.append(t)
        t += rng.uniform(2.5, 5.5)
    return np.array(times)


def _closure(t: float, onsets: np.ndarray) -> float:
    since = t - onsets
    since = since[(since >= 0) & (since < BLINK_SECONDS)]
    return float(np.sin(np.pi * since[0] / BLINK_SECONDS)) if len(since) else 0.0


def _blink(image: np.ndarray, points: np.ndarray, closure: float) -> np.ndarray:
    """Lower each upper eyelid towards the lower one by `closure` (0 open .. 1 shut)."""
    out = image
    for upper, lower, corners in EYES:
        lid, bottom = points[upper], points[lower]
        centre = (lid.mean(axis=0) + bottom.mean(axis=0)) / 2
        eye = np.concatenate([points[list(corners)], lid, bottom])
        fence = centre + (eye - centre) * 2.2
        src = np.concatenate([eye, fence, centre[None]])
        dst = src.copy()
        dst[2:2 + len(upper)] += 0.92 * closure * (bottom - lid)
        dst[2 + len(upper):2 + 2 * len(upper)] += 0.08 * closure * (lid - bottom)
        box_min = np.maximum(np.floor(fence.min(axis=0)).astype(int) - 1, 0)
        box_max = np.minimum(np.ceil(fence.max(axis=0)).astype(int) + 1, (image.shape[1], image.shape[0]))
        box = (*box_min, *box_max)
        warped, covered = warp_region(out, src, dst, triangulate(src), box)
        out = out.copy() if out is image else out
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1][covered] = warped[covered]
    return out


def _neck(points: np.ndarray) -> np.ndarray:
    """The point the head sways about."""
    chin = points[152]
    return chin + (chin - points[lm.NOSE_TIP]) * 0.8


def _face_box(points: np.ndarray, pivot: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where the face can be in any frame: its landmarks with a quarter of its size around them
    (hair, ears) and the sway's reach."""
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.25 * (high - low) + _sway_reach(points, pivot, size)
    x0, y0 = np.maximum(np.floor(low - margin).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(high + margin).astype(int), size)
    return int(x0), int(y0), int(x1), int(y1)


def _swayed(image: np.ndarray, matrix: np.ndarray, face: tuple[int, int, int, int]) -> np.ndarray:
    """The image moved by `matrix`: bicubic over the face, where the eye looks for detail, and
    bilinear around it (a quarter of the cost; a whole 720p frame bicubic took longer than
    rendering its mouth)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = face
    frame = np.empty_like(image)
    around = [(0, 0, width, y0), (0, y1, width, height), (0, y0, x0, y1), (x1, y0, width, y1)]
    for (left, top, right, bottom), flags in [*((box, cv2.INTER_LINEAR) for box in around), (face, cv2.INTER_CUBIC)]:
        if right > left and bottom > top:
            shifted = matrix - np.array([[0, 0, left], [0, 0, top]], matrix.dtype)
            frame[top:bottom, left:right] = cv2.warpAffine(image, shifted, (right - left, bottom - top), flags=flags,
                                                           borderMode=cv2.BORDER_REFLECT101)
    return frame


def idle_frames(image: np.ndarray, points: np.ndarray, fps: float, count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`count` frames of the portrait with sway and blinks, each with its moved landmarks."""
    height, width = image.shape[:2]
    pivot = _neck(points)
    onsets = blink_times(count / fps)
    face = _face_box(points, pivot, (width, height))
    for k in range(count):
        t = k / fps
        matrix = _sway(t, (width, height), pivot)
        frame = _swayed(image, matrix, face)
        moved = points @ matrix[:, :2].T + matrix[:, 2]
        closure = _closure(t, onsets)
        if closure > 0.02:
            frame = _blink(frame, moved, closure)
        yield frame, moved.astype(np.float32)
