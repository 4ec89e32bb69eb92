"""What renders an item: the embedded CPU engine, or a HeyGem installation the operator already
runs (its /easy video service or a Gradio WebUI). Every engine takes one `RenderTask` at a time
per worker thread and leaves the MP4 at `task.output`; jobs, queue, progress, cancel, storage and
callbacks in front of them are the same.

An engine raises `EngineFailed` with a message for the item's user, lets `Canceled` (raised by
`task.report` once the job is canceled) pass, and never leaves a partial output file."""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol

import av
from prometheus_client import Counter, Gauge

# The remote task's code is derived from the item, so that after a restart of the gateway the
# task is found again instead of being sent twice.
TASK_NAMESPACE = uuid.UUID("5b7c1d0e-8f43-4a55-9d4e-6a2f1c3b9e70")
HEALTH_TTL = 5.0  # seconds a health answer is reused (readiness probes and scrapes come often)


class EngineFailed(Exception):
    """The item fails with this message (written for whoever sent the job)."""


class Canceled(Exception):
    """The item's job was canceled: stop, keep nothing."""


@dataclass
class RenderTask:
    job_id: str
    index: int
    narration: str          # local files
    template: str
    output: str             # where the MP4 must appear, whole
    names: dict[str, str]   # local path -> what the user called it (for messages)
    scratch: str            # a folder for the engine's own temporary files (the job's work folder)
    # (stage, done, total): shown as the item's progress; raises Canceled once the job is canceled.
    report: Callable[[str, int, int], None]

    @property
    def code(self) -> str:
        return str(uuid.uuid5(TASK_NAMESPACE, f"{self.job_id}/{self.index}"))


@dataclass
class Health:
    reachable: bool
    detail: str = ""
    checked: float = field(default_factory=time.monotonic)


class Engine(Protocol):
    name: str
    url: str
    metrics: "EngineMetrics"

    def render(self, task: RenderTask) -> None: ...

    def health(self) -> Health: ...


class EngineMetrics:
    """Per-engine gauges and counters, labelled with the engine's name."""

    def __init__(self, registry, name: str, slots: int):
        labels = ["engine"]
        self.in_flight = 0
        self.lock = threading.Lock()
        self.in_flight_gauge = Gauge("heygem_engine_in_flight", "Items the engine is rendering now", labels,
                                     registry=registry).labels(name)
        Gauge("heygem_engine_slots", "Items sent to the engine at once (HEYGEM_WORKERS)", labels,
              registry=registry).labels(name).set(slots)
        self.up = Gauge("heygem_engine_up", "1 if the engine answered its last health check", labels,
                        registry=registry).labels(name)
        self.busy = Counter("heygem_engine_busy_answers", "Times a remote engine said it was busy", labels,
                            registry=registry).labels(name)
        self.resubmits = Counter("heygem_engine_resubmits", "Tasks sent again after the engine forgot them",
                                 labels, registry=registry).labels(name)


    @contextlib.contextmanager
    def rendering(self):
        with self.lock:
            self.in_flight += 1
            self.in_flight_gauge.set(self.in_flight)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1
                self.in_flight_gauge.set(self.in_flight)


class CachedHealth:
    """Runs a health check at most every HEALTH_TTL seconds."""

    def __init__(self, check: Callable[[], Health], metrics: EngineMetrics):
        self.check, self.metrics = check, metrics
        self.lock = threading.Lock()
        self.last: Health | None = None

    def __call__(self) -> Health:
        with self.lock:
            if self.last is None or time.monotonic() - self.last.checked > HEALTH_TTL:
                self.last = self.check()
                self.metrics.up.set(1 if self.last.reachable else 0)
            return self.last


# Container formats as PyAV names them -> the extension remote engines expect (they pick readers
# by name; our downloads are stored without one).
EXTENSIONS = {"mov": ".mp4", "mp4": ".mp4", "matroska": ".mkv", "webm": ".webm", "avi": ".avi", "wav": ".wav",
              "mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "aac": ".aac", "png_pipe": ".png",
              "jpeg_pipe": ".jpg", "webp_pipe": ".webp", "bmp_pipe": ".bmp", "image2": ".jpg"}


def extension(path: str, fallback: str) -> str:
    """The file's extension by its content (`fallback` when the container is not one we know)."""
    try:
        with av.open(path) as container:
            first = container.format.name.split(",")[0]
    except (av.FFmpegError, OSError):
        return fallback
    return EXTENSIONS.get(first, fallback)


def place_output(source: str, output: str) -> None:
    """Copy a finished video to `output` atomically (outputs appear whole: the watcher and a
    restart take any file there as finished)."""
    os.makedirs(os.path.dirname(output), exist_ok=True)
    partial = output + ".part"
    shutil.copyfile(source, partial)
    os.replace(partial, output)


def from_settings(settings, policy, links, registry, shared) -> Engine:
    """The engine the settings choose (HEYGEM_ENGINE)."""
    metrics = EngineMetrics(registry, settings.engine, settings.workers)
    if settings.engine == "heygem-easy":
        from .heygem_easy import HeygemEasy
        return HeygemEasy(settings, policy.with_servers(settings.engine_url, settings.engine_result_url), links, metrics)
    if settings.engine == "gradio":
        from .gradio_app import GradioApp
        return GradioApp(settings, policy.with_servers(settings.engine_url), metrics)
    from .embedded import Embedded
    return Embedded(settings, metrics, shared)
