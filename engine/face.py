"""Template -> face track: landmarks for every frame, analysed once and cached by content hash."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from . import landmarks as lm
from .errors import MediaError, NoFaceError
from .media import DEFAULT_LIMITS, Limits, VideoInfo, probe_video, read_frames, read_image

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Mediapipe crops the face from the full frame; a smaller copy only speeds up colour conversion
# and detection.
DETECT_MAX_SIDE = 1280
# Openings (inner gap / mouth width) binned for the library of real mouth interiors.
LIBRARY_BINS = np.array([0.05, 0.09, 0.13, 0.18, 0.24, 0.31, 0.40, 0.52, 2.0])
ProgressCallback = Callable[[int, int], None]
CLOSED_APERTURE = 0.01
# How far a speaker's mouth opens (inner gap / width, 95th percentile) when the template never
# shows it: the three talking clips in ../shared/media open 0.24-0.29.
TYPICAL_OPENING = 0.25


@dataclass
class MouthSample:
    """A real open mouth from the template: its crop and inner-lip polygon in crop coordinates."""

    image: np.ndarray
    inner: np.ndarray
    aperture: float


@dataclass
class TemplateTrack:
    path: str
    sha256: str
    info: VideoInfo
    frame_count: int
    points: np.ndarray  # (frames, 468, 2) float32, NaN where no face
    faces_max: int
    library: list[MouthSample] = field(default_factory=list)
    from_cache: bool = False

    @property
    def has_face(self) -> np.ndarray:
        return ~np.isnan(self.points[:, 0, 0])

    def apertures(self) -> np.ndarray:
        return lm.aperture(self.points)

    def opening_range(self) -> tuple[float, float]:
        """(closed, widest) apertures this person shows; a closed-mouth template gets a typical
        speaking range so that the mouth can still open."""
        values = self.apertures()[self.has_face]
        # Lips meet in pauses and p/b/m even where this person's resting mouth is slightly open.
        closed = min(float(np.percentile(values, 5)), CLOSED_APERTURE)
        widest = float(np.percentile(values, 95))
        return closed, max(widest, closed + TYPICAL_OPENING)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> str:
    return os.environ.get("HEYGEM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "heygem", "templates")


class FaceTracker:
    """Largest face per frame, 468 mesh points in pixel coordinates.

    MediaPipe's mesh finds faces with a short-range detector that misses a presenter who fills
    only part of a wide frame, so faces are located with the full-range detector (in the same
    wheel) and the mesh runs on a crop around the largest, which then follows the face from frame
    to frame. The full-range model in turn misses some close-up faces (a tight portrait with
    glasses), so the short-range one is asked when it finds nothing. Detection runs again every
    `RECOUNT` frames, to count faces, and whenever the face is lost.
    """

    RECOUNT = 25
    CROP_SCALE = 2.2  # crop side over the face box side
    MESH_SIDE = 480

    def __init__(self):
        import mediapipe as mp  # imported here: it takes a second and logs to stderr

        self.detectors = [mp.solutions.face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.5)
                          for model in (1, 0)]  # full range first, then short range
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                    refine_landmarks=False, min_detection_confidence=0.4)
        self.box: np.ndarray | None = None  # (cx, cy, side) of the followed face
        self.count = 0
        self.frames = 0

    def _detect(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        factor = min(1.0, DETECT_MAX_SIDE / max(height, width))
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1 else image
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        for detector in self.detectors:
            found = detector.process(rgb).detections or []
            if found:
                break
        self.count = len(found)
        if not found:
            self.box = None
            return
        boxes = [d.location_data.relative_bounding_box for d in found]
        best = max(boxes, key=lambda b: b.width * b.height)
        side = max(best.width * width, best.height * height)
        self.box = np.array([(best.xmin + best.width / 2) * width, (best.ymin + best.height / 2) * height, side])

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray | None, int]:
        if self.box is None or self.frames % self.RECOUNT == 0:
            self._detect(image)
        self.frames += 1
        if self.box is None:
            return None, 0
        height, width = image.shape[:2]
        cx, cy, side = self.box
        half = self.CROP_SCALE * side / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(width, cx + half)), int(min(height, cy + half))
        crop = image[y0:y1, x0:x1]
        factor = min(1.0, self.MESH_SIDE / max(crop.shape[:2]))
        if factor < 1:
            crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        faces = self.mesh.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)).multi_face_landmarks
        if not faces:
            self.box = None
            return None, self.count
        scale_x, scale_y = crop.shape[1] / factor, crop.shape[0] / factor
        points = np.array([(p.x * scale_x + x0, p.y * scale_y + y0) for p in faces[0].landmark[:468]], np.float32)
        low, high = points.min(axis=0), points.max(axis=0)
        self.box = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, float(max(high - low))])
        return points, max(self.count, 1)

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()
        self.mesh.close()


def _smooth(points: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Zero-phase temporal smoothing over the frames that have a face (landmark jitter would make
    the re-rendered mouth shimmer)."""
    valid = ~np.isnan(points[:, 0, 0])
    if valid.sum() < 3:
        return points
    filled = np.where(valid[:, None, None], points, 0.0)
    weight = gaussian_filter1d(valid.astype(np.float32), sigma, mode="nearest")
    smooth = gaussian_filter1d(filled, sigma, axis=0, mode="nearest") / np.maximum(weight, 1e-6)[:, None, None]
    return np.where(valid[:, None, None], smooth, np.nan).astype(np.float32)


