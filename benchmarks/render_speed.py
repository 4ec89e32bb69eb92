"""Render speed against an ffmpeg pass-through of the same work, template caching, peak memory.

    python benchmarks/render_speed.py [--media ../shared/media] [--clip video/...|image/...]
                                      [--height 720] [--minutes 0] [--template-seconds 0]

Builds a 16:9 template of the given height from a real talking clip, or from a portrait image (a
still padded to 16:9: the engine sways it and synthesises every opening), then times, in one run:
  pass-through: ffmpeg decodes the template (looped to the narration's length; a portrait as a
                one-second H.264 still), encodes H.264 with the engine's settings and muxes the
                same narration as AAC. A still encodes almost for free, so a portrait's ratio
                is not comparable with a clip's;
  first render: a fresh template cache (face analysis included);
  second render: the template already analysed.
Ratios use the engine's own time (a running service's view); the process wall ratios add start-up.
Each render runs in a child process whose whole process tree's RSS is sampled.
`--minutes N` makes the narration N minutes long (e.g. 5 at --height 1080 for the memory target).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import imageio_ffmpeg
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.media import read_image  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RENDER = """
import json, sys, engine
r = engine.render(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"frames": r.frames, "fps": r.fps, "size": [r.width, r.height], "cached": r.template_cached,
                  "timings": r.timings}))
"""


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", *args], check=True)


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS of the process tree in MiB, stdout)."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [process] + process.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - started, peak / 2 ** 20, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", default=os.path.join(ROOT, "..", "shared", "media"))
    parser.add_argument("--clip", default="video/video-retalking__face_2.mp4")
    parser.add_argument("--audio", default="audio/whisper.cpp__jfk.wav")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--minutes", type=float, default=0.0, help="loop the narration to this length")
    parser.add_argument("--template-seconds", type=float, default=0.0, help="loop the template to this length")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heygem-bench-")
    if args.height % 2:
        parser.error("--height must be even (H.264 4:2:0)")
    width = args.height * 16 // 9 // 2 * 2
    source = os.path.join(args.media, args.clip)
    frame = f"scale=-2:{args.height},pad={width}:{args.height}:(ow-iw)/2:0"
    encode = ["-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    if read_image(source) is not None:
        template = os.path.join(work, f"template_{args.height}p.png")
        ffmpeg("-i", source, "-vf", frame, "-frames:v", "1", "-update", "1", template)
        # Looping the PNG itself would decode it again for every frame (3x the pass-through's
        # time); the engine decodes it once.
        replayed = os.path.join(work, "still.mp4")
        ffmpeg("-loop", "1", "-framerate", "25", "-i", template, "-t", "1", *encode, replayed)
    else:
        template = os.path.join(work, f"template_{args.height}p.mp4")
        loop = ["-stream_loop", "-1"] if args.template_seconds else []
        length = ["-t", str(args.template_seconds)] if args.template_seconds else []
        ffmpeg(*loop, "-i", source, *length, "-an", "-vf", frame, *encode, template)
        replayed = template
    audio = os.path.join(args.media, args.audio)
    if args.minutes:
        looped = os.path.join(work, "narration.m4a")
        ffmpeg("-stream_loop", "-1", "-i", audio, "-t", str(args.minutes * 60), "-c:a", "aac", looped)
        audio = looped
    duration = float(subprocess.run([sys.executable, "-c", "import engine, sys; print(engine.analyse_audio(sys.argv[1]).duration)", audio],
                                    capture_output=True, text=True, check=True, cwd=ROOT).stdout)

    passthrough = os.path.join(work, "passthrough.mp4")
    pass_seconds, pass_rss, _ = timed([
        FFMPEG, "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", replayed, "-i", audio,
        "-map", "0:v", "-map", "1:a", "-t", f"{duration:.3f}", *encode, "-c:a", "aac", "-b:a", "128k",
        "-movflags", "+faststart", passthrough])

    env = dict(os.environ, HEYGEM_CACHE_DIR=os.path.join(work, "cache"), PYTHONPATH=ROOT)
    runs = {}
    for name in ("first", "second"):
        seconds, rss, out = timed([sys.executable, "-c", RENDER, audio, template, os.path.join(work, f"{name}.mp4")], env)
        runs[name] = {"wall_seconds": round(seconds, 2), "peak_rss_mib": round(rss), **json.loads(out.strip().splitlines()[-1])}
    frames = runs["second"]["frames"]
    report = {
        "template": f"{width}x{args.height}", "narration_seconds": round(duration, 2), "frames": frames,
        "passthrough_seconds": round(pass_seconds, 2), "passthrough_peak_rss_mib": round(pass_rss),
        "first_render": runs["first"], "second_render": runs["second"],
        "render_fps_cached": round(frames / runs["second"]["wall_seconds"], 1),
        "real_time_factor_cached": round(runs["second"]["wall_seconds"] / duration, 3),
        # The service renders in a process that is already running: the engine's own time is the
        # figure that matters there; the process's wall time adds Python's start-up and imports.
        "ratio_to_passthrough_first": round(runs["first"]["timings"]["total"] / pass_seconds, 2),
        "ratio_to_passthrough_cached": round(runs["second"]["timings"]["total"] / pass_seconds, 2),
        "process_wall_ratio_first": round(runs["first"]["wall_seconds"] / pass_seconds, 2),
        "process_wall_ratio_cached": round(runs["second"]["wall_seconds"] / pass_seconds, 2),
        "workdir": work,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
