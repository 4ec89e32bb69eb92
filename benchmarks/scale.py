"""Scale-out on this machine: items per minute with one `heygem worker` process and with two
(each pinned to one core with taskset), the gateway's status latency while both render, and
the store's write rate on PostgreSQL (what bounds the number of workers first).

    python benchmarks/scale.py [--items 8] [--pollers 20]

Starts Redis and PostgreSQL (Debian's packages) and an S3 server on 127.0.0.1, a gateway
(`heygem serve`, HEYGEM_QUEUE=celery) and the workers, each with its own data folder. Prints
JSON: per phase the items, wall time, items/minute; the status p50/p99; the store's writes a
second; and the figures behind the N-machine estimate in the README.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import HEYGEM, Gateway, allowed, make_media, serve_files  # noqa: E402
from gateway_support import S3Server  # noqa: E402  (service.py put tests/ on the path)
from servers import PostgresServer, RedisServer  # noqa: E402

from gateway.config import Settings  # noqa: E402

TERMINAL = ("succeeded", "partial", "failed", "canceled")


def start_worker(env: dict, data_dir: str, core: int) -> subprocess.Popen:
    os.makedirs(data_dir, exist_ok=True)
    log = open(os.path.join(data_dir, "worker.out"), "a")
    worker_env = dict(env, HEYGEM_DATA_DIR=data_dir, HEYGEM_CACHE_DIR=os.path.join(data_dir, "cache"))
    return subprocess.Popen(["taskset", "-c", str(core), HEYGEM, "worker"], env=worker_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_batch(gateway: Gateway, headers: dict, body: dict, items: int, pollers: int) -> dict:
    """Submit `items` one-template jobs at once; wait for all. Status polls run meanwhile."""
    session = requests.Session()
    started = time.monotonic()
    ids = [session.post(gateway.url + "/api/v1/jobs", json=body, headers=headers, timeout=30).json()["id"]
           for _ in range(items)]
    status_ms: list[float] = []
    done = threading.Event()

    def poll(job_id: str) -> None:
        client = requests.Session()
        while not done.is_set():
            t = time.perf_counter()
            client.get(f"{gateway.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30)
            status_ms.append((time.perf_counter() - t) * 1000)
            time.sleep(0.5)
    threads = [threading.Thread(target=poll, args=(ids[i % len(ids)],), daemon=True) for i in range(pollers)]
    for thread in threads:
        thread.start()
    statuses = {}
    while len(statuses) < len(ids):
        for job_id in ids:
            if job_id not in statuses:
                status = session.get(f"{gateway.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()["status"]
                if status in TERMINAL:
                    statuses[job_id] = status
        time.sleep(0.5)
    seconds = time.monotonic() - started
    done.set()
    pct = lambda q: round(float(np.percentile(status_ms, q)), 1) if status_ms else None  # noqa: E731
    return {"items": items, "seconds": round(seconds, 1), "items_per_minute": round(items * 60 / seconds, 2),
            "statuses": sorted(set(statuses.values())), "status_ms": {"p50": pct(50), "p99": pct(99), "n": len(status_ms)}}


def store_write_rate(url: str, threads: int = 8, seconds: float = 5.0) -> dict:
    """Progress writes a second through the store (one serialized writer on PostgreSQL)."""
    from gateway.store import Store
    store = Store(url)
    job, _ = store.create_job("bench", "http://x/a.wav", None, "a", ["http://x/t.mp4"] * threads, None, None, False,
                              None, "h")
    claimed = [store.claim(job.id, i, 60) for i in range(threads)]
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def write(i: int) -> None:
        while time.monotonic() < stop:
            store.progress(claimed[i], "rendering", counts[i], 10**6)
            counts[i] += 1
    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.delete_job(job.id)
    return {"threads": threads, "writes_per_second": round(sum(counts) / seconds)}


def broker_send_rate(settings: dict, tasks: int = 2000) -> dict:
    """Tasks a second one gateway sends to Redis (to a scratch queue nobody consumes)."""
    from gateway.tasks import RENDER, celery_app
    app = celery_app(Settings.from_env(env={}, data_dir=tempfile.mkdtemp(), **settings))
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(tasks):
            app.send_task(RENDER, args=["bench", i], queue="bench.scratch", producer=producer)
    return {"tasks": tasks, "tasks_per_second": round(tasks / (time.perf_counter() - started))}


def object_store_rate(s3: S3Server, video: str, uploads: int = 10) -> dict:
    """MB/s of video uploads to the S3 server (moto's here, not MinIO: a floor, not a ceiling)."""
    client = s3.client()
    if not client.bucket_exists("bench"):
        client.make_bucket("bench")
    size = os.path.getsize(video)
    started = time.perf_counter()
    for i in range(uploads):
        client.fput_object("bench", f"v{i}.mp4", video)
    seconds = time.perf_counter() - started
    return {"video_mb": round(size / 2**20, 2), "mb_per_second": round(uploads * size / 2**20 / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--pollers", type=int, default=20)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heygem-scale-")
    names = make_media(os.path.join(work, "media"))
    base = serve_files(os.path.join(work, "media"))
    redis, postgres, s3 = RedisServer(), PostgresServer(), S3Server()
    settings = dict(queue="celery", broker_url=redis.url, database_url=postgres.url, allowed_hosts=allowed(base),
                    queue_limit=100000, tenant_queue_limit=100000, jwt_secret="s" * 40, link_secret="l" * 40,
                    **s3.settings())
    gateway = Gateway(os.path.join(work, "gateway"), **settings)
    workers: list[subprocess.Popen] = []
    report: dict = {"cores": os.cpu_count()}
    try:
        gateway.start()
        headers = {"Authorization": f"Bearer {gateway.token()}"}
        body = {"audio_url": base + names["narration"], "templates": [base + names["template"]]}
        workers.append(start_worker(gateway.env, os.path.join(work, "w1"), 0))
        run_batch(gateway, headers, body, 1, 0)  # warm-up: imports, the template's analysis cached
        report["one_worker"] = run_batch(gateway, headers, body, args.items, args.pollers)
        workers.append(start_worker(gateway.env, os.path.join(work, "w2"), 1))
        run_batch(gateway, headers, body, 2, 0)  # the second worker warms up too
        report["two_workers"] = run_batch(gateway, headers, body, args.items, args.pollers)
        report["speed_up"] = round(report["two_workers"]["items_per_minute"] / report["one_worker"]["items_per_minute"], 2)
        report["store"] = store_write_rate(postgres.url)
        report["redis"] = broker_send_rate(settings)
        videos = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(work, "gateway")) for name in names
                  if name.endswith(".mp4")]
        sample = videos[0] if videos else None
        if sample is None:  # the workers removed theirs once stored: take one back from the bucket
            sample = os.path.join(work, "sample.mp4")
            key = next(o.object_name for o in s3.client().list_objects("videos", recursive=True)
                       if o.object_name.endswith(".mp4"))
            s3.client().fget_object("videos", key, sample)
        report["object_store"] = object_store_rate(s3, sample)
        seconds_per_item = 60 / report["one_worker"]["items_per_minute"]
        # A rendering item writes progress every HEYGEM_PROGRESS_SECONDS and a heartbeat every
        # HEYGEM_HEARTBEAT_SECONDS; its transitions are about ten writes.
        defaults = Settings()
        writes_per_item_second = 1 / defaults.progress_seconds + 1 / defaults.heartbeat_seconds + 10 / seconds_per_item
        items_per_second_per_core = 1 / seconds_per_item
        report["estimate"] = {
            "seconds_per_item_per_core": round(seconds_per_item, 1),
            "store_writes_per_rendering_item_per_second": round(writes_per_item_second, 2),
            "cores_rendering_at_once_the_store_carries": int(report["store"]["writes_per_second"] / writes_per_item_second),
            "cores_the_broker_carries": int(report["redis"]["tasks_per_second"] / items_per_second_per_core),
            "cores_the_object_store_carries": int(report["object_store"]["mb_per_second"]
                                                  / (report["object_store"]["video_mb"] * items_per_second_per_core)),
        }
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
        gateway.stop()
        s3.stop()
        postgres.close()
        redis.close()
    report["workdir"] = work
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
