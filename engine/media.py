"""Media I/O on PyAV (its wheels carry FFmpeg with libx264 and AAC).

Templates are read as constant-rate frame sequences with exact indices, so a frame index means the
same picture in the analysis pass, in every render and in the evaluation. Nothing here holds more
than a bounded chunk of frames.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import AudioError, MediaError

ANALYSIS_RATE = 16000
# Containers read: self-contained ones only. Playlists and lists (HLS, DASH, ffconcat, ...) name
# other files or URLs, which FFmpeg would open on the reader's behalf; nested protocols too.
# (Raw H.264/HEVC streams are left out too: they have no timestamps.)
DEMUXERS = ("mov,matroska,avi,mpegts,mpeg,flv,asf,yuv4mpegpipe,gif,apng,webp_pipe,"
            "wav,w64,aiff,caf,mp3,ogg,flac,aac,amr,ac3,eac3")
# A phone video has a few (video, sound, metadata); a file with more is not a template.
MAX_STREAMS = 16
# Templates are read at most this many frames a second (a 120 or 240 fps clip is resampled):
# the work per second of template stays bounded, and presenter videos gain nothing above it.
MAX_FPS = 60.0
# Below this a recording cannot hold speech; a 1 Hz "narration" would only make the resampler
# build a huge buffer.
MIN_SAMPLE_RATE = 4000
STANDARD_RATES = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 50.0, 60000 / 1001, 60.0)
# Frames buffered to play a stretch of the template backwards (ping-pong looping).
REVERSE_CHUNK_BYTES = 192 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What the engine agrees to decode. A file beyond them is refused from its header, before a
    picture is decoded, and decoding stops where a header lied: a small file can declare a huge
    picture or hours of sound (a decompression bomb)."""

    max_pixels: int = 4096 * 4096          # per picture; 4K UHD is 8.3 MP
    max_template_seconds: float = 600.0
    max_audio_seconds: float = 30 * 60.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float
    is_image: bool


def _reason(exc: Exception) -> str:
    """What went wrong, without the file's path (messages go to users; paths are the server's)."""
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def _open(path: str, limits: Limits = DEFAULT_LIMITS) -> av.container.InputContainer:
    try:
        # Probing decodes a few frames of every stream; it needs none (sizes and rates are in the
        # headers, and frames are decoded later with their own limit), and a file may hold
        # dozens of large streams.
        return av.open(path, options={"max_pixels": str(limits.max_pixels), "skip_frame": "all",
                                      "max_streams": str(MAX_STREAMS), "format_whitelist": DEMUXERS,
                                      "protocol_whitelist": "file"})
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{os.path.basename(path)}: not a readable media file ({_reason(exc)}); "
                         "send a video, picture or sound file (not a playlist)") from exc


def _video_stream(container: av.container.InputContainer, limits: Limits) -> av.video.stream.VideoStream:
    """The first video stream, its decoder refusing any frame over the pixel limit before
    allocating it (a header speaks only for the first frame)."""
    stream = container.streams.video[0]
    stream.codec_context.options = {"max_pixels": str(limits.max_pixels)}
    return stream


