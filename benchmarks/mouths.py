"""Contact sheets of mouth crops to look at, and the colour of synthesised insides.

Renders every portrait and talking clip given (default: ../shared/media's) with a few narrations
(English and Mandarin), and each portrait also resized (a small face and a very large one), then
for a few frames where the output's mouth is open puts the template's mouth crop (left) beside
the output's (right), one row per frame, into `<out>/<name>.png`. For portraits (whose inside is
synthesised) it reports the inside's chroma: per pixel max(B,G,R) - min(B,G,R) inside the inner
lip line, mean and 95th percentile, beside the same figure for the template's lips (a grey
picture should give 0 for both).

    python benchmarks/mouths.py [--out mouth-sheets] [--audio A.wav [--audio B.wav]] [--scales 0.5 3] [templates ...]
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
NARRATIONS = ["SadTalker__RD_Radio31_000.wav", "whisper.cpp__jfk.wav", "PaddleSpeech__zh.wav"]


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


def scaled_copy(template: str, scale: float, work: str) -> str:
    """The portrait resized by `scale` (small faces and 4K faces from the same picture), its
    longer side at most 3840 px."""
    image = read_image(template)
    scale = min(scale, 3840 / max(image.shape[:2]))
    path = os.path.join(work, f"{os.path.splitext(os.path.basename(template))[0]}@{scale:g}.png")
    cv2.imwrite(path, cv2.resize(image, None, fx=scale, fy=scale,
                                 interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC))
    return path


def sheet(template: str, audio: str, out_dir: str) -> str:
    name = f"{os.path.splitext(os.path.basename(template))[0]}__{os.path.splitext(os.path.basename(audio))[0]}"
    still = read_image(template)
    with tempfile.TemporaryDirectory() as work:
        output = os.path.join(work, "out.mp4")
        render(audio, template, output)
        frames = [image for _, image in read_frames(output, 25.0)]
    sources = [still] if still is not None else [image for _, image in read_frames(template, 25.0)]
    tracked = []
    # A tracker follows one face through one video: a new one for each (a box left from a
    # picture of another size would be off this one).
    tracker = FaceTracker()
    for k in range(0, len(frames), 3):
        points, _ = tracker(frames[k])
        if points is not None:
            tracked.append((k, points, float(lm.aperture(points))))
    tracked.sort(key=lambda entry: -entry[2])
    chosen = sorted(tracked[:ROWS], key=lambda entry: entry[0])
    rows, chroma = [], []
    for k, points, _ in chosen:
        image, source = frames[k], sources[loop_index(k, len(sources))]
        x0, y0, x1, y1 = mouth_box(points, image.shape)
        crops = [cv2.resize(part[y0:y1, x0:x1], (round(SIDE * 1.6), SIDE), interpolation=cv2.INTER_AREA)
                 for part in (source, image)]
        rows.append(np.hstack([crops[0], np.full((SIDE, 4, 3), 255, np.uint8), crops[1]]))
        chroma.append(chroma_inside(image, points))
    path = os.path.join(out_dir, f"{name}.png")
    cv2.imwrite(path, np.vstack([np.vstack([row, np.full((4, row.shape[1], 3), 255, np.uint8)]) for row in rows]))
    values = np.concatenate(chroma) if chroma else np.zeros(1)
    tracker.close()
    tracker = FaceTracker()
    template_points, _ = tracker(sources[0])
    tracker.close()
    reference = lips_chroma(sources[0], template_points)
    mouth_px = float(lm.mouth_width(template_points))
    print(f"{name} ({'portrait' if still is not None else 'clip'}, mouth {mouth_px:.0f} px): sheet {path}; inside chroma mean "
          f"{values.mean():.1f}, p95 {np.percentile(values, 95):.0f}; template lips chroma mean {reference.mean():.1f}",
          flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("templates", nargs="*")
    parser.add_argument("--audio", action="append", help="a narration (repeat the flag for several; "
                        "default: two English and one Mandarin from ../shared/media)")
    parser.add_argument("--scales", nargs="*", type=float, default=[0.5, 3.0],
                        help="also render each portrait resized by these factors (small and very large faces)")
    parser.add_argument("--out", default="mouth-sheets")
    args = parser.parse_args()
    templates = args.templates or sorted(glob.glob(os.path.join(SHARED, "image", "*"))) + \
        sorted(glob.glob(os.path.join(SHARED, "video", "*.mp4")))
    narrations = args.audio or [os.path.join(SHARED, "audio", name) for name in NARRATIONS]
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        portraits = [t for t in templates if read_image(t) is not None]
        templates += [scaled_copy(t, scale, work) for t in portraits for scale in args.scales]
        for template in templates:
            for audio in narrations:
                sheet(template, audio, args.out)


if __name__ == "__main__":
    main()
