"""Kill -9 the gateway in the middle of a batch, start it again, and watch the batch finish.

    python benchmarks/crash_recovery.py [--templates 4]

Prints a timeline and the final state: every item succeeded, every output on disk, nothing lost.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import Gateway, allowed, make_media, serve_files  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=4)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heygem-crash-")
    names = make_media(os.path.join(work, "media"))
    base = serve_files(os.path.join(work, "media"))
    data = os.path.join(work, "data")
    gateway = Gateway(data, allowed_hosts=allowed(base)).start()
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s  {message}", flush=True)

    def job() -> dict:
        return requests.get(f"{gateway.url}/api/v1/jobs/{job_id}", headers=headers, timeout=10).json()

    body = {"audio_url": base + names["narration"], "templates": [base + names["template"]] * args.templates, "zip": True}
    job_id = requests.post(gateway.url + "/api/v1/jobs", json=body, headers=headers, timeout=30).json()["id"]
    say(f"submitted job {job_id} with {args.templates} templates")
    while True:
        state = job()
        done = [i["status"] for i in state["items"]]
        if done.count("succeeded") >= 1 and "running" in done and state["items"][done.index("running")]["frames_done"] > 0:
            break
        time.sleep(0.1)
    say(f"items before the kill: {done}, {state['progress']['percent']}%")
    gateway.kill()
    say("kill -9")
    partial = [f for f in os.listdir(os.path.join(data, "outputs", "bench", job_id))]
    say(f"files in the job's folder after the kill: {sorted(partial)}")
    gateway = Gateway(data, allowed_hosts=allowed(base)).start()
    say("started again")
    while (state := job())["status"] in ("queued", "running"):
        time.sleep(0.5)
    files = sorted(os.listdir(os.path.join(data, "outputs", "bench", job_id)))
    say(f"job {state['status']}: items {[i['status'] for i in state['items']]}")
    say(f"files: {files}")
    archive = requests.get(state["archive_url"], timeout=60)
    gateway.stop()
    ok = (state["status"] == "succeeded" and len(state["video_urls"]) == args.templates
          and files == [f"output_{i + 1:03d}.mp4" for i in range(args.templates)] and archive.status_code == 200)
    print(json.dumps({"recovered": ok, "status": state["status"], "videos": len(state["video_urls"]),
                      "archive_bytes": len(archive.content), "workdir": work}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
