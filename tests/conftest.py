"""Fixtures made here from the bundled public-domain astronaut portrait, espeak-ng speech,
silence and tones. Nothing under ../shared/media is used."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from fractions import Fraction
from functools import partial
from http.server import ThreadingHTTPServer

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from scipy.io import wavfile

from engine.cli import DEMO_PORTRAIT
from engine.idle import idle_frames
from engine.face import FaceTracker
from gateway_support import FilesHandler, LiveServer, make_settings

SPEECH = "Papa bought my mom a big blue boat. We met at the market, then we went home."


def write_wav(path: str, samples: np.ndarray, rate: int) -> str:
    wavfile.write(path, rate, (np.clip(samples, -1, 1) * 32767).astype(np.int16))
    return path


def transcode_audio(source: str, path: str, codec: str, rate: int | None = None, layout: str = "mono") -> str:
    """Re-encode `source` into another container/codec with PyAV."""
    with av.open(source) as src, av.open(path, "w") as out:
        stream = src.streams.audio[0]
        rate = rate or stream.rate
        target = out.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(format=target.codec_context.format.name, layout=layout, rate=rate)
        for frame in src.decode(stream):
            for converted in resampler.resample(frame):
                out.mux(target.encode(converted))
        for converted in resampler.resample(None):
            out.mux(target.encode(converted))
        out.mux(target.encode(None))
    return path


def write_video(path: str, frames, fps: float, codec: str = "libx264", pts=None) -> str:
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {}
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is needed for the tests (make test installs it)"
    files["speech"] = str(root / "speech.wav")
    subprocess.run([espeak, "-v", "en-us", "-s", "160", "-w", files["speech"], SPEECH], check=True)
    rate = 22050
    t = np.arange(int(1.5 * rate)) / rate
    # "aba" from espeak's phoneme input: a voiced closure between two open vowels, in the digital
    # silence synthesised narrations have.
    files["aba"] = str(root / "aba.wav")
    subprocess.run([espeak, "-v", "en-us", "-s", "140", "-w", files["aba"], "[[A:bA:]]"], check=True)
    files["silence"] = write_wav(str(root / "silence.wav"), np.zeros(int(2.0 * rate)), rate)
    files["tone"] = write_wav(str(root / "tone.wav"), 0.4 * np.sin(2 * np.pi * 440 * t), rate)
    files["empty"] = write_wav(str(root / "empty.wav"), np.zeros(0), rate)
    # Speech, two seconds of silence, speech: the pause must show a closed mouth.
    _, speech = wavfile.read(files["speech"])
    pause = np.concatenate([speech, np.zeros(2 * rate, np.int16), speech])
    files["pause"] = str(root / "pause.wav")
    wavfile.write(files["pause"], rate, pause)
    files["mp3"] = transcode_audio(files["speech"], str(root / "speech.mp3"), "libmp3lame", 44100, "stereo")
    files["m4a"] = transcode_audio(files["speech"], str(root / "speech.m4a"), "aac", 48000, "stereo")
    files["ogg"] = transcode_audio(files["speech"], str(root / "speech.ogg"), "libopus", 48000)
    files["flac"] = transcode_audio(files["speech"], str(root / "speech.flac"), "flac", 44100, "stereo")
    files["text"] = str(root / "notes.mp4")
    with open(files["text"], "w") as handle:
        handle.write("this is not a video\n" * 20)

    portrait = cv2.imread(DEMO_PORTRAIT)
    files["portrait"] = DEMO_PORTRAIT
    small = cv2.resize(portrait, (320, 320), interpolation=cv2.INTER_AREA)
    tracker = FaceTracker()
    points = tracker(small)[0]
    tracker.close()
    clip = [frame for frame, _ in idle_frames(small, points, 25.0, 40)]  # 1.6 s with a blink
    files["h264"] = write_video(str(root / "clip_h264.mp4"), clip, 25.0)
    files["hevc"] = write_video(str(root / "clip_hevc.mp4"), clip, 25.0, "libx265")
    files["mpeg4"] = write_video(str(root / "clip_mpeg4.avi"), clip, 25.0, "mpeg4")
    files["fps60"] = write_video(str(root / "clip_60.mp4"), clip[:30], 60.0)
    # Variable frame rate: frames at uneven times (~30 fps on average).
    times = np.cumsum(np.where(np.arange(40) % 3 == 0, 50, 25)) - 25
    files["vfr"] = write_video(str(root / "clip_vfr.mp4"), clip, 30.0, pts=[int(x) for x in times])
    tall = [cv2.copyMakeBorder(f, 120, 120, 0, 0, cv2.BORDER_REPLICATE) for f in clip[:20]]
    files["tall"] = write_video(str(root / "clip_tall.mp4"), tall, 25.0)
    # A phone video: frames stored sideways, shown upright by its display rotation.
    sideways = write_video(str(root / "sideways.mp4"), [cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in tall], 25.0)
    files["rotated"] = str(root / "clip_rotated.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i", sideways,
                    "-c", "copy", files["rotated"]], check=True)
    rng = np.random.default_rng(0)
    noise = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 4) for _ in range(10)]
    files["noface"] = write_video(str(root / "noface.mp4"), noise, 25.0)
    # A close-up that fills the frame (the full-range detector misses these).
    low, high = points.min(axis=0) / 320 * 512, points.max(axis=0) / 320 * 512
    (cx, cy), half = (low + high) / 2, (high - low).max() / 2
    closeup = portrait[int(max(0, cy - half)):int(cy + half), int(max(0, cx - half)):int(cx + half)]
    files["closeup"] = str(root / "closeup.png")
    cv2.imwrite(files["closeup"], cv2.resize(closeup, (360, 360)))
    pair = np.full((400, 720, 3), 90, np.uint8)
    pair[10:390, 10:390] = cv2.resize(portrait, (380, 380))
    pair[70:330, 440:700] = cv2.resize(portrait, (260, 260))
    files["twofaces"] = str(root / "twofaces.png")
    cv2.imwrite(files["twofaces"], pair)
    return files


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    path = str(tmp_path / "cache")
    monkeypatch.setenv("HEYGEM_CACHE_DIR", path)
    return path


@pytest.fixture(scope="session", autouse=True)
def quiet_logs():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def files(media, tmp_path_factory):
    """The media fixtures served over HTTP on 127.0.0.1: {name: url}, plus `allow`, the server's
    host:port for HEYGEM_ALLOWED_HOSTS."""
    root = tmp_path_factory.mktemp("served")
    for name, path in media.items():
        if os.path.isfile(path):
            os.symlink(path, root / (name + os.path.splitext(path)[1]))
    with open(root / "big.mp4", "wb") as handle:
        handle.write(os.urandom(3 * 2**20))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(FilesHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    urls = {name: base + name + os.path.splitext(path)[1] for name, path in media.items() if os.path.isfile(path)}
    urls.update(big=base + "big.mp4", redirect=base + "redirect-internal", base=base,
                allow=f"127.0.0.1:{server.server_port}")
    yield urls
    server.shutdown()


@pytest.fixture()
def live(tmp_path, monkeypatch):
    """A factory of live services (same server as `heygem serve`), closed after the test."""
    monkeypatch.setenv("HEYGEM_CACHE_DIR", str(tmp_path / "cache"))
    started: list[LiveServer] = []

    def start(files=None, start_workers=True, port=0, **overrides) -> LiveServer:
        started.append(LiveServer(make_settings(tmp_path, files, **overrides), start_workers, port))
        return started[-1]
    yield start
    for server in started:
        server.close()
