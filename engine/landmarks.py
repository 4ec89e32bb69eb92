"""Named points of MediaPipe's 468-point face mesh, and the measures built on them."""
from __future__ import annotations

import numpy as np

RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # the subject's right eye is on the image's left
NOSE_TIP = 1
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
INNER_TOP, INNER_BOTTOM = 13, 14

OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
# Inner contour, upper and lower, paired column by column from corner to corner.
INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
INNER_RING = INNER_UPPER + INNER_LOWER[-2:0:-1]  # closed polygon, corner to corner and back
# The 20 mouth points lip-sync papers score (dlib 48-67: 12 outer, 8 inner).
MOUTH20 = [61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
           78, 81, 13, 311, 308, 402, 14, 178]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
JAW = FACE_OVAL[9:28]  # 323 (right side of image) round the chin to 93
RIGHT_EYE_UPPER = [246, 161, 160, 159, 158, 157, 173]
RIGHT_EYE_LOWER = [7, 163, 144, 145, 153, 154, 155]
LEFT_EYE_UPPER = [466, 388, 387, 386, 385, 384, 398]
LEFT_EYE_LOWER = [249, 390, 373, 374, 380, 381, 382]


def eye_distance(points: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance: the face's scale. Works on (..., 468, 2)."""
    return np.linalg.norm(points[..., LEFT_EYE_OUTER, :] - points[..., RIGHT_EYE_OUTER, :], axis=-1)


def mouth_width(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[..., MOUTH_LEFT, :] - points[..., MOUTH_RIGHT, :], axis=-1)


def aperture(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over mouth width: 0 closed, ~0.5 wide open."""
    gap = np.linalg.norm(points[..., INNER_BOTTOM, :] - points[..., INNER_TOP, :], axis=-1)
    return gap / np.maximum(mouth_width(points), 1e-6)


def face_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(origin at the mouth centre, unit x along the eye line, unit y towards the chin, scale)."""
    x_axis = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
    scale = float(np.linalg.norm(x_axis)) or 1.0
    x_axis = x_axis / scale
    y_axis = np.array([-x_axis[1], x_axis[0]])
    origin = (points[MOUTH_LEFT] + points[MOUTH_RIGHT]) / 2
    return origin, x_axis, y_axis, scale


def to_face(points: np.ndarray, axes) -> np.ndarray:
    """Image coordinates -> face coordinates (mouth centre at 0, eye distance 1, eyes level)."""
    origin, x_axis, y_axis, scale = axes
    d = points - origin
    return np.stack([d @ x_axis, d @ y_axis], axis=-1) / scale


def from_face(coords: np.ndarray, axes) -> np.ndarray:
    origin, x_axis, y_axis, scale = axes
    return origin + scale * (coords[..., :1] * x_axis + coords[..., 1:] * y_axis)


def normalized_mouth(points: np.ndarray) -> np.ndarray:
    """The 20 mouth points in face coordinates, for M-LMD."""
    return to_face(points[MOUTH20], face_axes(points))
