"""What the gateway adds in front of a remote HeyGem engine, measured against the test stand-ins
(Duix.Heygem's /easy protocol, and a real Gradio app):

- per item: from the backend's result being ready to the item succeeding, with local storage
  and with object storage (moto's S3 server), at the default poll settings;
- a busy backend: the waits between our submits while it is busy, and how long after it frees
  up our task is accepted.

    python benchmarks/engines.py [--items 6]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import requests  # noqa: E402

import engine  # noqa: E402
from benchmarks.service import make_media, serve_files  # noqa: E402
from gateway_support import LiveServer, S3Server, free_port, make_settings  # noqa: E402
from heygem_standin import GradioHeygemApp, HeygemVideoService  # noqa: E402

TIMED = {}  # code or call -> when the backend's result was ready (wall clock)


class TimedHeygem(HeygemVideoService):
    def _work(self, body, generation):
        super()._work(body, generation)
        TIMED[body["code"]] = time.time()


def run_job(server, audio, templates) -> list:
    answer = requests.post(server.url + "/api/v1/jobs", headers=server.headers(),
                           json={"audio_url": audio, "templates": templates}).json()
    store = server.app.extensions["store"]
    while (job := store.job(answer["id"])).status in ("queued", "running"):
        time.sleep(0.05)
    assert job.status == "succeeded", [i.error for i in job.items]
    return job.items


def spread(values: list[float]) -> str:
    values = sorted(values)
    return (f"median {statistics.median(values):.2f} s, min {values[0]:.2f}, max {values[-1]:.2f} "
            f"(n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=6)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heygem-engines-")
    folder = os.path.join(work, "media")
    media = make_media(folder)
    # HeyGem takes videos: the portrait made into a short talking clip by our engine.
    engine.render(os.path.join(folder, media["narration"]), os.path.join(folder, media["template"]),
                  os.path.join(folder, "presenter.mp4"))
    base = serve_files(folder)
    audio, template = base + media["narration"], base + "presenter.mp4"
    allow = base.split("/")[2]
    s3 = S3Server()
    try:
        heygem = TimedHeygem(os.path.join(work, "heygem"), render_seconds=2.0)
        for storage in ("local", "s3"):
            extra = s3.settings(storage_backoff_max_seconds=300.0) if storage == "s3" else {}
            server = LiveServer(make_settings(_Path(work, f"easy-{storage}"), {"allow": allow}, engine="heygem-easy",
                                              engine_url=heygem.url, engine_shared_dir=heygem.data, **extra))
            items = run_job(server, audio, [template] * args.items)
            codes = {s["code"] for s in heygem.submits}
            overhead = [i.finished - TIMED[c] for i, c in zip(items, _codes(items, server)) if c in codes]
            print(f"heygem-easy, {storage} storage: result ready -> item succeeded: {spread(overhead)}", flush=True)
            server.close()

        # A busy backend: someone else's video holds it for 30 s.
        server = LiveServer(make_settings(_Path(work, "busy"), {"allow": allow}, engine="heygem-easy",
                                          engine_url=heygem.url, engine_shared_dir=heygem.data))
        attempts = []
        original = heygem.submit

        def watched(body):
            attempts.append(time.time())
            return original(body)
        heygem.submit = watched
        heygem.occupy(30.0)
        freed = time.time() + 30.0
        run_job(server, audio, [template])
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        print(f"heygem-easy, busy for 30 s: {len(attempts)} submits, waits between them "
              f"{', '.join(f'{g:.1f}' for g in gaps)} s; accepted {attempts[-1] - freed:.1f} s after it freed up",
              flush=True)
        server.close()
        heygem.close()

        app = GradioHeygemApp(os.path.join(work, "gradio"), free_port(), render_seconds=2.0)
        try:
            for storage in ("local", "s3"):
                extra = s3.settings(storage_backoff_max_seconds=300.0) if storage == "s3" else {}
                server = LiveServer(make_settings(_Path(work, f"gradio-{storage}"), {"allow": allow}, engine="gradio",
                                                  engine_url=app.url, **extra))
                items = run_job(server, audio, [template] * args.items)
                ready = sorted(os.path.getmtime(os.path.join(app.workdir, name))  # written whole, then returned
                               for name in os.listdir(app.workdir) if name.startswith("result-"))[-args.items:]
                overhead = [i.finished - r for i, r in zip(items, ready)]
                print(f"gradio, {storage} storage: result ready -> item succeeded: {spread(overhead)}", flush=True)
                server.close()
        finally:
            app.stop()
    finally:
        s3.stop()
    return 0


def _codes(items, server) -> list[str]:
    from gateway.engines import RenderTask
    return [RenderTask(i.job_id, i.index, "", "", "", {}, "", None).code for i in items]


class _Path(str):
    """make_settings takes a pathlib-like folder."""

    def __new__(cls, *parts):
        return super().__new__(cls, os.path.join(*parts))

    def __truediv__(self, name):
        return os.path.join(self, name)


if __name__ == "__main__":
    sys.exit(main())
