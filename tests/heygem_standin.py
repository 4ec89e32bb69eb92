"""Stand-ins for HeyGem installations, for the tests: Duix.Heygem's video service (its /easy API,
faithfully: one task at a time, 10001 while busy, a finished task forgotten once reported, all
tasks forgotten on restart, results written to <data>/temp/<code>-r.mp4), a HeyGem Gradio WebUI
(a real `gradio` app in its own process), and the client code HeyGem's users write against the
/easy API (used on the stand-in and on the gateway's own /easy endpoints alike)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import av
import requests

from engine.media import VideoWriter, probe_video, read_frames

DATA_ROOT = "/code/data"


def write_result(template: str, audio: str, output: str) -> None:
    """A real MP4: the template's frames with the narration's sound (FFmpeg, through PyAV)."""
    with av.open(audio) as container:
        duration = container.duration / 1e6
    info = probe_video(template)
    frames = [image for _, image in read_frames(template, info.fps)]
    writer = VideoWriter(output, info.width, info.height, info.fps, audio, duration)
    try:
        for k in range(max(1, int(duration * info.fps))):
            writer.write(frames[k % len(frames)])
        writer.close()
    except BaseException:
        writer.abort()
        raise


class HeygemVideoService:
    """Duix.Heygem's video service on 127.0.0.1 (`url`), its data folder at `data` (what the
    container has at /code/data). `render_seconds` per task; controls: `fail_with` (the next task
    fails with this message), `occupy(seconds)` (another client's task holds it), `stall` (progress
    stops), `restart(down_seconds)` (forgets everything, refuses connections meanwhile)."""

    def __init__(self, data: str, render_seconds: float = 1.5, port: int = 0):
        self.data = data
        os.makedirs(os.path.join(data, "temp"), exist_ok=True)
        self.render_seconds = render_seconds
        self.tasks: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.running: str | None = None
        self.fail_with: str | None = None
        self.stall = False
        self.generation = 0
        self.submits: list[dict] = []
        self.busy_answers = 0
        self._serve(port)

    def _serve(self, port: int) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, answer: dict) -> None:
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                if self.path != "/easy/submit":
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._send(service.submit(body))

            def do_GET(self):
                parsed = urlparse(self.path)
                if parsed.path != "/easy/query":
                    self.send_error(404)
                    return
                self._send(service.query(parse_qs(parsed.query).get("code", [""])[0]))

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def answer(code: int, msg: str = "", data: dict | None = None) -> dict:
        return {"code": code, "data": data or {}, "msg": msg, "success": code == 10000}

    def submit(self, body: dict) -> dict:
        if not all(isinstance(body.get(k), str) and body[k] for k in ("audio_url", "video_url", "code")):
            return self.answer(10002, "参数错误 audio_url, video_url and code are required")
        with self.lock:
            if self.running is not None:
                self.busy_answers += 1
                return self.answer(10001, "忙碌中 busy")
            self.submits.append(body)
            code = body["code"]
            self.tasks[code] = {"status": 1, "progress": 0, "result": "", "msg": ""}
            self.running = code
            generation = self.generation
        threading.Thread(target=self._work, args=(body, generation), daemon=True).start()
        return self.answer(10000, "success")

    def _input(self, value: str, name: str) -> str:
        """A URL is downloaded into temp/; a file name is resolved under temp/."""
        if value.startswith(("http://", "https://")):
            path = os.path.join(self.data, "temp", name)
            with urllib.request.urlopen(value, timeout=30) as answer, open(path, "wb") as handle:
                shutil.copyfileobj(answer, handle)
            return path
        return os.path.join(self.data, "temp", os.path.basename(value))

    def _work(self, body: dict, generation: int) -> None:
        code = body["code"]
        try:
            audio = self._input(body["audio_url"], f"{code}.audio")
            video = self._input(body["video_url"], f"{code}.video")
            steps = 10
            for step in range(1, steps + 1):
                time.sleep(self.render_seconds / steps)
                while self.stall and generation == self.generation:
                    time.sleep(0.1)
                if generation != self.generation:
                    return  # restarted: this task is gone
                with self.lock:
                    self.tasks[code]["progress"] = min(90, 20 + step * 7)
                if self.fail_with:
                    message, self.fail_with = self.fail_with, None
                    raise RuntimeError(message)
            result = os.path.join(self.data, "temp", f"{code}-r.mp4")
            write_result(video, audio, result)
            outcome = {"status": 2, "progress": 100, "result": f"{DATA_ROOT}/temp/{code}-r.mp4", "msg": "success"}
        except Exception as exc:  # noqa: BLE001 - reported as HeyGem does: status 3 and a terse message
            outcome = {"status": 3, "progress": self.tasks.get(code, {}).get("progress", 0), "result": "", "msg": str(exc)}
        with self.lock:
            if generation == self.generation:
                self.tasks[code] = outcome
                self.running = None

    def query(self, code: str) -> dict:
        with self.lock:
            task = self.tasks.get(code)
            if task is None:
                return self.answer(10004, "任务不存在 task not found")
            if task["status"] in (2, 3):  # reported once, then forgotten
                del self.tasks[code]
            return self.answer(10000, "", {"code": code, **task})

    def occupy(self, seconds: float) -> None:
        """Another client's task keeps the service busy for `seconds`."""
        with self.lock:
            self.running = "someone-else"

        def release():
            time.sleep(seconds)
            with self.lock:
                if self.running == "someone-else":
                    self.running = None
        threading.Thread(target=release, daemon=True).start()

    def restart(self, down_seconds: float = 1.0) -> None:
        """Stop (connections refused), forget every task, come back on the same port."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            self.generation += 1
            self.tasks.clear()
            self.running = None
            self.stall = False
        time.sleep(down_seconds)
        self._serve(self.port)

    def close(self) -> None:
        self.generation += 1
        self.server.shutdown()
        self.server.server_close()


def easy_render(base_url: str, audio_url: str, video_url: str, code: str, params: dict | None = None,
                headers: dict | None = None, timeout: float = 120) -> dict:
    """What HeyGem's users write: submit (retrying while busy), poll until done or failed."""
    deadline = time.monotonic() + timeout
    while True:
        sent = requests.post(f"{base_url}/easy/submit", params=params, headers=headers, timeout=10, json={
            "audio_url": audio_url, "video_url": video_url, "code": code, "chaofen": 0, "watermark_switch": 0,
            "pn": 1}).json()
        if sent["code"] != 10001:
            break
        if time.monotonic() > deadline:
            raise AssertionError("still busy")
        time.sleep(0.5)
    if sent["code"] != 10000:
        return sent
    while time.monotonic() < deadline:
        answer = requests.get(f"{base_url}/easy/query", params={"code": code, **(params or {})}, headers=headers,
                              timeout=10).json()
        if answer["code"] != 10000 or answer["data"]["status"] in (2, 3):
            return answer
        time.sleep(0.3)
    raise AssertionError(f"task {code} not finished after {timeout} s")


