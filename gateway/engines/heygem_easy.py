"""A Duix.Heygem video service (guiji2025/heygem.ai, port 8383) as the engine, through its own
API: POST /easy/submit {audio_url, video_url, code, ...}, GET /easy/query?code=.

What its users run into, and what is done about it here:
- It runs one task at a time and answers 10001 (busy) to the next: the item waits and tries
  again (with backoff), it does not fail.
- It forgets a task once its end has been reported, and all of them when it restarts (10004): a
  task whose result file is there is taken; one that is not is sent again (a few times at most).
- A task can sit at the same progress forever: after HEYGEM_ENGINE_STALL_SECONDS without
  movement the item fails with that said.
- Its failures are terse ("multiple faces", ffmpeg's format errors): they are put in words the
  user can act on.
- It has no cancel: a canceled item stops waiting and its result is thrown away.

Inputs reach it through a folder both machines see (HEYGEM_ENGINE_SHARED_DIR, which it has at
/code/data: files go to temp/ and are named by file name), or else by short signed links that
this gateway serves; its result is read from that folder, or fetched from HEYGEM_ENGINE_RESULT_URL.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import time

from urllib3.exceptions import HTTPError

from ..fetch import FetchLimits, fetch
from ..urlpolicy import OutboundError, describe
from . import CachedHealth, EngineFailed, EngineMetrics, Health, RenderTask, extension, place_output

log = logging.getLogger("heygem.engine")
DATA_ROOT = "/code/data"   # where the HeyGem container keeps its files
# The protocol's answer codes and task states (gateway/easy.py serves the same protocol).
OK, FAILURE, BUSY, BAD_PARAMETER, LOCKED, NO_TASK = 10000, 9999, 10001, 10002, 10003, 10004
RUNNING, DONE, FAILED = 1, 2, 3
PROBE_CODE = "heygem-gateway-health"
MAX_ANSWER = 1 << 20
# Its failure messages, and what the user can do about each.
EXPLAINED = [
    (re.compile(r"multi\w*\s*face|more than one face|多(个|張|张)?人脸", re.I),
     "the template shows more than one face; HeyGem needs a video with exactly one face in every frame"),
    (re.compile(r"no face|not? (detect|find)\w* (a |any )?face|未检测到人脸|没有人脸|无人脸", re.I),
     "HeyGem found no face in the template; use a video where one face looks at the camera"),
    (re.compile(r"no such file|not exist|does not exist|不存在|invalid data found|could not find codec|"
                r"moov atom|format|decode|ffmpeg", re.I),
     "HeyGem could not read the narration or the template; send a common audio file (WAV, MP3, M4A) and an "
     "MP4 video"),
]


def explain(message: str) -> str:
    message = (message or "").strip()[:300] or "no reason given"
    for pattern, advice in EXPLAINED:
        if pattern.search(message):
            return f"{advice} (HeyGem said: {message})"
    return f"HeyGem could not make this video (it said: {message})"


class Unreachable(Exception):
    """No usable answer from the service (refused, timed out, 5xx, not its JSON)."""


class HeygemEasy:
    name = "heygem-easy"

    def __init__(self, settings, policy, links, metrics: EngineMetrics):
        self.settings, self.policy, self.links, self.metrics = settings, policy, links, metrics
        self.url = settings.engine_url.rstrip("/")
        self.shared = settings.engine_shared_dir
        self.health = CachedHealth(self._probe, metrics)

    # the service's API ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            with self.policy.open(method, self.url + path, headers=headers, timeout=30.0, connect_timeout=5.0,
                                  body=json.dumps(body).encode() if body is not None else None,
                                  deadline=60.0) as response:
                raw = response.read(MAX_ANSWER + 1)
                status = response.status
        except (OutboundError, HTTPError, OSError) as exc:
            raise Unreachable(describe(exc)) from exc
        if status >= 500 or status in (404, 405):
            raise Unreachable(f"HTTP {status}")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise Unreachable(f"HTTP {status}, not HeyGem's JSON answer") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise Unreachable(f"HTTP {status}, an answer without a code")
        return answer

    def _probe(self) -> Health:
        try:
            answer = self._call("GET", f"/easy/query?code={PROBE_CODE}")
        except Unreachable as exc:
            return Health(False, f"{self.url}: {exc}")
        return Health(True, f"{self.url} answers (code {answer['code']})")

    # files ------------------------------------------------------------------------------------------

    def _stage(self, task: RenderTask) -> tuple[str, str]:
        """(audio_url, video_url) as the service takes them."""
        names = {"audio": f"{task.code}-audio{extension(task.narration, '.wav')}",
                 "video": f"{task.code}-video{extension(task.template, '.mp4')}"}
        if self.shared:
            temp = os.path.join(self.shared, "temp")
            os.makedirs(temp, exist_ok=True)
            for kind, source in (("audio", task.narration), ("video", task.template)):
                target = os.path.join(temp, names[kind])
                if not os.path.exists(target):
                    shutil.copyfile(source, target + ".part")
                    os.replace(target + ".part", target)
            return names["audio"], names["video"]
        ttl = self.settings.engine_input_link_ttl
        return (self.links.engine_input(task.narration, names["audio"], ttl),
                self.links.engine_input(task.template, names["video"], ttl))

    def _result_name(self, task: RenderTask, result: str | None) -> str:
        """The result's path under /code/data (the service names it; <code>-r.mp4 in temp/ if not)."""
        name = result if isinstance(result, str) and result.strip() else f"temp/{task.code}-r.mp4"
        name = name.strip().removeprefix(DATA_ROOT).lstrip("/")
        if not name.startswith("temp/") and "/" not in name:
            name = "temp/" + name
        if ".." in name.split("/"):
            raise EngineFailed(f"HeyGem named its result {result!r}, which is outside its data folder")
        return name

    def _take_result(self, task: RenderTask, result: str | None) -> bool:
        """Copy the finished video to the item's output; False if it is not there."""
        name = self._result_name(task, result)
        if self.shared:
            path = os.path.join(self.shared, name)
            # Only a regular file inside the shared folder: a link there could name any file of ours.
            if os.path.islink(path) or os.path.commonpath([os.path.realpath(path), os.path.realpath(self.shared)]) \
                    != os.path.realpath(self.shared):
                raise EngineFailed(f"HeyGem's result {name} is a link or lies outside its data folder; not taken")
            if not os.path.isfile(path):
                return False
            place_output(path, task.output)
            os.remove(path)
            return True
        os.makedirs(os.path.dirname(task.output), exist_ok=True)
        try:  # atomically: an output appears whole
            fetch(self.policy, f"{self.settings.engine_result_url.rstrip('/')}/{name}", task.output,
                  FetchLimits.from_settings(self.settings))
        except OutboundError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise Unreachable(str(exc)) from exc
        return True

    # one item ---------------------------------------------------------------------------------------

    def _unstage(self, task: RenderTask) -> None:
        """Remove the inputs staged in the shared folder, once the task has ended on HeyGem's side
        (not before: it reads them while it renders, also after we stop waiting)."""
        if self.shared:
            for kind in ("audio", "video"):
                for path in glob.glob(os.path.join(self.shared, "temp", f"{glob.escape(task.code)}-{kind}.*")):
                    os.remove(path)

    def render(self, task: RenderTask) -> None:
        settings = self.settings
        submitted = resubmits = 0
        progress, moved = -1, time.monotonic()
        answered = time.monotonic()
        wait = settings.engine_poll_seconds
        stage = "sending to HeyGem"
        while True:
            task.report(stage, max(progress, 0), 100)
            try:
                answer = self._call("GET", f"/easy/query?code={task.code}")
                answered = time.monotonic()
                code, data = answer["code"], answer.get("data") or {}
                if code == NO_TASK or (code == OK and not data):
                    # Not known (never sent, or forgotten after its end or a restart of the service).
                    if self._take_result(task, None):
                        return self._unstage(task)
                    if submitted:
                        resubmits += 1
                        self.metrics.resubmits.inc()
                        if resubmits > settings.engine_max_resubmits:
                            raise EngineFailed(f"HeyGem lost this task {resubmits} times (it restarted while "
                                               "rendering?); submit the job again")
                        log.info("resubmitting a task HeyGem forgot", extra={"event": "engine", "code": task.code})
                    audio, video = self._stage(task)
                    sent = self._call("POST", "/easy/submit", {
                        "audio_url": audio, "video_url": video, "code": task.code,
                        "chaofen": 0, "watermark_switch": 0, "pn": 1})
                    if sent["code"] in (BUSY, LOCKED):
                        self.metrics.busy.inc()
                        stage = "waiting for HeyGem (it is busy with another video)"
                        wait = min(wait * 1.5, settings.engine_poll_max_seconds)
                        time.sleep(wait)
                        continue
                    if sent["code"] != OK:
                        raise EngineFailed(explain(str(sent.get("msg", ""))) if sent["code"] != BAD_PARAMETER else
                                           f"HeyGem refused the task: {str(sent.get('msg', ''))[:300]}")
                    submitted += 1
                    stage, progress, moved, wait = "rendering on HeyGem", 0, time.monotonic(), settings.engine_poll_seconds
                elif code != OK:
                    raise Unreachable(f"code {code}: {str(answer.get('msg', ''))[:200]}")
                elif data.get("status") == DONE:
                    task.report("fetching the result from HeyGem", 100, 100)
                    if self._take_result(task, data.get("result")):
                        return self._unstage(task)
                    raise EngineFailed("HeyGem reported the video done but its file "
                                       f"{self._result_name(task, data.get('result'))} is not there")
                elif data.get("status") == FAILED:
                    self._unstage(task)
                    raise EngineFailed(explain(str(data.get("msg", ""))))
                else:
                    # Running (someone's: after a restart of the gateway, ours is found again here).
                    submitted = submitted or 1
                    now = float(data.get("progress") or 0)
                    if now != progress:
                        progress, moved = now, time.monotonic()
                        wait = settings.engine_poll_seconds
                    elif time.monotonic() - moved > settings.engine_stall_seconds:
                        raise EngineFailed(f"HeyGem made no progress for {settings.engine_stall_seconds / 60:g} min "
                                           f"(stuck at {progress:g}%); restart its container and submit the job again")
                    stage = "rendering on HeyGem"
            except Unreachable as exc:
                if time.monotonic() - answered > settings.engine_unreachable_seconds:
                    raise EngineFailed(f"the HeyGem engine at {self.url} has not answered for "
                                       f"{settings.engine_unreachable_seconds / 60:g} min ({exc})") from exc
                stage = f"waiting for HeyGem to answer ({exc})"
            time.sleep(wait)
            wait = min(wait * 1.5, settings.engine_poll_max_seconds)
