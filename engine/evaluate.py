"""Quality figures for a rendered video, measured on its own frames and sound.

    python -m engine.evaluate OUT.mp4 [--template T] [--sheet S.png]
    python -m engine.evaluate --cross CLIP.mp4 [--workdir DIR]

Prints JSON. Lags are in frames; a positive AV offset means the mouth moves before the sound.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from fractions import Fraction

import av
import cv2
import numpy as np
from scipy.io import wavfile

from . import landmarks as lm
from .face import FaceTracker, prepare_template
from .media import ANALYSIS_RATE, load_pcm, probe_video, read_frames
from .pipeline import render, template_frames

MAX_LAG = 15
# Cross-reconstruction scores each mouth track at its best lag within this many frames (about a
# phone's length): a mouth that moves a frame early or late is judged by its shapes, not its timing.
SCORE_LAG = 5


def track_video(path: str) -> tuple[np.ndarray, float]:
    """Raw (unsmoothed) landmarks of every frame of a video, NaN where no face, and its fps."""
    fps = probe_video(path).fps
    tracker = FaceTracker()
    try:
        points = [found if (found := tracker(image)[0]) is not None else np.full((468, 2), np.nan, np.float32)
                  for _, image in read_frames(path, fps)]
    finally:
        tracker.close()
    return np.stack(points), fps


def loudness_per_frame(pcm: np.ndarray, fps: float, count: int) -> np.ndarray:
    """RMS in dB over each frame's 1/fps window."""
    hop = ANALYSIS_RATE / fps
    values = []
    for k in range(count):
        chunk = pcm[int(k * hop):int((k + 1) * hop)]
        values.append(10 * np.log10(np.mean(chunk.astype(np.float64) ** 2) + 1e-10) if len(chunk) else -100.0)
    return np.array(values)


def av_sync(opening: np.ndarray, loudness: np.ndarray) -> tuple[int, float]:
    """(lag, correlation) maximising corr(opening[k], loudness[k + lag]) within +-MAX_LAG."""
    best = (0, -1.0)
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a = opening[max(0, -lag):len(opening) - max(0, lag)]
        b = loudness[max(0, lag):len(loudness) - max(0, -lag)]
        n = min(len(a), len(b))
        ok = ~np.isnan(a[:n])
        if ok.sum() > 10 and np.std(a[:n][ok]) > 0 and np.std(b[:n][ok]) > 0:
            corr = float(np.corrcoef(a[:n][ok], b[:n][ok])[0, 1])
            if corr > best[1]:
                best = (lag, corr)
    return best


def silent_frames(loudness: np.ndarray, fps: float, min_seconds: float = 0.3) -> np.ndarray:
    """Frames inside silent stretches of at least `min_seconds`."""
    quiet = loudness < max(np.percentile(loudness, 10) + 6.0, np.percentile(loudness, 95) - 30.0)
    mask = np.zeros(len(quiet), bool)
    start = None
    for k, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = k
        elif not q and start is not None:
            if k - start >= min_seconds * fps:
                mask[start:k] = True
            start = None
    return mask


def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else float(10 * np.log10(255.0 ** 2 / mse))


def contact_sheet(path: str, sheet: str, count: int = 8) -> None:
    info = probe_video(path)
    total = max(1, int(round(info.duration * info.fps)))
    wanted = set(np.linspace(0, total - 1, count).astype(int).tolist())
    tiles = []
    for k, image in read_frames(path, info.fps):
        if k in wanted:
            tile = cv2.resize(image, (320, int(320 * image.shape[0] / image.shape[1])))
            cv2.putText(tile, f"{k / info.fps:.1f}s", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
            tiles.append(tile)
    rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles) - len(tiles) % 4 or len(tiles), 4)]
    width = max(r.shape[1] for r in rows)
    cv2.imwrite(sheet, np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]))


