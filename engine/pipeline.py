"""The engine's entry points: one narration, one or many templates, lip-synced MP4s out."""
from __future__ import annotations

import os
import queue
from collections import deque
from concurrent.futures import ThreadPoolExecutor
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .audio import AudioTrack, MouthTrack, analyse_audio
from .errors import EngineError
from .face import TemplateTrack, prepare_template
from .idle import idle_frames
from .media import DEFAULT_LIMITS, Limits, VideoWriter, loop_index, looped_frames, read_image
from .renderer import MouthRenderer

ProgressCallback = Callable[[int, int], None]
RENDER_THREADS = int(os.environ.get("HEYGEM_RENDER_THREADS", "2"))


@dataclass
class RenderResult:
    template: str
    output: str
    frames: int
    fps: float
    width: int
    height: int
    duration: float
    faces_max: int
    template_cached: bool
    timings: dict[str, float] = field(default_factory=dict)


def template_frames(track: TemplateTrack, count: int,
                    limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`count` template frames with their landmarks (NaN where no face): a video is played
    forward-backward as long as needed, a portrait gets idle motion."""
    info = track.info
    if info.is_image:
        yield from idle_frames(read_image(track.path, limits), track.points[0], info.fps, count)
        return
    frame_bytes = info.width * info.height * 3
    for index, image in looped_frames(track.path, info.fps, track.frame_count, count, frame_bytes, limits):
        yield image, track.points[index]


_DONE = object()


def _in_background(items: Iterator, depth: int = 4) -> Iterator:
    """Run an iterator on a thread, `depth` items ahead (decoding overlaps rendering; PyAV
    releases the GIL while it decodes)."""
    buffer: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            buffer.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _EncoderThread:
    """Feeds frames to a VideoWriter on its own thread, a few frames behind the renderer."""

    def __init__(self, writer: VideoWriter, depth: int = 4):
        self.writer = writer
        self.frames: queue.Queue = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while (image := self.frames.get()) is not None:
                if self.error is None:
                    self.writer.write(image)
        except BaseException as exc:  # reported on the next put or at finish
            self.error = exc
            while self.frames.get() is not None:
                pass

    def put(self, image: np.ndarray) -> None:
        if self.error:
            raise self.error
        self.frames.put(image)

    def finish(self) -> None:
        self.frames.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def _rendered(renderer: MouthRenderer, mouth: MouthTrack, frames: Iterator[tuple[np.ndarray, np.ndarray]],
              workers: int = RENDER_THREADS) -> Iterator[np.ndarray]:
    """Frames with their mouths re-posed, in order. Frames are independent, so a few render at
    once: OpenCV releases the GIL, and one thread alone leaves a core idle while x264 waits."""
    def one(k: int, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        if np.isnan(points[0, 0]):
            return image
        return renderer.render(image, points, renderer.target(float(mouth.openness[k])))

    with ThreadPoolExecutor(workers, thread_name_prefix="render") as pool:
        pending: deque = deque()
        try:
            for k, (image, points) in enumerate(_in_background(frames)):
                pending.append(pool.submit(one, k, image, points))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def template_index(track: TemplateTrack, k: int) -> int:
    """The template frame under output frame k (for evaluation against the template)."""
    return 0 if track.info.is_image else loop_index(k, track.frame_count)


def render(audio: AudioTrack | str, template: TemplateTrack | str, output: str,
           on_progress: ProgressCallback | None = None, cache_dir: str | None = None,
           limits: Limits = DEFAULT_LIMITS) -> RenderResult:
    """Render one (narration, template) pair to `output` (an MP4 written atomically).

    `on_progress(frames_done, frames_total)` is called as frames are encoded; raising from it
    stops the render and leaves no partial file. Files beyond `limits` are refused.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if isinstance(audio, str):
        audio = analyse_audio(audio, limits)
        timings["audio"] = time.perf_counter() - started
    if isinstance(template, str):
        mark = time.perf_counter()
        template = prepare_template(template, cache_dir=cache_dir, limits=limits)
        timings["face"] = time.perf_counter() - mark
    mark = time.perf_counter()
    info = template.info
    mouth = audio.at_fps(info.fps)
    total = len(mouth)
    renderer = MouthRenderer(template)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    writer = VideoWriter(output, info.width, info.height, info.fps, audio.path, audio.duration)
    encoder = _EncoderThread(writer)
    try:
        try:
            for k, image in enumerate(_rendered(renderer, mouth, template_frames(template, total, limits))):
                encoder.put(image)
                if on_progress and (k % 5 == 4 or k == total - 1):
                    on_progress(k + 1, total)
        finally:
            encoder.finish()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    timings["render"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    return RenderResult(template.path, output, total, info.fps, writer.size[0], writer.size[1], audio.duration,
                        template.faces_max, template.from_cache, timings)


def output_name(index: int) -> str:
    """The file name of a batch's `index`-th video (from 0): output_001.mp4, ..."""
    return f"output_{index + 1:03d}.mp4"


def render_batch(audio: str, templates: list[str], out_dir: str,
                 on_progress: Callable[[int, int, int], None] | None = None,
                 cache_dir: str | None = None) -> list[RenderResult | EngineError]:
    """One narration onto many templates; the narration is analysed once. A template that fails
    (no face, unreadable) yields its error in place and the others still render.
    `on_progress(template_index, frames_done, frames_total)`."""
    track = analyse_audio(audio)
    results: list[RenderResult | EngineError] = []
    for i, template in enumerate(templates):
        output = os.path.join(out_dir, output_name(i))
        report = (lambda done, total, i=i: on_progress(i, done, total)) if on_progress else None
        try:
            results.append(render(track, template, output, on_progress=report, cache_dir=cache_dir))
        except EngineError as exc:
            results.append(exc)
    return results