def _check_pixels(path: str, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise MediaError(f"{os.path.basename(path)}: the picture is {width}x{height} pixels "
                         f"({width * height / 1e6:.3g} MP); up to {limits.max_pixels / 1e6:.3g} MP is accepted, "
                         "such as 3840x2160 (4K)")


def _image_size(path: str, limits: Limits) -> tuple[int, int] | None:
    """(width, height) from a still image's header, without decoding it; None if it is no image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:  # Pillow's own ceiling (179 MP), far above any sane limit
        raise MediaError(f"{os.path.basename(path)}: the picture is over 179 MP; up to "
                         f"{limits.max_pixels / 1e6:.3g} MP is accepted, such as 3840x2160 (4K)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def read_image(path: str, limits: Limits = DEFAULT_LIMITS) -> np.ndarray | None:
    """The still image at `path` (BGR), or None when it is not a still image. Its size is checked
    from the header before it is decoded."""
    size = _image_size(path, limits)
    if size is None:
        return None
    _check_pixels(path, *size, limits)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def probe_video(path: str, limits: Limits = DEFAULT_LIMITS) -> VideoInfo:
    image = read_image(path, limits)
    if image is not None:
        return VideoInfo(image.shape[1], image.shape[0], 25.0, 0.0, True)
    with _open(path, limits) as container:
        if not container.streams.video:
            raise MediaError(f"{os.path.basename(path)}: has no video stream; a template must be a video or a portrait image")
        stream = _video_stream(container, limits)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        fps = float(rate)
        if not 1.0 <= fps <= 1000.0:
            fps = 25.0
        # A variable-rate (phone) video averages near a standard rate: use that rate.
        nearest = min(STANDARD_RATES, key=lambda r: abs(r - fps))
        if abs(nearest - fps) / nearest < 0.02:
            fps = nearest
        fps = min(fps, MAX_FPS)
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise MediaError(f"{os.path.basename(path)}: video stream has no picture size")
        _check_pixels(path, width, height, limits)
        if duration > limits.max_template_seconds:
            raise MediaError(f"{os.path.basename(path)}: the video lasts {duration / 60:.1f} min; templates up to "
                             f"{limits.max_template_seconds / 60:g} min are accepted (a short clip loops under "
                             "any narration)")
        # A phone video stored sideways carries a display rotation: report the size it is shown at
        # (frames are turned upright when read).
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise MediaError(f"{os.path.basename(path)}: the video could not be decoded ({_reason(exc)}); frames "
                             f"over {limits.max_pixels / 1e6:.3g} MP are refused") from exc
        if first is not None and _quarter_turns(first) % 2:
            width, height = height, width
        return VideoInfo(width, height, fps, duration, False)


def _to_bgr(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        # OpenCV's SIMD conversion is several times faster than swscale's and matches it within a
        # level; full-range, 4:2:2, 10-bit and odd-sized pictures take swscale's general path.
        image = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    else:
        image = frame.to_ndarray(format="bgr24")
    # Phone videos carry a display rotation; show the picture upright, as players do.
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show the frame upright."""
    return int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4


def read_frames(path: str, fps: float, start: int = 0, stop: int | None = None,
                limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[int, np.ndarray]]:
    """Frames `start`..`stop`-1 of a video resampled to a constant `fps`.

    Slot k shows the source frame whose timestamp rounds to k (the last one wins; gaps repeat the
    previous frame), so variable-frame-rate sources come out evenly spaced. Every frame must have
    the first one's size, within `limits` (the header speaks only for the first).
    """
    container = _open(path, limits)
    name = os.path.basename(path)
    size = None
    try:
        stream = _video_stream(container, limits)
        stream.thread_type = "AUTO"
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if start > 0:
            target = max(0.0, start / fps - 1.0) + t0
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        next_slot = start
        pending: av.VideoFrame | None = None
        pending_slot = -1
        for frame in container.decode(stream):
            if size is None:
                size = (frame.width, frame.height)
            elif (frame.width, frame.height) != size:
                raise MediaError(f"{name}: the picture size changes from {size[0]}x{size[1]} to "
                                 f"{frame.width}x{frame.height} mid-video; re-encode it at one size")
            if frame.pts is None:
                continue
            slot = int(round((float(frame.pts * stream.time_base) - t0) * fps))
            if pending is not None and slot > pending_slot:
                # `pending` fills every slot up to the one this frame takes.
                end = slot if stop is None else min(slot, stop)
                if next_slot < end:
                    image = _to_bgr(pending)
                    for index in range(next_slot, end):  # repeats are copies: frames are edited in place
                        yield index, image if index == next_slot else image.copy()
                    next_slot = end
                if stop is not None and next_slot >= stop:
                    return
            if slot >= pending_slot:
                pending, pending_slot = frame, slot
        if pending is not None:
            end = max(pending_slot + 1, next_slot) if stop is None else stop
            if next_slot < end:
                image = _to_bgr(pending)
                for index in range(next_slot, end):
                    yield index, image if index == next_slot else image.copy()
    except av.FFmpegError as exc:
        raise MediaError(f"{name}: the video could not be decoded ({_reason(exc)}); frames over "
                         f"{limits.max_pixels / 1e6:.3g} MP are refused") from exc
    finally:
        container.close()


def loop_index(k: int, n: int) -> int:
    """Template frame shown at output frame k: forward, then backward, and so on (no jump cut)."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    m = k % period
    return m if m < n else period - m


def _unreadable(path: str, frame: int) -> MediaError:
    return MediaError(f"{os.path.basename(path)}: the video could not be read again from frame {frame} (it ends "
                      "early or its index is broken); re-encode it, e.g. as MP4")


def looped_frames(path: str, fps: float, n: int, count: int, frame_bytes: int,
                  limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[int, np.ndarray]]:
    """`count` frames of an n-frame video played forward-backward, as (template index, frame).

    The backward pass starts with the frames the forward pass just decoded (their copies are
    kept, within the same memory budget), then reads further chunks forwards and reverses them;
    a short template looped under a long narration is then mostly decoded once per cycle."""
    chunk = max(4, REVERSE_CHUNK_BYTES // max(frame_bytes, 1))
    k = 0
    tail: list[tuple[int, np.ndarray]] = []  # the forward pass's last frames, for the way back
    while k < count:
        first = loop_index(k, n)
        forward = n == 1 or (k % (2 * n - 2)) < n - 1
        if forward:
            stop = min(n, first + (count - k))
            turns = n > 1 and stop == n and k + (stop - first) < count
            started = k
            for index, image in read_frames(path, fps, first, stop, limits):
                if turns and 0 < index < n - 1 and index >= n - 1 - chunk:
                    tail.append((index, image.copy()))  # the renderer edits the yielded frame
                yield index, image
                k += 1
            if k - started < stop - first:  # the file had fewer frames than analysed
                raise _unreadable(path, first)
        else:
            # Backward from `first` down to 1: the kept tail, then chunks read forwards, reversed.
            low = max(1, first - (count - k) + 1)
            high = first + 1
            while high > low and k < count:
                if tail and tail[-1][0] == high - 1:
                    frames, tail = tail, []
                    begin = frames[0][0]
                else:
                    begin = max(low, high - chunk)
                    frames = list(read_frames(path, fps, begin, high, limits))
                    if len(frames) < high - begin:  # a seek found no frames there (a broken index)
                        raise _unreadable(path, begin)
                for index, image in reversed(frames):
                    yield index, image
                    k += 1
                    if k >= count:
                        return
                high = begin
            tail = []


def load_pcm(path: str, rate: int = ANALYSIS_RATE, max_seconds: float | None = None) -> np.ndarray:
    """The narration as mono float32 samples at `rate`. Past `max_seconds` (whatever the header
    says) decoding stops with an AudioError."""
    container = _open(path)
    name = os.path.basename(path)
    try:
        if not container.streams.audio:
            raise MediaError(f"{name}: has no audio stream; the narration must be an audio file")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks, seconds = [], 0.0
        for frame in container.decode(stream):
            # Judged before resampling: a long block at a tiny rate would become a huge buffer.
            if frame.sample_rate < MIN_SAMPLE_RATE:
                raise MediaError(f"{name}: the sound is sampled at {frame.sample_rate} Hz; a narration needs "
                                 f"at least {MIN_SAMPLE_RATE // 1000} kHz")
            seconds += frame.samples / frame.sample_rate
            if max_seconds is not None and seconds > max_seconds:
                raise AudioError(f"{name}: the narration lasts over {max_seconds / 60:g} min, the limit; "
                                 "split it into shorter parts")
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise MediaError(f"{name}: the audio could not be decoded ({_reason(exc)})") from exc
    finally:
        container.close()
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


class VideoWriter:
    """H.264 (yuv420p) + AAC in an MP4 with the index up front, written to `path` atomically.

    The narration is muxed as the frames arrive, so audio and video stay interleaved for
    progressive playback; the output lasts exactly `duration` seconds of audio.
    """

    def __init__(self, path: str, width: int, height: int, fps: float, audio_path: str, duration: float,
                 crf: int = 18, preset: str = "veryfast"):
        self.path = path
        self.tmp_path = path + ".part"
        self.size = (width - width % 2, height - height % 2)  # yuv420p needs even sides
        self.duration = duration
        self.out = av.open(self.tmp_path, "w", format="mp4", options={"movflags": "+faststart"})
        self.video = self.out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.video.width, self.video.height = self.size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": preset}
        self.video.codec_context.thread_type = "FRAME"  # as the ffmpeg command line runs x264
        self.fps = fps
        self.frames_written = 0
        self.audio_in = _open(audio_path)
        source = self.audio_in.streams.audio[0]
        layout = "mono" if source.channels == 1 else "stereo"
        rate = source.rate if source.rate in (16000, 22050, 24000, 32000, 44100, 48000) else 48000
        self.audio = self.out.add_stream("aac", rate=rate, layout=layout)
        self.audio.bit_rate = 128000
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.audio_frames = self.audio_in.decode(source)
        self.audio_samples = 0
        self.audio_total = int(round(duration * rate))
        self.audio_rate = rate

    def _pump_audio(self, until_seconds: float) -> None:
        limit = min(self.audio_total, int(until_seconds * self.audio_rate))
        while self.audio_samples < limit:
            frame = next(self.audio_frames, None)
            converted = self.resampler.resample(frame)
            for out in converted:
                keep = min(out.samples, self.audio_total - self.audio_samples)
                if keep <= 0:
                    break
                if keep < out.samples:
                    data = out.to_ndarray()[:, :keep]
                    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=out.layout.name)
                    out.sample_rate = self.audio_rate
                # Timestamps in samples: the decoder's time base (an MP3's is 1/14112000) would
                # make them collide after rescaling.
                out.pts, out.time_base = self.audio_samples, Fraction(1, self.audio_rate)
                self.audio_samples += keep
                self.out.mux(self.audio.encode(out))
            if frame is None:
                break

    def write(self, image: np.ndarray) -> None:
        width, height = self.size
        if image.shape[1] != width or image.shape[0] != height:
            image = image[:height, :width]
        # The inverse of the decoder's conversion (see _to_bgr): untouched pixels come back exact.
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts = self.frames_written
        self.out.mux(self.video.encode(frame))
        self.frames_written += 1
        self._pump_audio(self.frames_written / self.fps + 0.5)

    def close(self) -> None:
        self._pump_audio(self.duration + 1.0)
        self.out.mux(self.video.encode(None))
        self.out.mux(self.audio.encode(None))
        self.out.close()
        self.audio_in.close()
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        for container in (self.out, self.audio_in):
            try:
                container.close()
            except Exception:  # noqa: BLE001 - already failing; the original error matters
                pass
        if os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)
