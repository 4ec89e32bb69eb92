"""Piecewise-affine image warping: a triangle mesh moved from source to destination points.

The whole destination region is resampled in one `cv2.remap` (bicubic), so however the mesh moves,
each pixel is interpolated once: no stacked blur.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay


def triangulate(points: np.ndarray) -> np.ndarray:
    return Delaunay(points).simplices.astype(np.int32)


def _affines(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Per triangle, the 2x3 affine taking destination coordinates to source coordinates.

    Closed form on 2x2 edge matrices: a batched LAPACK solve of hundreds of 3x3 systems costs more
    in BLAS thread start-up than in arithmetic."""
    d0, s0 = dst[triangles[:, 0]], src[triangles[:, 0]]
    d1, d2 = dst[triangles[:, 1]] - d0, dst[triangles[:, 2]] - d0
    s1, s2 = src[triangles[:, 1]] - s0, src[triangles[:, 2]] - s0
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)  # collapsed in the destination: never rasterised
    # Inverse of the destination edge matrix [d1 d2] (columns), then M = [s1 s2] @ inverse.
    inv = np.stack([np.stack([d2[:, 1], -d2[:, 0]], -1), np.stack([-d1[:, 1], d1[:, 0]], -1)], 1) / det[:, None, None]
    edges = np.stack([s1, s2], axis=2)  # (T, 2, 2): columns s1, s2
    linear = edges @ inv
    offset = s0 - np.einsum("tij,tj->ti", linear, d0)
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def affine_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling maps for box (x0, y0, x1, y1) of the destination such that src points land on
    dst points; outside the mesh the maps are the identity. Returns (map_x, map_y, covered)."""
    x0, y0, x1, y1 = box
    ids = np.full((y1 - y0, x1 - x0), len(triangles), np.int32)  # the last row: identity
    local = dst - (x0, y0)
    corners = np.round(local * 16).astype(np.int32)[triangles]  # (T, 3, 2), 4 fractional bits
    fill = cv2.fillConvexPoly
    for t in range(len(triangles)):
        fill(ids, corners[t], t, cv2.LINE_8, 4)
    # Per triangle, map_x = a x + b y + c and map_y = d x + e y + f in box coordinates.
    coefficients = np.empty((len(triangles) + 1, 6), np.float32)
    coefficients[:-1] = _affines(src.astype(np.float64), local.astype(np.float64), triangles).reshape(-1, 6)
    coefficients[-1] = (1, 0, x0, 0, 1, y0)
    per_pixel = np.take(coefficients, ids, axis=0)  # much faster than fancy indexing
    xs = np.arange(x1 - x0, dtype=np.float32)[None, :]
    ys = np.arange(y1 - y0, dtype=np.float32)[:, None]
    map_x = per_pixel[..., 0] * xs + per_pixel[..., 1] * ys + per_pixel[..., 2]
    map_y = per_pixel[..., 3] * xs + per_pixel[..., 4] * ys + per_pixel[..., 5]
    return map_x, map_y, ids < len(triangles)


def remap(source: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
          sharp: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Sample `source` through the maps: bicubic, or, given a `sharp` box (x0, y0, x1, y1) of
    the maps, bicubic inside it and bilinear around it (bicubic costs six times as much and
    only shows where there is fine detail that moves, such as lips and teeth)."""
    if sharp is None:
        return cv2.remap(source, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    out = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    x0, y0, x1, y1 = sharp
    out[y0:y1, x0:x1] = cv2.remap(source, map_x[y0:y1, x0:x1], map_y[y0:y1, x0:x1], cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REFLECT101)
    return out


def warp_region(source: np.ndarray, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp `source` through the mesh within box of the destination: (warped box, covered mask)."""
    map_x, map_y, covered = affine_maps(src, dst, triangles, box)
    return remap(source, map_x, map_y), covered


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """Anti-aliased float mask of a polygon (optionally feathered by a Gaussian of that sigma)."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    mask = mask.astype(np.float32) / 255.0
    return cv2.GaussianBlur(mask, (0, 0), feather) if feather > 0 else mask
