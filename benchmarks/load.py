"""Load on a running gateway: 50 clients submit jobs and poll them for a minute while the
engine renders.

    python benchmarks/load.py [--clients 50] [--seconds 60]

Starts its own gateway (`heygem serve`, one worker) and a file server for the narration and
template. Prints submit and status latency (p50, p99), errors, and whether every submitted job
is still there at the end (lost jobs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import Gateway, allowed, make_media, serve_files  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heygem-load-")
    names = make_media(os.path.join(work, "media"))
    base = serve_files(os.path.join(work, "media"))
    gateway = Gateway(os.path.join(work, "data"), queue_limit=100000, allowed_hosts=allowed(base)).start()
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    body = {"audio_url": base + names["narration"], "templates": [base + names["template"]]}
    submit_ms, status_ms, errors, submitted = [], [], [], []
    busy_status_ms = []
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def timed(kind: str, samples: list, expected: int, call) -> tuple[dict | None, float]:
        """(answer JSON, ms) of one request; a failure or an unexpected status counts as an error."""
        started = time.perf_counter()
        try:
            answer = call()
        except requests.RequestException as exc:
            with lock:
                errors.append(f"{kind} {exc.__class__.__name__}")
            return None, 0.0
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            samples.append(elapsed)
            if answer.status_code != expected:
                errors.append(f"{kind} {answer.status_code}")
                return None, elapsed
        return answer.json(), elapsed

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            job, _ = timed("submit", submit_ms, 202, lambda: session.post(
                gateway.url + "/api/v1/jobs", json=body, headers=headers, timeout=30))
            if job is None:
                continue
            with lock:
                submitted.append(job["id"])
            # Poll this job until it finishes or the minute is over.
            while time.monotonic() < stop:
                time.sleep(args.poll_interval)
                state, elapsed = timed("status", status_ms, 200, lambda job_id=job["id"]: session.get(
                    f"{gateway.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30))
                if state is None:
                    continue
                if state["status"] in ("queued", "running"):
                    with lock:
                        busy_status_ms.append(elapsed)
                else:
                    break

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every submitted job must still be there.
    session = requests.Session()
    statuses: dict[str, int] = {}
    lost = 0
    for job_id in submitted:
        answer = session.get(f"{gateway.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30)
        if answer.status_code != 200:
            lost += 1
        else:
            status = answer.json()["status"]
            statuses[status] = statuses.get(status, 0) + 1
    metrics = session.get(gateway.url + "/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {gateway.token('metrics:read')}"}).text
    gateway.stop()
    pct = lambda values, q: round(float(np.percentile(values, q)), 1) if values else None  # noqa: E731
    report = {
        "clients": args.clients, "seconds": args.seconds, "jobs_submitted": len(submitted),
        "submit_ms": {"p50": pct(submit_ms, 50), "p99": pct(submit_ms, 99), "n": len(submit_ms)},
        "status_ms": {"p50": pct(status_ms, 50), "p99": pct(status_ms, 99), "n": len(status_ms)},
        "status_ms_while_rendering": {"p50": pct(busy_status_ms, 50), "p99": pct(busy_status_ms, 99)},
        "errors": len(errors), "error_kinds": sorted(set(errors)), "lost_jobs": lost,
        "job_statuses_at_end": statuses,
        "items_rendered": sum(int(float(line.split()[-1])) for line in metrics.splitlines()
                              if line.startswith("heygem_item_seconds_count")),
        "workdir": work,
    }
    print(json.dumps(report, indent=2))
    return 0 if not errors and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
