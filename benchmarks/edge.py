"""A few hostile clients against a running gateway: idle connections and waiting submits, while
a probe asks /healthz twice a second.

    python benchmarks/edge.py [--idle 300] [--waiters 20] [--seconds 60]

Starts its own gateway (`heygem serve` with no render worker, so every job stays queued and
every `wait_seconds` submit waits as long as it may). `--idle` TCP connections are held open
without sending anything, from 127.0.0.2, .3, ... (100 per address, the gateway's limit per
client, so that all of them are held) and reopened when the server drops them; `--waiters`
clients keep submitting jobs with wait_seconds 55 (one that is answered at once, because the
waiting slots are taken, waits a second before the next). The probe connects from 127.0.0.1. Prints the
probe's latencies (target: every probe < 1 s), the server's peak RSS, and what the idle
connections and the waiting submits saw.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import Gateway, make_media  # noqa: E402

PROBE_TIMEOUT = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--waiters", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heygem-edge-")
    media = os.path.join(work, "media")
    names = make_media(media)
    gateway = Gateway(os.path.join(work, "data"), workers=0, queue_limit=10**6, tenant_queue_limit=10**6).start()
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    with open(os.path.join(media, names["template"]), "rb") as handle:  # a template by id: no URL needed
        template = requests.post(gateway.url + "/api/v1/templates", headers=headers,
                                 files={"file": ("presenter.jpg", handle)}, timeout=120).json()["id"]
    with open(os.path.join(media, names["narration"]), "rb") as handle:
        narration = handle.read()
    server = psutil.Process(gateway.process.pid)
    stop = time.monotonic() + args.seconds
    lock = threading.Lock()
    probes: list[float] = []
    failed_probes: list[str] = []
    submits: list[tuple[float, int]] = []
    rss = [server.memory_info().rss]
    reopened = [0]

    def hold_idle() -> None:
        sockets: list[socket.socket | None] = [None] * args.idle
        while time.monotonic() < stop:
            for i, sock in enumerate(sockets):
                if sock is not None:
                    sock.setblocking(False)
                    try:
                        closed = sock.recv(1) == b""
                    except BlockingIOError:
                        closed = False
                    except OSError:
                        closed = True
                    if not closed:
                        continue
                    sock.close()
                    reopened[0] += 1
                try:
                    sockets[i] = socket.create_connection(("127.0.0.1", gateway.port), timeout=5,
                                                          source_address=(f"127.0.0.{2 + i // 100}", 0))
                except OSError:
                    sockets[i] = None
            time.sleep(0.5)
        for sock in sockets:
            if sock:
                sock.close()

    def wait_on_submits() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                status = session.post(gateway.url + "/api/v1/jobs", headers=headers, timeout=70,
                                      files={"audio": ("narration.wav", narration)},
                                      data={"templates": template, "wait_seconds": "55"}).status_code
            except requests.RequestException:
                status = 0
            with lock:
                submits.append((time.monotonic() - started, status))
            if time.monotonic() - started < 1:  # answered at once (all waiting slots taken): poll, as a client would
                time.sleep(1.0)

    def probe() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                ok = requests.get(gateway.url + "/healthz", timeout=PROBE_TIMEOUT).status_code == 200
                reason = "status"
            except requests.RequestException as exc:
                ok, reason = False, exc.__class__.__name__
            elapsed = time.monotonic() - started
            probes.append(elapsed)
            if not ok:
                failed_probes.append(reason)
            rss.append(server.memory_info().rss)
            time.sleep(max(0.0, 0.5 - elapsed))

    threads = [threading.Thread(target=hold_idle)] + [threading.Thread(target=wait_on_submits)
                                                     for _ in range(args.waiters)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)  # let the idle connections and the waiters settle in before probing
    probe()
    for thread in threads:
        thread.join()
    gateway.stop()
    waited = [seconds for seconds, status in submits if seconds >= 50]
    report = {
        "idle_connections": args.idle, "waiting_clients": args.waiters, "seconds": args.seconds,
        "healthz_probes": len(probes),
        "healthz_seconds": {"p50": round(float(np.percentile(probes, 50)), 3),
                            "p99": round(float(np.percentile(probes, 99)), 3), "max": round(max(probes), 3)},
        "probes_under_1s": f"{sum(p < 1 for p in probes)}/{len(probes)}",
        "failed_probes": failed_probes,
        "server_peak_rss_mb": round(max(rss) / 2**20, 1),
        "idle_connections_reopened_after_the_server_closed_them": reopened[0],
        "submits": len(submits), "submit_statuses": {str(s): sum(1 for _, x in submits if x == s)
                                                     for s in sorted({x for _, x in submits})},
        "submits_that_waited_50s_or_more": len(waited),
        "submits_answered_within_1s": sum(1 for seconds, _ in submits if seconds < 1),
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not failed_probes and max(probes) < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
