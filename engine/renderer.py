"""Mouth rendering: re-pose the template's own lower face to the narration's mouth shape.

Each frame keeps its own pixels. A triangle mesh over the lower face (MediaPipe's points below
the nose, fenced by fixed points beyond the jaw) is moved so that the lips part or close and the
chin follows the jaw, and the frame is resampled through it once. Nothing outside the fence moves,
so the seam is invisible and everything above the nose is untouched. Only the mouth's inside can
be new: the frame's own when it is open enough, else the speaker's real open mouth from elsewhere
in the template (Video Rewrite's idea, applied to the part a warp cannot create), else, for a
template whose mouth never opens, a synthesised cavity with teeth shaded to the face.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

from . import landmarks as lm
from .face import TemplateTrack
from .warp import affine_maps, polygon_mask, remap, triangulate, warp_region

# Work per frame is a few small regions while x264 keeps both cores busy: OpenCV's thread pool
# would only add hand-over cost.
cv2.setNumThreads(1)

# Share of a gap change taken by the lower lip and jaw; the upper lip takes the rest.
LOWER_SHARE = 0.78
FENCE_SCALE = 1.28  # jaw outline scaled about the mouth centre: where the mesh is pinned
UPPER_FADE = 0.28   # face units above the mouth over which upper-lip motion fades out
JAW_NARROWING = 0.06  # corners draw in as the jaw drops
MAX_WIDTH_CHANGE = 0.2  # a broad smile is narrowed, not undone
CREASE_SHADE = 0.7  # closed lips' crease against the lips' colour
# How far a closed mouth's crease (the dark line where the lips meet) reaches into each lip, as a
# share of the mouth's width: parted, each lip would carry its half along the opening as a rim.
CREASE_REACH = 0.07
WET_EDGE_SHADE = 0.8  # a lip's inner edge, turning into the mouth, against the lip's colour
# Full narration openness reaches this share of the widest opening the template shows (its 95th
# percentile), along a compressed curve: quiet syllables open the jaw nearly as far as loud ones,
# and the loudness envelope sits near its top through much of speech, a mouth does not.
# Cross-reconstruction M-LMD ratio (face_3 / face_2 / KatieHill), linear at gain 0.8: 0.69/0.74/0.82;
# curve 0.6 at gain 0.7: 0.69/0.72/0.81; 0.5 at 0.7: 0.68/0.74/0.81; 0.6 at 0.6: 0.70/0.74/0.81
# (measured keeping a quarter of each frame's own shape, with the earlier 250-2500 Hz band).
OPENING_GAIN = 0.7
OPENING_CURVE = 0.6
# A frame that already shows its teeth is stretched to a wider opening rather than given another
# frame's inside: MediaPipe's inner lip line sits on the teeth of an open mouth, so a pasted
# inside leaves a second row of teeth and a rim between the two.
OWN_INSIDE_SHOWS = 0.06
FENCE_MARGIN = 0.12  # face units inside the fence over which motion fades to nothing
INNER_PAIRS = list(zip(lm.INNER_UPPER[1:-1], lm.INNER_LOWER[1:-1]))
# Closed lips' inner lines, at least this far apart (face units): the tracker can cross them on a
# closed mouth, which would part the lips inside out.
CLOSED_GAP = 0.004
CORNERS = [lm.MOUTH_RIGHT, lm.MOUTH_LEFT, 78, 308]


def _lip_points(face: np.ndarray, outer: list[int], inner: list[int]) -> np.ndarray:
    """Mesh points on one lip: its contours and the rows between them."""
    polygon = face[outer + inner[::-1]].astype(np.float32)
    on_lip = [i for i in range(468) if cv2.pointPolygonTest(polygon, tuple(map(float, face[i])), True) > -1e-3]
    return np.array(sorted(set(on_lip) - set(CORNERS)), np.int32)


@dataclass(frozen=True)
class MouthTarget:
    aperture: float  # inner gap / mouth width
    width: float     # mouth width / outer-eye-corner distance


def _uncrossed(face: np.ndarray) -> np.ndarray:
    """Face-coordinate points with the inner lip lines no closer than CLOSED_GAP: where the
    tracker put the lower lip's inner edge above the upper's (closed lips, a faint painted
    mouth), both meet in the middle instead."""
    face = face.copy()
    for top, bottom in INNER_PAIRS:
        if face[bottom, 1] - face[top, 1] < CLOSED_GAP:
            middle = (face[bottom, 1] + face[top, 1]) / 2
            face[top, 1], face[bottom, 1] = middle - CLOSED_GAP / 2, middle + CLOSED_GAP / 2
    return face


def _fence(points: np.ndarray, axes) -> np.ndarray:
    """Fixed points around the lower face, in image coordinates: the jaw outline pushed outwards,
    closed by a line just under the nose tip."""
    origin = axes[0]
    jaw = origin + (points[lm.JAW] - origin) * FENCE_SCALE
    face = lm.to_face(jaw, axes)
    top = lm.to_face(points[lm.NOSE_TIP][None], axes)[0, 1] + 0.04
    face[:, 1] = np.maximum(face[:, 1], top)
    line = np.stack([np.linspace(face[-1, 0], face[0, 0], 7)[1:-1], np.full(5, top)], axis=1)
    return lm.from_face(np.concatenate([face, line]), axes)


def _inside_depth(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance of each point from the polygon's outline, negative outside."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    edge = b - a
    rel = points[:, None, :] - a[None]
    t = np.clip((rel * edge).sum(-1) / np.maximum((edge * edge).sum(-1), 1e-12), 0, 1)
    distance = np.linalg.norm(rel - t[..., None] * edge, axis=-1).min(axis=1)
    # Even-odd rule: a ray to the right crosses the outline an odd number of times from inside.
    y, x = points[:, 1:2], points[:, 0:1]
    straddles = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    cross_x = a[None, :, 0] + (y - a[None, :, 1]) * edge[None, :, 0] / np.where(edge[None, :, 1] == 0, 1e-12, edge[None, :, 1])
    inside = (straddles & (x < cross_x)).sum(axis=1) % 2 == 1
    return np.where(inside, distance, -distance)


def _around(region: np.ndarray, polygon: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The part of `region` around a polygon (a view) and the polygon in its coordinates."""
    height, width = region.shape[:2]
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + margin + 1, (width, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return region[y0:y1, x0:x1], polygon - (x0, y0)


def _lip_middle(face: np.ndarray) -> float:
    """Where the lips' middle (the philtrum's column) is across the face: off the corners'
    midpoint when the head is turned, since the lips stand out in front of the corners."""
    return float(face[lm.INNER_TOP, 0] + face[lm.INNER_BOTTOM, 0]) / 2


def _across(face: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Position across the mouth: -1 and 1 at the corners, 0 at the lips' middle."""
    middle = _lip_middle(face)
    right, left = float(face[lm.MOUTH_RIGHT, 0]), float(face[lm.MOUTH_LEFT, 0])
    return np.where(u < middle, (u - middle) / max(middle - right, 1e-3), (u - middle) / max(left - middle, 1e-3))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class MouthRenderer:
    """Renders one template's frames to the mouth shapes it is given."""

    def __init__(self, track: TemplateTrack):
        self.track = track
        valid = track.points[track.has_face]
        self.closed, self.widest = track.opening_range()
        # The mouth's width is set from the narration around this person's usual width, not
        # scaled from each frame's: a template's own widening and narrowing is unrelated to the
        # new words (cross-reconstruction M-LMD on face_3 0.835 -> 0.76 in a landmark simulation).
        self.neutral_width = float(np.median(lm.mouth_width(valid) / lm.eye_distance(valid)))
        # This person's usual lower face (face coordinates), to which each frame is partly pulled.
        sample = valid[:: max(1, len(valid) // 300)]
        self.usual_face = _uncrossed(np.median([lm.to_face(p, lm.face_axes(p)) for p in sample], axis=0))
        reference = valid[len(valid) // 2]
        axes = lm.face_axes(reference)
        face = _uncrossed(lm.to_face(reference, axes))
        fence_poly = lm.to_face(_fence(reference, axes), axes).astype(np.float32)
        inside = [i for i in range(468)
                  if cv2.pointPolygonTest(fence_poly, tuple(map(float, face[i])), False) > 0]
        self.moving = np.array(inside, np.int32)
        self.upper_lip = _lip_points(face, lm.OUTER_UPPER, lm.INNER_UPPER)
        self.lower_lip = _lip_points(face, lm.OUTER_LOWER, lm.INNER_LOWER)
        self.inner_local = np.array([inside.index(i) for i in lm.INNER_RING], np.int32)
        self.outer_local = np.array([inside.index(i) for i in lm.OUTER_UPPER + lm.OUTER_LOWER[-2:0:-1]], np.int32)
        self.upper_local = np.array([inside.index(i) for i in lm.INNER_UPPER[1:-1]], np.int32)
        self.lower_local = np.array([inside.index(i) for i in lm.INNER_LOWER[1:-1]], np.int32)
        self.fan = np.array([(i, (i + 1) % len(lm.INNER_RING), len(lm.INNER_RING))
                             for i in range(len(lm.INNER_RING))], np.int32)

    def _mesh(self, dst: np.ndarray, down: np.ndarray) -> np.ndarray:
        """Triangles over the destination points, the mouth's inside first so that the lips,
        painted after, own the pixels along a closed lip line."""
        layout = dst.copy()
        # Part the lips by a pixel for the topology alone: a closed mouth must not get triangles
        # that bridge the lips and sample the source's open mouth.
        layout[self.upper_local] -= down
        layout[self.lower_local] += down
        triangles = triangulate(layout)
        inner = np.zeros(len(dst), bool)
        inner[self.inner_local] = True
        inside = inner[triangles].all(axis=1)
        return np.concatenate([triangles[inside], triangles[~inside]])

    def target(self, openness: float) -> MouthTarget:
        aperture = self.closed + OPENING_GAIN * openness ** OPENING_CURVE * (self.widest - self.closed)
        return MouthTarget(aperture, self.neutral_width * (1.0 - JAW_NARROWING * openness))

    def _displace(self, face: np.ndarray, width_change: float, gap_profile: np.ndarray) -> np.ndarray:
        """Move face-coordinate points: the lips part by `gap_profile` (the change of gap per lip
        column, face units) and the mouth widens by `width_change` (ratio)."""
        u, v = face[:, 0], face[:, 1]
        half = max(float(abs(face[lm.MOUTH_LEFT, 0] - face[lm.MOUTH_RIGHT, 0])) / 2, 1e-3)
        pair_u = np.array([(face[a, 0] + face[b, 0]) / 2 for a, b in INNER_PAIRS])
        order = np.argsort(pair_u)
        right, left = float(face[lm.MOUTH_RIGHT, 0]), float(face[lm.MOUTH_LEFT, 0])
        column_u = np.concatenate([[right - 0.05 * half], pair_u[order], [left + 0.05 * half]])
        column_gap = np.concatenate([[0.0], gap_profile[order], [0.0]])
        gap_at = np.interp(u, column_u, column_gap)
        centre_gap = float(np.interp(_lip_middle(face), column_u, column_gap))
        beyond = np.clip((np.abs(_across(face, u)) - 1) / 1.6, 0.0, 1.0)
        side = 1.0 - beyond  # jaw and cheeks move less away from the mouth
        pair_mid = np.array([(face[a, 1] + face[b, 1]) / 2 for a, b in INNER_PAIRS])[order]
        corner_v = (face[lm.MOUTH_LEFT, 1] + face[lm.MOUTH_RIGHT, 1]) / 2
        lip_line = np.interp(u, column_u, np.concatenate([[corner_v], pair_mid, [corner_v]]))
        chin_v = max(float(face[17, 1]) - float(lip_line[17]), 1e-3)
        below = v - lip_line
        dv = np.where(below > 0, LOWER_SHARE * centre_gap * side * np.clip(below / chin_v, 0, 1),
                      -(1 - LOWER_SHARE) * centre_gap * side * np.clip(1 + below / UPPER_FADE, 0, 1))
        dv[self.lower_lip] = LOWER_SHARE * gap_at[self.lower_lip]
        dv[self.upper_lip] = -(1 - LOWER_SHARE) * gap_at[self.upper_lip]
        dv[CORNERS] = 0.1 * LOWER_SHARE * centre_gap
        du = width_change * u * np.exp(-(np.maximum(np.abs(u) - half, 0) / half) ** 2) * np.clip(1 - np.abs(v) / 0.3, 0, 1)
        return face + np.stack([du, dv], axis=1)

    def _gap_profile(self, face: np.ndarray, target: MouthTarget, current: float) -> np.ndarray:
        """Target gap per lip column: the frame's own opening shape scaled, or a rounded profile
        where the frame's mouth is (nearly) shut and has no shape to scale."""
        width = abs(face[lm.MOUTH_LEFT, 0] - face[lm.MOUTH_RIGHT, 0])
        gaps = np.array([face[b, 1] - face[a, 1] for a, b in INNER_PAIRS])
        pair_u = np.array([(face[a, 0] + face[b, 0]) / 2 for a, b in INNER_PAIRS])
        rounded = np.cos(np.clip(_across(face, pair_u), -1, 1) * np.pi / 2) ** 0.7
        own = np.clip(gaps / max(gaps[len(gaps) // 2], 1e-6), 0.0, 1.3)
        # A nearly shut target closes evenly to the corners whatever shape the frame had.
        trust = float(np.clip((current - 0.03) / 0.06, 0.0, 1.0) * np.clip((target.aperture - 0.04) / 0.06, 0.0, 1.0))
        shape = trust * own + (1 - trust) * rounded
        return target.aperture * width * shape - gaps

    def destination(self, points: np.ndarray, target: MouthTarget) -> tuple[np.ndarray, np.ndarray]:
        """Where the frame's moving points go for `target`, and the fixed fence around them
        (image coordinates)."""
        axes = lm.face_axes(points)
        face = lm.to_face(points, axes)
        # The template's own mouth shape in this frame (a smile, a pout, a lopsided word) belongs to
        # other words: the new opening is set on this person's usual lower face instead (cross-
        # reconstruction M-LMD ratio, face_3 / face_2 / KatieHill, keeping a quarter of the frame's
        # own shape: 0.69/0.72/0.81; a tenth: 0.68/0.74/0.81; none: 0.68/0.71/0.80).
        shaped = face.copy()
        shaped[self.moving] = self.usual_face[self.moving]
        own_width = float(abs(shaped[lm.MOUTH_LEFT, 0] - shaped[lm.MOUTH_RIGHT, 0]))
        current = float(np.linalg.norm(shaped[lm.INNER_BOTTOM] - shaped[lm.INNER_TOP])) / max(own_width, 1e-6)
        width_scale = float(np.clip(target.width / own_width, 1 - MAX_WIDTH_CHANGE, 1 + MAX_WIDTH_CHANGE))
        # Aperture is relative to width: the gap must grow with the new width.
        scaled = MouthTarget(target.aperture * width_scale, target.width)
        moved = self._displace(shaped, width_scale - 1.0, self._gap_profile(shaped, scaled, current))
        fence = _fence(points, axes)
        # Motion dies out before the fence, whatever this frame's expression: a broad smile lifts
        # cheek points towards the nose line, and motion there would show as a seam.
        fade = _inside_depth(face[self.moving], lm.to_face(fence, axes)) / FENCE_MARGIN
        moved[self.moving] = face[self.moving] + (moved[self.moving] - face[self.moving]) * _smoothstep(fade)[:, None]
        return lm.from_face(moved[self.moving], axes), fence

    def render(self, image: np.ndarray, points: np.ndarray, target: MouthTarget) -> np.ndarray:
        """The frame with its mouth re-posed to `target` (in place)."""
        axes = lm.face_axes(points)
        moved, fence = self.destination(points, target)
        src = np.concatenate([points[self.moving], fence])
        dst = np.concatenate([moved, fence])
        height, width = image.shape[:2]
        x0, y0 = np.maximum(np.floor(fence.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(fence.max(axis=0)).astype(int) + 2, (width, height))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return image
        box = (int(x0), int(y0), int(x1), int(y1))
        map_x, map_y, covered = affine_maps(src, dst, self._mesh(dst, axes[2]), box)
        self._smooth_outside_lips(map_x, map_y, dst - (x0, y0), axes[3], (x0, y0))
        lips = np.concatenate([src[self.outer_local], dst[self.outer_local]]) - (x0, y0)
        margin = 0.25 * float(lm.mouth_width(points))
        lx0, ly0 = np.maximum(np.floor(lips.min(axis=0) - margin).astype(int), 0)
        lx1, ly1 = np.ceil(lips.max(axis=0) + margin).astype(int)
        warped = remap(image, map_x, map_y, sharp=(int(lx0), int(ly0), int(lx1), int(ly1)))
        out = image  # frames are the renderer's own: re-posed in place
        region = out[y0:y1, x0:x1]
        np.copyto(region, warped, where=covered[..., None])
        inner = dst[self.inner_local] - (x0, y0)
        new_gap = float(np.linalg.norm(inner[5] - inner[len(lm.INNER_UPPER) + 4]))  # 13 vs 14
        own = float(lm.aperture(points))  # the opening the frame's pixels show
        if new_gap > 0.6 and own < min(0.6 * target.aperture, OWN_INSIDE_SHOWS):
            lift_crease(region, inner, dst[self.outer_local] - (x0, y0), float(lm.mouth_width(points)))
            self._fill_interior(region, inner, target, float(lm.mouth_width(points)))
        elif new_gap < 1.5 and own > 0.05:
            self._seal_lips(region, inner)
        return out

    @staticmethod
    def _seal_lips(region: np.ndarray, inner: np.ndarray) -> None:
        """A mouth closed from open leaves the squeezed remains of its inside between the lips
        (a jagged dark line with glints of teeth). Real closed lips meet in a soft, even crease:
        paint that, in the lips' own colour darkened."""
        found = _around(region, inner, 3)
        if found is None:
            return
        mouth, line = found
        crease = np.zeros(mouth.shape[:2], np.uint8)
        cv2.polylines(crease, [np.round(line * 16).astype(np.int32)], True, 255, 2, cv2.LINE_AA, 4)
        cv2.fillPoly(crease, [np.round(line * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        lips = cv2.dilate(crease, np.ones((5, 5), np.uint8)) & ~cv2.dilate(crease, np.ones((3, 3), np.uint8))
        if not lips.any():
            return
        colour = np.median(mouth[lips > 0], axis=0) * CREASE_SHADE
        alpha = (cv2.GaussianBlur(crease, (0, 0), 0.6).astype(np.float32) / 255.0)[..., None]
        mouth[:] = (mouth * (1 - alpha) + colour * alpha).astype(np.uint8)

    def _smooth_outside_lips(self, map_x: np.ndarray, map_y: np.ndarray, dst: np.ndarray, scale: float,
                             origin: tuple[int, int]) -> None:
        """Blur the displacement field away from the lips: a piecewise-affine field kinks at
        triangle edges, which shows as a saw-tooth on strong edges such as the chin's outline.
        The lips keep the exact field, so their outline stays crisp."""
        height, width = map_x.shape
        grid_x = np.arange(origin[0], origin[0] + width, dtype=np.float32)[None, :]
        grid_y = np.arange(origin[1], origin[1] + height, dtype=np.float32)[:, None]
        sigma = max(1.0, 0.035 * scale)
        # The field and the blend weight are smooth, so they are made at a lower resolution:
        # the cost stays the same from 360p to 4K.
        step = max(1, int(sigma / 2))
        size = (max(1, width // step), max(1, height // step))
        field = cv2.resize(cv2.merge([map_x - grid_x, map_y - grid_y]), size, interpolation=cv2.INTER_AREA)
        field = cv2.GaussianBlur(field, (0, 0), sigma / step)
        lips = np.zeros(size[::-1], np.uint8)
        cv2.fillPoly(lips, [np.round(dst[self.outer_local] / step * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        radius = max(1, int(round(sigma / step)))
        lips = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
        lips = cv2.GaussianBlur(lips, (0, 0), 0.7 * sigma / step).astype(np.float32) / 255.0
        # The blurred field is faded out towards the fence, so that no motion leaks across it.
        # (A zero border: beyond the box counts as outside.)
        inside = np.zeros((size[1] + 2, size[0] + 2), np.uint8)
        cv2.fillPoly(inside, [np.round((dst[len(self.moving):] / step + 1) * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
        depth = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[1:-1, 1:-1]
        field *= np.clip(depth / (2 * sigma / step), 0, 1)[..., None]
        dx, dy, lips = cv2.split(cv2.resize(cv2.merge([field, lips]), (width, height), interpolation=cv2.INTER_LINEAR))
        map_x[:] = lips * map_x + (1 - lips) * (grid_x + dx)
        map_y[:] = lips * map_y + (1 - lips) * (grid_y + dy)

    def _fill_interior(self, region: np.ndarray, inner: np.ndarray, target: MouthTarget, mouth_px: float) -> None:
        """Paint the opening's inside: a real open mouth of this speaker when the template has one
        wide enough, else a synthesised one."""
        # The box reaches past the opening to see the lips around it; only the opening is painted.
        found = _around(region, inner, max(2, int(0.06 * mouth_px)))
        if found is None:
            return
        mouth, inner = found
        upper, lower = lip_lines(inner)
        samples = [s for s in self.track.library if s.aperture >= 0.55 * target.aperture]
        if samples:
            sample = min(samples, key=lambda s: abs(np.log(s.aperture / max(target.aperture, 1e-3))))
            src = np.concatenate([sample.inner, sample.inner.mean(axis=0, keepdims=True)])
            dst = np.concatenate([inner, inner.mean(axis=0, keepdims=True)])
            inside, _ = warp_region(sample.image, src, dst, self.fan, (0, 0, mouth.shape[1], mouth.shape[0]))
        else:
            inside = synthesize_interior(mouth.shape[:2], upper, lower, mouth_px, *lip_colour(mouth, inner, mouth_px))
        # The lips roll inwards: their edge fades into the inside over a width that grows with the mouth.
        outline = np.concatenate([upper, lower[-2:0:-1]])
        alpha = polygon_mask(mouth.shape[:2], outline, feather=0.6)[..., None]
        mouth[:] = (mouth * (1 - alpha) + inside * alpha).astype(np.uint8)


def lip_lines(inner: np.ndarray, per_segment: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The inner edges of the upper and lower lip, corner to corner, as smooth curves through the
    landmarks: straight segments between 11 points show as kinks on a large mouth. The corners
    stay sharp, as a mouth's are."""
    n_upper = len(lm.INNER_UPPER)
    lines = []
    for points in (inner[:n_upper], np.concatenate([inner[:1], inner[n_upper:][::-1], inner[n_upper - 1:n_upper]])):
        steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
        keep = np.concatenate([[True], steps > 1e-3])  # a spline needs increasing knots
        points = points[keep]
        if len(points) < 3:
            lines.append(points)
            continue
        knots = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        dense = np.linspace(0.0, knots[-1], per_segment * (len(points) - 1) + 1)
        lines.append(CubicSpline(knots, points, bc_type="natural")(dense).astype(np.float32))
    return lines[0], lines[1]


def lift_crease(region: np.ndarray, inner: np.ndarray, outer: np.ndarray, mouth_px: float) -> None:
    """Parting a closed mouth splits the crease between its lips into a dark rim along both sides
    of the opening. Each lip gets its own colour back there, continued from just beyond the
    crease's reach, darkening slightly towards the opening as a lip's wet inner side does. Only
    what is darker than that is lifted: a lip's highlights stay."""
    reach = max(1.5, CREASE_REACH * mouth_px)
    found = _around(region, outer, int(reach) + 2)
    if found is None:
        return
    mouth, placed = found
    inner, outer = inner - (outer - placed)[0], placed
    shape = mouth.shape[:2]
    opening = polygon_mask(shape, inner) > 0.5
    lips = polygon_mask(shape, outer, feather=0.5) * ~opening
    distance = cv2.distanceTransform((~opening).astype(np.uint8), cv2.DIST_L2, 3)
    beyond = ((lips > 0.5) & (distance > reach) & (distance < 3 * reach)).astype(np.float32)
    if beyond.sum() < 4:
        return
    image = mouth.astype(np.float32)
    sigma = 1.5 * reach
    weight = cv2.GaussianBlur(beyond, (0, 0), sigma)[..., None]
    fallback = np.median(image[beyond > 0], axis=0)
    colour = (cv2.GaussianBlur(image * beyond[..., None], (0, 0), sigma) + 1e-3 * fallback) / (weight + 1e-3)
    target = colour * (WET_EDGE_SHADE + (1 - WET_EDGE_SHADE) * np.clip(distance / reach, 0, 1))[..., None]
    # Only the crease's darkness is lifted: the lips' pixel-fine texture (their grain) stays.
    local = cv2.GaussianBlur(image, (0, 0), 1.0)
    luma = np.array([0.114, 0.587, 0.299], np.float32)
    darker = np.clip((target @ luma - local @ luma) / (0.15 * (target @ luma) + 1.0), 0, 1)
    alpha = (lips * darker * _smoothstep(1.5 - distance / reach))[..., None]
    mouth[:] = np.clip(image + alpha * (target - local), 0, 255).astype(np.uint8)


def lip_colour(mouth: np.ndarray, inner: np.ndarray, mouth_px: float) -> tuple[np.ndarray, float]:
    """The person's own lip colour (BGR), the median of a thin ring just outside the opening, and
    the picture's grain there (the spread of its fine detail, in grey levels)."""
    reach = max(2, int(round(0.05 * mouth_px)))
    opening = np.zeros(mouth.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(inner).astype(np.int32)], 255)
    ring = cv2.dilate(opening, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))) > opening
    if not ring.any():
        return np.median(mouth.reshape(-1, 3), axis=0).astype(np.float32), 0.0
    grey = cv2.cvtColor(mouth, cv2.COLOR_BGR2GRAY).astype(np.float32)
    detail = (grey - cv2.GaussianBlur(grey, (0, 0), 1.0))[ring]
    # Robust spread (median absolute deviation): the lips' own edges are detail, not grain.
    grain = 1.4826 * float(np.median(np.abs(detail - np.median(detail))))
    return np.median(mouth[ring], axis=0).astype(np.float32), grain


def synthesize_interior(shape: tuple[int, int], upper: np.ndarray, lower: np.ndarray, mouth_px: float,
                        lips: np.ndarray, grain: float = 0.0) -> np.ndarray:
    """A mouth's inside for a speaker never seen with an open mouth: a dark cavity, the upper
    teeth hanging from the upper lip (brightest at the incisors, fading into shadow towards the
    corners), lower teeth and tongue once the jaw is well open.

    Every colour comes from the person's own lips (`lips`, BGR): the cavity and tongue are the
    lips darkened, the teeth the lips' brightness raised with a trace of their hue. A grey
    picture therefore stays grey, a warm one stays in its own palette. Shapes have soft edges in
    proportion to the mouth's size, and the picture's own `grain` is laid over them, so that the
    inside is as sharp and as noisy as the photograph around it."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    left, right = float(upper[0, 0]), float(upper[-1, 0])
    centre, half = (left + right) / 2, max(abs(right - left) / 2, 1.0)
    order = np.argsort(upper[:, 0])
    top = np.interp(xs, upper[order, 0], upper[order, 1])  # upper lip edge above each column
    order = np.argsort(lower[:, 0])
    bottom = np.interp(xs, lower[order, 0], lower[order, 1])
    gap = np.maximum(bottom - top, 1e-3)
    u = (xs - centre) / half  # -1 .. 1 from corner to corner
    across = np.abs(u)
    soft = max(0.6, 0.012 * mouth_px)  # edge width of the shapes, in pixels
    lips = np.asarray(lips, np.float32)
    brightness = float(lips @ np.array([0.114, 0.587, 0.299], np.float32))
    grey = np.full(3, brightness, np.float32)
    # The cavity: darkest in the corners, where the cheeks shade it, lighter towards the middle.
    out = lips[None, None, :] * (0.2 + 0.22 * np.clip(1 - across ** 2, 0, 1))[..., None]
    centre_gap = float(gap[int(np.clip(np.mean(upper[:, 1]), 0, height - 1)), int(np.clip(centre, 0, width - 1))])
    if centre_gap > 0.1 * mouth_px:  # the tongue, resting low, shows once the jaw is open
        tongue = np.clip(1 - (u / 0.65) ** 2 - ((bottom - ys) / (0.45 * gap)) ** 2, 0, 1)
        tongue *= np.clip((centre_gap / mouth_px - 0.1) / 0.1, 0, 1)
        out = out * (1 - tongue[..., None]) + 0.55 * lips * tongue[..., None]
    # Teeth: brighter than the lips (almost half way to white), keeping half of the lips' hue
    # (ivory in a warm picture), so that they sit in the picture's light and colour.
    enamel_level = np.clip(brightness + 0.45 * (255 - brightness), 0, 235)
    enamel = enamel_level + 0.45 * (lips - grey)
    # Upper teeth hang from under the lip (no seam there), longer in the middle (the arch in
    # perspective) with a slightly uneven edge, and fade into the cavity's shadow sideways.
    edge = 1 + 0.06 * np.sin(9.0 * u + 0.7) + 0.04 * np.sin(17.0 * u + 2.1)
    teeth_len = np.minimum(0.55 * gap, 0.11 * mouth_px) * np.sqrt(np.clip(1 - across ** 3, 0, 1)) * edge
    sideways = _smoothstep((0.97 - across) / 0.4)
    teeth = np.clip((top + teeth_len - ys) / soft + 0.5, 0, 1) * (ys >= top - 3) * sideways
    under_lip = 0.72 + 0.28 * np.clip((ys - top) / (0.45 * teeth_len + 1e-3), 0, 1)
    towards_corners = 0.3 + 0.7 * np.clip(1 - across ** 1.5, 0, 1)
    mottle = 1 + 0.035 * np.sin(23.0 * u + 1.3) * np.sin(5.0 * u + 0.4)
    shade = under_lip * towards_corners * mottle
    out = out * (1 - teeth[..., None]) + enamel * shade[..., None] * teeth[..., None]
    if centre_gap > 0.18 * mouth_px:  # lower incisors just showing, in the lower lip's shade
        lower_len = 0.1 * gap * np.clip(1 - (across / 0.6) ** 2, 0, 1)
        lower_teeth = np.clip((ys - (bottom - lower_len)) / soft + 0.5, 0, 1) * (ys <= bottom + 1) * _smoothstep((0.6 - across) / 0.25)
        out = out * (1 - lower_teeth[..., None]) + enamel * 0.6 * towards_corners[..., None] * lower_teeth[..., None]
    out = cv2.GaussianBlur(out, (0, 0), max(0.5, mouth_px / 300))
    if grain > 0:
        # A fixed pattern (the same in every frame): a portrait's grain does not flicker.
        noise = np.random.default_rng(0).standard_normal((height, width)).astype(np.float32)
        out += (grain * noise)[..., None]
    return np.clip(out, 0, 255)
