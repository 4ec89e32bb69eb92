"""Contact sheets of mouth crops to look at, and the colour of synthesised insides.

Renders every portrait and talking clip given (default: ../shared/media's) with a narration, then
for a few frames where the output's mouth is open puts the template's mouth crop (left) beside
the output's (right), one row per frame, into `<out>/<name>.png`. For portraits (whose inside is
synthesised) it reports the inside's chroma: per pixel max(B,G,R) - min(B,G,R) inside the inner
lip line, mean and 95th percentile, beside the same figure for the template's lips (a grey
picture should give 0 for both).

    python benchmarks/mouths.py [--out mouth-sheets] [--audio ...] [templates ...]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine import landmarks as lm  # noqa: E402
from engine import render  # noqa: E402
from engine.face import FaceTracker  # noqa: E402
from engine.media import loop_index, read_frames, read_image  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "media")
ROWS = 6
SIDE = 192  # each crop is scaled to this height


def mouth_box(points: np.ndarray, shape) -> tuple[int, int, int, int]:
    outer = points[lm.OUTER_UPPER + lm.OUTER_LOWER]
    centre = outer.mean(axis=0)
    half = 0.85 * max(np.ptp(outer[:, 0]), 1.0)
    x0, y0 = int(max(centre[0] - half, 0)), int(max(centre[1] - 0.75 * half, 0))
    x1, y1 = int(min(centre[0] + half, shape[1])), int(min(centre[1] + 0.75 * half, shape[0]))
    return x0, y0, x1, y1


def chroma_inside(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[lm.INNER_RING]).astype(np.int32)], 255)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    pixels = image[mask > 0].astype(np.int16)
    return pixels.max(axis=1) - pixels.min(axis=1) if len(pixels) else np.zeros(0)


def lips_chroma(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[lm.OUTER_UPPER + lm.OUTER_LOWER[::-1]]).astype(np.int32)], 255)
    pixels = image[mask > 0].astype(np.int16)
    return pixels.max(axis=1) - pixels.min(axis=1)


def sheet(template: str, audio: str, out_dir: str, tracker: FaceTracker) -> str:
    name = os.path.splitext(os.path.basename(template))[0]
    with tempfile.TemporaryDirectory() as work:
        output = os.path.join(work, "out.mp4")
        render(audio, template, output)
        still = read_image(template)
        frames = list(read_frames(output, 25.0))
        template_frames = None if still is not None else [f for _, f in read_frames(template, 25.0)]
    tracked = []
    for k in range(0, len(frames), 3):
        points, _ = tracker(frames[k][1] if isinstance(frames[k], tuple) else frames[k])
        if points is not None:
            tracked.append((k, points, float(lm.aperture(points)) if hasattr(lm, "aperture") else
                            float(np.linalg.norm(points[lm.INNER_BOTTOM] - points[lm.INNER_TOP]))))
    tracked.sort(key=lambda entry: -entry[2])
    chosen = sorted(tracked[:ROWS], key=lambda entry: entry[0])
    rows, chroma = [], []
    for k, points, _ in chosen:
        image = frames[k][1] if isinstance(frames[k], tuple) else frames[k]
        source = still if still is not None else template_frames[loop_index(k, len(template_frames))]
        x0, y0, x1, y1 = mouth_box(points, image.shape)
        crops = [cv2.resize(part[y0:y1, x0:x1], (round(SIDE * 1.6), SIDE), interpolation=cv2.INTER_AREA)
                 for part in (source, image)]
        rows.append(np.hstack([crops[0], np.full((SIDE, 4, 3), 255, np.uint8), crops[1]]))
        chroma.append(chroma_inside(image, points))
    path = os.path.join(out_dir, f"{name}.png")
    cv2.imwrite(path, np.vstack([np.vstack([row, np.full((4, row.shape[1], 3), 255, np.uint8)]) for row in rows]))
    values = np.concatenate(chroma) if chroma else np.zeros(1)
    template_points, _ = tracker(still if still is not None else template_frames[0])
    reference = lips_chroma(still if still is not None else template_frames[0], template_points)
    kind = "portrait" if still is not None else "clip"
    print(f"{name} ({kind}): sheet {path}; inside chroma mean {values.mean():.1f}, p95 {np.percentile(values, 95):.0f}; "
          f"template lips chroma mean {reference.mean():.1f}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("templates", nargs="*")
    parser.add_argument("--audio", default=os.path.join(SHARED, "audio", "SadTalker__RD_Radio31_000.wav"))
    parser.add_argument("--out", default="mouth-sheets")
    args = parser.parse_args()
    templates = args.templates or sorted(glob.glob(os.path.join(SHARED, "image", "*"))) + \
        sorted(glob.glob(os.path.join(SHARED, "video", "*.mp4")))
    os.makedirs(args.out, exist_ok=True)
    tracker = FaceTracker()
    for template in templates:
        sheet(template, args.audio, args.out, tracker)


if __name__ == "__main__":
    main()
