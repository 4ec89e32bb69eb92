"""Delivery figures: object storage and callbacks, against a real S3 HTTP server (moto's) on
127.0.0.1 and a callback receiver in this process.

1. Upload throughput of a 100 MB file through the service's S3 storage, against `cp` of the same
   file (the disk's own speed), each run several times.
2. Peak RSS of this process while it uploads a 1 GB file (the file is read a part at a time).
3. A `heygem serve` process with HEYGEM_STORAGE=s3 renders a job (templates from ../shared/media
   when present, else the bundled portrait): time from each item's render finishing (its last
   frame written) to its object being confirmed in the bucket, and from the job's end to its
   signed callback's arrival.

    python benchmarks/delivery.py [--upload-mb 100] [--big-mb 1024] [--runs 3] [--templates 3]
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import ROOT, Gateway, allowed, make_media, serve_files  # noqa: E402
from gateway_support import CallbackReceiver, S3Server  # noqa: E402

from gateway.config import Settings  # noqa: E402
from gateway.storage import S3Storage  # noqa: E402

SHARED = os.path.join(ROOT, "..", "shared", "media")


def random_file(path: str, size_mb: int) -> str:
    block = os.urandom(2**20)
    with open(path, "wb") as handle:
        for _ in range(size_mb):
            handle.write(block)
    return path


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


def storage_for(s3: S3Server, folder: str) -> S3Storage:
    settings = Settings.from_env(env={}, data_dir=folder, jwt_secret="x" * 40, **s3.settings())
    storage = S3Storage(settings)
    storage.check()
    return storage


def throughput(s3: S3Server, folder: str, size_mb: int, runs: int) -> None:
    source = random_file(os.path.join(folder, "upload.bin"), size_mb)
    storage = storage_for(s3, folder)
    copies, uploads, cpu = [], [], []
    me, server = psutil.Process(), psutil.Process(s3.process.pid)

    def seconds(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    for run in range(runs):
        target = os.path.join(folder, f"copy-{run}.bin")
        started = time.perf_counter()
        subprocess.run(["cp", source, target], check=True)
        subprocess.run(["sync", target], check=True)
        copies.append(size_mb / (time.perf_counter() - started))
        os.remove(target)
        started, client_cpu, server_cpu = time.perf_counter(), seconds(me), seconds(server)
        storage.put(f"bench/upload-{run}.bin", source, "application/octet-stream")
        uploads.append(size_mb / (time.perf_counter() - started))
        cpu.append((seconds(me) - client_cpu, seconds(server) - server_cpu))
        storage.client.remove_object(storage.bucket, f"bench/upload-{run}.bin")  # moto keeps objects in memory
    ratio = [u / c for u, c in zip(uploads, copies)]
    print(f"upload {size_mb} MB to S3 (MB/s): {spread(uploads)}")
    print(f"cp + sync of the same file (MB/s): {spread(copies)}")
    print(f"upload / cp per run: {', '.join(f'{r:.2f}' for r in ratio)}")
    print("CPU seconds per upload, the service's side / the S3 server's: "
          + ", ".join(f"{c:.2f} / {s:.2f}" for c, s in cpu)
          + f" (the service's side alone would allow ~{size_mb / statistics.median(c for c, _ in cpu):.0f} MB/s)")
    os.remove(source)


def peak_rss(s3: S3Server, folder: str, size_mb: int) -> None:
    source = random_file(os.path.join(folder, "big.bin"), size_mb)
    storage = storage_for(s3, folder)
    me = psutil.Process()
    before, peak, done = me.memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    storage.put("bench/big.bin", source, "application/octet-stream")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    print(f"upload {size_mb} MB: {seconds:.1f} s ({size_mb / seconds:.0f} MB/s); RSS before {before / 2**20:.0f} MB, "
          f"peak {peak[0] / 2**20:.0f} MB (+{(peak[0] - before) / 2**20:.0f} MB; parts of "
          f"{storage.part_size // 2**20} MB, 2 in flight)")
    storage.client.remove_object(storage.bucket, "bench/big.bin")
    os.remove(source)


def templates(folder: str, count: int) -> list[str]:
    """Template files to serve: clips and portraits from ../shared/media, else the bundled one."""
    found = sorted(glob.glob(os.path.join(SHARED, "video", "*.mp4"))) + sorted(glob.glob(os.path.join(SHARED, "image", "*")))
    names = []
    for path in found[:count]:
        shutil.copy(path, os.path.join(folder, os.path.basename(path)))
        names.append(os.path.basename(path))
    return names or ["presenter.jpg"] * count  # make_media's


def end_to_end(s3: S3Server, folder: str, count: int) -> None:
    media = os.path.join(folder, "media")
    narration = make_media(media)["narration"]
    names = templates(media, count)
    base = serve_files(media)
    receiver = CallbackReceiver()
    gateway = Gateway(os.path.join(folder, "gateway"), allowed_hosts=f"{allowed(base)},{receiver.allow}",
                      **s3.settings(s3_bucket="bench")).start()
    try:
        headers = {"Authorization": "Bearer " + gateway.token("jobs:read", "jobs:write")}
        receiver.secret = requests.get(gateway.url + "/api/v1/callbacks/secret", headers=headers).json()["secret"]
        job = requests.post(gateway.url + "/api/v1/jobs", headers=headers, json={
            "audio_url": base + narration, "templates": [base + name for name in names], "zip": True,
            "callback_url": receiver.url}).json()
        deadline = time.monotonic() + 1800
        while not receiver.accepted() and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = receiver.accepted()[0]
        with sqlite3.connect(os.path.join(gateway.data_dir, "gateway.sqlite3")) as db:
            items = db.execute("SELECT idx, status, rendered, finished, error FROM items WHERE job_id=? ORDER BY idx",
                               (job["id"],)).fetchall()
            finished = db.execute("SELECT finished FROM jobs WHERE id=?", (job["id"],)).fetchone()[0]
    finally:
        gateway.stop()
        receiver.close()
    stored = [(done - rendered) * 1000 for _, status, rendered, done, _ in items if status == "succeeded"]
    for index, status, rendered, done, error in items:
        print(f"  item {index + 1} ({names[index]}): {status}"
              + (f", stored {1000 * (done - rendered):.0f} ms after its render" if status == "succeeded" else f": {error}"))
    if stored:
        print(f"render done -> object confirmed in the bucket (ms): {spread(stored)}")
    last_item = max(done for _, _, _, done, _ in items)
    print(f"last item stored -> ZIP made, stored, job ended: {1000 * (finished - last_item):.0f} ms")
    print(f"job end -> signed callback received: {1000 * (arrived['time'] - finished):.0f} ms "
          f"(signature valid: {arrived['valid']}; the job ends once its ZIP is stored)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upload-mb", type=int, default=100)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--templates", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="heygem-delivery-")
    s3 = S3Server()
    try:
        throughput(s3, folder, args.upload_mb, args.runs)
        peak_rss(s3, folder, args.big_mb)
        end_to_end(s3, folder, args.templates)
    finally:
        s3.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
