"""A HeyGem WebUI built on Gradio as the engine, driven with gradio_client: the synthesis function
(HEYGEM_ENGINE_API_NAME, `/predict` for a gr.Interface) is called with the narration and the
template as uploaded files, in the order HEYGEM_ENGINE_ARGS gives, and returns the video.

Gradio queues calls itself; a call lost to a restart of the app is sent again (a few times at
most), an app that does not answer for HEYGEM_ENGINE_UNREACHABLE_SECONDS fails the item, and a
cancel cancels the call."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from urllib.parse import urljoin

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from engine.media import probe_video
from engine.errors import EngineError

from ..urlpolicy import OutboundError, describe
from . import CachedHealth, Canceled, EngineFailed, EngineMetrics, Health, RenderTask, extension, place_output

log = logging.getLogger("heygem.engine")


def _video_in(result) -> str | None:
    """The file path in what a Gradio function returned: a path, a Video's {"video": path}, a
    FileData-like {"path": ...}, or the first of several outputs that is one of these."""
    if isinstance(result, str):
        return result if os.path.isfile(result) else None
    if isinstance(result, dict):
        for key in ("video", "path", "name", "value"):
            found = _video_in(result.get(key))
            if found:
                return found
        return None
    if isinstance(result, (list, tuple)):
        return next(filter(None, map(_video_in, result)), None)
    return None


class GradioApp:
    name = "gradio"

    def __init__(self, settings, policy, metrics: EngineMetrics):
        self.settings, self.policy, self.metrics = settings, policy, metrics
        self.url = settings.engine_url.rstrip("/") + "/"
        self.api_name = settings.engine_api_name
        self.args = [a.strip() for a in settings.engine_args.split(",")]
        self.health = CachedHealth(self._probe, metrics)

    def _probe(self) -> Health:
        try:
            with self.policy.open("GET", urljoin(self.url, "config"), timeout=5.0, connect_timeout=5.0,
                                  deadline=10.0) as answer:
                status = answer.status
        except (OutboundError, OSError) as exc:
            return Health(False, f"{self.url}: {describe(exc)}")
        if status != 200:
            return Health(False, f"{self.url}: HTTP {status}")
        return Health(True, f"{self.url} answers")

    def _arguments(self, narration: str, template: str) -> list:
        files = {"audio": narration, "video": template}
        return [handle_file(files[a]) if a in files else json.loads(a) for a in self.args]

    def render(self, task: RenderTask) -> None:
        os.makedirs(task.scratch, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f"gradio-{task.index}-", dir=task.scratch)
        try:
            # Gradio's components pick readers by the file's extension; ours are stored without one.
            narration = _linked(task.narration, os.path.join(work, "narration" + extension(task.narration, ".wav")))
            template = _linked(task.template, os.path.join(work, "template" + extension(task.template, ".mp4")))
            result = self._call(task, narration, template, os.path.join(work, "results"))
            try:
                probe_video(result)
            except EngineError as exc:
                raise EngineFailed(f"the Gradio app's {self.api_name} returned a file that is not a video ({exc})")
            place_output(result, task.output)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _call(self, task: RenderTask, narration: str, template: str, downloads: str) -> str:
        settings = self.settings
        answered, lost = time.monotonic(), 0
        wait = settings.engine_poll_seconds
        while True:
            task.report("sending to the Gradio app", 0, 0)
            try:
                client = Client(self.url, verbose=False, download_files=downloads, analytics_enabled=False)
            except Exception as exc:  # noqa: BLE001 - not reachable, not up yet, not a Gradio app
                if time.monotonic() - answered > settings.engine_unreachable_seconds:
                    raise EngineFailed(f"the Gradio app at {self.url} has not answered for "
                                       f"{settings.engine_unreachable_seconds / 60:g} min ({exc.__class__.__name__})") from exc
                task.report(f"waiting for the Gradio app to answer ({exc.__class__.__name__})", 0, 0)
                time.sleep(wait)
                wait = min(wait * 1.5, settings.engine_poll_max_seconds)
                continue
            try:
                try:
                    call = client.submit(*self._arguments(narration, template), api_name=self.api_name)
                except ValueError as exc:  # no such endpoint, or other arguments
                    raise EngineFailed(f"the Gradio app has no function {self.api_name!r} taking "
                                       f"{', '.join(self.args)} ({exc}); set HEYGEM_ENGINE_API_NAME and "
                                       "HEYGEM_ENGINE_ARGS") from exc
                while not call.done():
                    status = call.status()
                    answered = time.monotonic()
                    try:
                        task.report(*self._stage(status))
                    except Canceled:
                        call.cancel()
                        raise
                    time.sleep(settings.engine_poll_seconds)
                try:
                    result = call.result()
                except AppError as exc:
                    raise EngineFailed(f"the Gradio app could not make this video: {str(exc)[:300]}") from exc
                except Exception as exc:  # noqa: BLE001 - the call was lost (the app restarted)
                    lost += 1
                    self.metrics.resubmits.inc()
                    if lost > settings.engine_max_resubmits:
                        raise EngineFailed(f"the Gradio app lost this call {lost} times ({exc.__class__.__name__}: "
                                           f"{str(exc)[:200]}); submit the job again") from exc
                    log.info("resubmitting a call the Gradio app lost", extra={"event": "engine", "error": str(exc)[:200]})
                    time.sleep(wait)
                    continue
                found = _video_in(result)
                if not found:
                    raise EngineFailed(f"the Gradio app's {self.api_name} returned no video file "
                                       f"(it returned {str(result)[:200]})")
                return found
            finally:
                client.close()

    @staticmethod
    def _stage(status) -> tuple[str, int, int]:
        if status.code == Status.IN_QUEUE and status.rank is not None:
            return f"waiting in the Gradio app's queue (position {status.rank + 1})", 0, 0
        for unit in status.progress_data or []:
            if unit.length and unit.index is not None:
                return "rendering on the Gradio app", int(unit.index), int(unit.length)
            if unit.progress is not None:
                return "rendering on the Gradio app", int(100 * unit.progress), 100
        return "rendering on the Gradio app", 0, 0


def _linked(source: str, path: str) -> str:
    try:
        os.link(source, path)
    except OSError:  # another file system
        shutil.copyfile(source, path)
    return path