def evaluate_render(output: str, template: str | None = None, sheet: str | None = None) -> dict:
    points, fps = track_video(output)
    opening = lm.aperture(points)
    loudness = loudness_per_frame(load_pcm(output), fps, len(points))
    lag, corr = av_sync(opening, loudness)
    quiet = silent_frames(loudness, fps) & ~np.isnan(opening)
    closed = float(np.nanpercentile(opening, 10))
    report = {
        "output": output, "frames": len(points), "fps": fps,
        "face_frames": int((~np.isnan(opening)).sum()),
        "av_offset_frames": lag, "av_peak_corr": round(corr, 3),
        "silence_frames": int(quiet.sum()),
        "silence_aperture_above_closed": round(float(opening[quiet].mean() - closed), 4) if quiet.any() else None,
    }
    if template:
        track = prepare_template(template)
        squared, count, sharp_out, sharp_tpl = 0.0, 0, [], []
        frames = template_frames(track, len(points))
        for (_, image), (reference, ref_points) in zip(read_frames(output, fps), frames):
            reference = reference[:image.shape[0], :image.shape[1]]
            if np.isnan(ref_points[0, 0]):
                continue
            nose = int(ref_points[lm.NOSE_TIP, 1])
            diff = image[:nose].astype(np.float32) - reference[:nose].astype(np.float32)
            squared += float((diff ** 2).sum())
            count += diff.size
            lips = ref_points[lm.OUTER_UPPER + lm.OUTER_LOWER]
            margin = 0.25 * float(lm.mouth_width(ref_points))
            x0, y0 = np.maximum((lips.min(axis=0) - margin).astype(int), 0)
            x1, y1 = (lips.max(axis=0) + margin).astype(int)
            for target, store in ((image, sharp_out), (reference, sharp_tpl)):
                box = cv2.cvtColor(target[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
                store.append(cv2.Laplacian(box, cv2.CV_32F).var())
        report["psnr_above_nose_db"] = round(_psnr(squared / max(count, 1)), 2)
        report["mouth_sharpness_ratio"] = round(float(np.mean(sharp_out) / max(np.mean(sharp_tpl), 1e-6)), 3)
    if sheet:
        contact_sheet(output, sheet)
        report["contact_sheet"] = sheet
    return report


def _write_video(frames, path: str, fps: float, size: tuple[int, int]) -> None:
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "12", "preset": "veryfast"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:stream.height, :stream.width]), format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def mouth_lmd(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance of the 20 mouth points, each face normalised (mouth centred, eyes level,
    outer-eye-corner distance 1), over frames where both have a face."""
    distances = [np.linalg.norm(lm.normalized_mouth(p) - lm.normalized_mouth(q), axis=1).mean()
                 for p, q in zip(a, b) if not (np.isnan(p[0, 0]) or np.isnan(q[0, 0]))]
    return float(np.mean(distances))


def _lagged(a: np.ndarray, b: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """a[k + lag] against b[k], over the frames both have."""
    n = min(len(a), len(b))
    return (a[lag:n], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:n])


def best_lag_lmd(a: np.ndarray, b: np.ndarray, window: int = SCORE_LAG) -> tuple[float, int]:
    """(M-LMD, lag) at the lag within +-window frames where `a` best follows `b`."""
    scores = [(mouth_lmd(*_lagged(a, b, lag)), lag) for lag in range(-window, window + 1)]
    return min(scores)


def cross_reconstruction(clip: str, workdir: str, reverse: bool = False) -> dict:
    """First half of a talking clip (silent) is the template, the second half's sound the
    narration, its pictures the truth (`reverse`: the other way round). The narration starts at
    the truth's first frame, shifted by the truth's own audio-video offset when that is more
    than two frames."""
    info = probe_video(clip)
    frames = [image for _, image in read_frames(clip, info.fps)]
    half = len(frames) // 2
    template_frames_, truth_frames = (frames[half:], frames[:half]) if reverse else (frames[:half], frames[half:])
    truth_first = 0 if reverse else half
    name = os.path.splitext(os.path.basename(clip))[0] + (".reverse" if reverse else "")
    template = os.path.join(workdir, f"{name}.template.mp4")
    truth_video = os.path.join(workdir, f"{name}.truth.mp4")
    narration = os.path.join(workdir, f"{name}.narration.wav")
    size = (info.width, info.height)
    _write_video(template_frames_, template, info.fps, size)
    _write_video(truth_frames, truth_video, info.fps, size)
    del frames, template_frames_, truth_frames
    pcm = load_pcm(clip)
    # Some published clips carry their sound out of step with the pictures (face_2's by about
    # half a second). An offset of the truth's pictures against their own sound beyond a
    # speaker's natural lead of a frame or two is corrected, as lip-sync datasets are (SyncNet),
    # so that the narration is the sound of the truth's pictures.
    truth_points, _ = track_video(truth_video)
    start = int(round(truth_first / info.fps * ANALYSIS_RATE))
    clip_lag, clip_corr = av_sync(lm.aperture(truth_points), loudness_per_frame(pcm[start:], info.fps, len(truth_points)))
    shift = clip_lag if abs(clip_lag) > 2 else 0
    start = max(0, int(round((truth_first + shift) / info.fps * ANALYSIS_RATE)))
    end = start + int(round(len(truth_points) / info.fps * ANALYSIS_RATE))
    wavfile.write(narration, ANALYSIS_RATE, (np.clip(pcm[start:end], -1, 1) * 32767).astype(np.int16))
    output = os.path.join(workdir, f"{name}.output.mp4")
    render(narration, template, output)
    out_points, _ = track_video(output)
    track = prepare_template(template)
    tracker = FaceTracker()
    try:
        tpl_points = np.stack([found if (found := tracker(image)[0]) is not None else np.full((468, 2), np.nan, np.float32)
                               for image, _ in template_frames(track, len(truth_points))])
    finally:
        tracker.close()
    n = min(len(out_points), len(truth_points), len(tpl_points))
    out_points, truth_points, tpl_points = out_points[:n], truth_points[:n], tpl_points[:n]
    (lmd_out, lag_out), (lmd_tpl, lag_tpl) = best_lag_lmd(out_points, truth_points), best_lag_lmd(tpl_points, truth_points)
    truth_open = lm.aperture(truth_points)
    truth_lag, truth_corr = av_sync(truth_open, loudness_per_frame(pcm[start:], info.fps, n))

    def aperture_corr(points: np.ndarray, lag: int) -> float:
        mine, truth = _lagged(lm.aperture(points), truth_open, lag)
        ok = ~(np.isnan(mine) | np.isnan(truth))
        return round(float(np.corrcoef(mine[ok], truth[ok])[0, 1]), 3)

    return {
        "clip": clip, "template_half": "second" if reverse else "first", "frames": n,
        "mlmd_output": round(lmd_out, 4), "mlmd_unchanged_template": round(lmd_tpl, 4),
        "mlmd_ratio": round(lmd_out / lmd_tpl, 3), "output_lag_frames": lag_out,
        "aperture_corr_with_truth": aperture_corr(out_points, lag_out),
        "template_aperture_corr_with_truth": aperture_corr(tpl_points, lag_tpl),
        "truth_own_av_offset_frames": clip_lag, "truth_own_av_corr": round(clip_corr, 3), "narration_shift_frames": shift,
        "truth_av_offset_after_shift": truth_lag, "truth_av_corr_after_shift": round(truth_corr, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", help="rendered MP4 to score")
    parser.add_argument("--template", help="the template it was rendered from (fidelity, sharpness)")
    parser.add_argument("--sheet", help="contact sheet PNG (default: next to the output)")
    parser.add_argument("--cross", metavar="CLIP", help="cross-reconstruction check on a real talking clip")
    parser.add_argument("--reverse", action="store_true", help="--cross with the second half as the template")
    parser.add_argument("--workdir", help="where --cross writes its halves and render")
    args = parser.parse_args(argv)
    if args.cross:
        workdir = args.workdir or tempfile.mkdtemp(prefix="heygem-cross-")
        os.makedirs(workdir, exist_ok=True)
        print(json.dumps(cross_reconstruction(args.cross, workdir, args.reverse), indent=2))
    elif args.output:
        sheet = args.sheet or os.path.splitext(args.output)[0] + ".sheet.png"
        print(json.dumps(evaluate_render(args.output, args.template, sheet), indent=2))
    else:
        parser.error("give an output MP4 or --cross CLIP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
