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
    ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
    shifted = np.round((dst - (x0, y0)) * 16).astype(np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(ids, shifted[tri], t, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(ids >= 0)
    map_x, map_y = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    if len(ys):
        m = _affines(src.astype(np.float64), dst.astype(np.float64), triangles)[ids[ys, xs]]
        px, py = xs + x0, ys + y0
        map_x[ys, xs] = m[:, 0, 0] * px + m[:, 0, 1] * py + m[:, 0, 2]
        map_y[ys, xs] = m[:, 1, 0] * px + m[:, 1, 1] * py + m[:, 1, 2]
    return map_x, map_y, ids >= 0


def remap(source: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(source, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)


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
