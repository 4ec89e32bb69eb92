"""The embedded engine: renders on this machine's CPU, in the worker's thread."""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import engine
from engine import EngineError

from .. import paths
from ..storage import StorageError
from . import EngineFailed, EngineMetrics, Health, RenderTask

log = logging.getLogger("heygem.engine")

NARRATIONS_KEPT = 4  # analysed narrations kept for the next items of their jobs


def engine_message(exc: EngineError, names: dict[str, str]) -> str:
    """An engine error as its user should read it. The engine names a file by its base name
    (`source: no face found ...`); say instead what the user sent (the URL, their file's name)."""
    text = str(exc)
    for path, name in names.items():
        base = os.path.basename(path)
        if text.startswith(base + ":"):
            return name + text[len(base):]
    return text


class Embedded:
    name = "embedded"
    url = ""

    def __init__(self, settings, metrics: EngineMetrics, shared):
        self.settings, self.metrics, self.shared = settings, metrics, shared
        metrics.up.set(1)
        # A few jobs' analysed narrations, or why one could not be analysed (not tried again for
        # every item).
        self.narrations: OrderedDict[str, engine.AudioTrack | EngineError] = OrderedDict()
        self.lock = threading.Lock()

    def _narration(self, path: str) -> engine.AudioTrack:
        with self.lock:
            known = self.narrations.get(path)
            if known is not None:
                self.narrations.move_to_end(path)
        if known is None:
            try:
                known = engine.analyse_audio(path, self.settings.engine_limits)
            except EngineError as exc:
                known = exc
            with self.lock:
                self.narrations[path] = known
                while len(self.narrations) > NARRATIONS_KEPT:
                    self.narrations.popitem(last=False)
        if isinstance(known, EngineError):
            raise known
        return known

    def render(self, task: RenderTask) -> None:
        cache_dir = paths.template_cache(self.settings)
        try:
            audio = self._narration(task.narration)
            task.report("analysing face", 0, 0)
            analysis, fetched = self._shared_analysis(task.template, cache_dir)
            engine.render(audio, task.template, task.output,
                          on_progress=lambda done, total: task.report("rendering", done, total),
                          cache_dir=cache_dir, limits=self.settings.engine_limits)
        except EngineError as exc:
            raise EngineFailed(engine_message(exc, task.names)) from exc
        if analysis and not fetched and os.path.exists(analysis):
            self._share(analysis)

    def _shared_analysis(self, template: str, cache_dir: str) -> tuple[str | None, bool]:
        """(the template's analysis file, whether another machine had made it): with workers on
        several machines a template is analysed once, by the first (HEYGEM_QUEUE=celery)."""
        if not self.shared.active:
            return None, False
        analysis = engine.analysis_file(template, cache_dir)
        try:
            return analysis, self.shared.fetch(analysis)
        except StorageError as exc:
            log.warning("template analysis not fetched; analysing here", extra={"event": "storage", "error": str(exc)})
            return analysis, False

    def _share(self, analysis: str) -> None:
        try:
            self.shared.publish(analysis)
        except StorageError as exc:  # the next worker analyses it again; nothing is lost
            log.warning("template analysis not shared", extra={"event": "storage", "error": str(exc)})

    def health(self) -> Health:
        return Health(True, "renders on this machine's CPU")