def _mouth_sample(image: np.ndarray, points: np.ndarray) -> MouthSample:
    outer = points[lm.OUTER_UPPER + lm.OUTER_LOWER]
    margin = 0.15 * float(lm.mouth_width(points))
    x0, y0 = np.floor(outer.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(outer.max(axis=0) + margin).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    crop = image[y0:y1, x0:x1].copy()
    return MouthSample(crop, points[lm.INNER_RING] - np.array([x0, y0], np.float32), float(lm.aperture(points)))


def _sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var())


def _track_frames(path: str, info: VideoInfo, on_progress: ProgressCallback | None, limits: Limits):
    """Landmarks of every frame, plus the sharpest real mouth per opening bin."""
    tracker = FaceTracker()
    points, faces_max = [], 0
    best: dict[int, tuple[float, MouthSample]] = {}
    total = max(1, int(round(info.duration * info.fps)))
    most = int(limits.max_template_seconds * info.fps) + 1  # the header's duration may lie
    try:
        frames = [(0, read_image(path, limits))] if info.is_image else read_frames(path, info.fps, limits=limits)
        for index, image in frames:
            if index >= most:
                raise MediaError(f"{os.path.basename(path)}: the video lasts over {limits.max_template_seconds / 60:g} "
                                 "min; templates up to that are accepted (a short clip loops under any narration)")
            found, count = tracker(image)
            faces_max = max(faces_max, count)
            points.append(found if found is not None else np.full((468, 2), np.nan, np.float32))
            if found is not None:
                opening = float(lm.aperture(found))
                slot = int(np.searchsorted(LIBRARY_BINS, opening)) - 1
                if slot >= 0:
                    sample = _mouth_sample(image, found)
                    score = _sharpness(sample.image)
                    if slot not in best or score > best[slot][0]:
                        best[slot] = (score, sample)
            if on_progress and index % 10 == 0:
                on_progress(index + 1, max(total, index + 1))
    finally:
        tracker.close()
    if not points:
        raise MediaError(f"{os.path.basename(path)}: no picture could be decoded from it")
    library = [best[k][1] for k in sorted(best)]
    return np.stack(points), faces_max, library


def _cache_path(cache_dir: str, sha: str) -> str:
    return os.path.join(cache_dir, f"{sha}-v{CACHE_VERSION}.npz")


def analysis_file(path: str, cache_dir: str | None = None) -> str:
    """Where `prepare_template` keeps the analysis of this file's content (it may not exist yet)."""
    return _cache_path(cache_dir or default_cache_dir(), file_sha256(path))


def _save(track: TemplateTrack, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    crops = [cv2.imencode(".png", s.image)[1] for s in track.library]
    meta = {"info": track.info.__dict__, "frame_count": track.frame_count, "faces_max": track.faces_max,
            "apertures": [s.aperture for s in track.library]}
    buffer = io.BytesIO()
    np.savez(buffer, points=track.points, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             crop_sizes=np.array([len(c) for c in crops], np.int64),
             crops=np.concatenate(crops) if crops else np.zeros(0, np.uint8),
             inners=np.stack([s.inner for s in track.library]) if crops else np.zeros((0, len(lm.INNER_RING), 2)))
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, path)


def _load(path: str, template_path: str, sha: str) -> TemplateTrack:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        offsets = np.concatenate([[0], np.cumsum(data["crop_sizes"])])
        crops = data["crops"]
        library = [MouthSample(cv2.imdecode(crops[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR), data["inners"][i], a)
                   for i, a in enumerate(meta["apertures"])]
        return TemplateTrack(template_path, sha, VideoInfo(**meta["info"]), meta["frame_count"], data["points"],
                             meta["faces_max"], library, from_cache=True)


def prepare_template(path: str, cache_dir: str | None = None,
                     on_progress: ProgressCallback | None = None, limits: Limits = DEFAULT_LIMITS) -> TemplateTrack:
    """Analyse a template once (face landmarks per frame); later calls with the same file content
    load the cached result."""
    cache_dir = cache_dir or default_cache_dir()
    sha = file_sha256(path)
    cached = _cache_path(cache_dir, sha)
    if os.path.exists(cached):
        try:
            return _load(cached, path, sha)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable template cache %s: %s", cached, exc)
    info = probe_video(path, limits)
    points, faces_max, library = _track_frames(path, info, on_progress, limits)
    name = os.path.basename(path)
    if np.isnan(points[:, 0, 0]).all():
        raise NoFaceError(f"{name}: no face found in any frame; use a template where one face looks at the camera")
    if faces_max > 1:
        log.info("%s: up to %d faces in a frame; animating the largest", name, faces_max)
    track = TemplateTrack(path, sha, info, len(points), _smooth(points), faces_max, library)
    _save(track, cached)
    return track