GRADIO_APP = '''
import os, sys, time
import gradio as gr
sys.path.insert(0, {root!r})
from heygem_standin import write_result

CONTROL = {control!r}

def synthesize(audio, video, progress=gr.Progress()):
    for step in range(10):
        time.sleep({seconds!r} / 10)
        progress((step + 1) / 10)
    failure = os.path.join(CONTROL, "fail")
    if os.path.exists(failure):
        message = open(failure).read()
        os.remove(failure)
        raise gr.Error(message)
    out = os.path.join(CONTROL, f"result-{{time.time_ns()}}.mp4")
    write_result(video, audio, out)
    return out

demo = gr.Interface(synthesize, [gr.Audio(type="filepath"), gr.Video()], gr.Video(), api_name={api_name!r})
demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=int(sys.argv[1]),
                                               prevent_thread_lock=False, show_error=True)
'''


class GradioHeygemApp:
    """A HeyGem-style Gradio WebUI (a gr.Interface taking an audio and a video file, returning a
    video) in its own process on 127.0.0.1; `fail(message)` makes its next call raise gr.Error."""

    def __init__(self, workdir: str, port: int, render_seconds: float = 1.5, api_name: str = "predict"):
        self.workdir, self.port = workdir, port
        self.url = f"http://127.0.0.1:{port}"
        os.makedirs(workdir, exist_ok=True)
        self.script = os.path.join(workdir, "app.py")
        with open(self.script, "w") as handle:
            handle.write(GRADIO_APP.format(root=os.path.dirname(os.path.abspath(__file__)), control=workdir,
                                           seconds=render_seconds, api_name=api_name))
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR":
               os.path.join(self.workdir, "gradio-tmp"), "PYTHONPATH": os.pathsep.join(sys.path)}
        self.log = open(os.path.join(self.workdir, "app.log"), "ab")
        self.process = subprocess.Popen([sys.executable, self.script, str(self.port)], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Gradio app exited: {open(self.log.name).read()[-2000:]}")
            try:
                if requests.get(self.url + "/config", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("the Gradio app did not start")

    def fail(self, message: str) -> None:
        with open(os.path.join(self.workdir, "fail"), "w") as handle:
            handle.write(message)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
