"""HEYGEM_QUEUE=celery on the real stack: Redis and PostgreSQL from Debian's packages and an S3
server, all on 127.0.0.1; the gateway in this process and two `heygem worker` processes, each
with a data folder of its own (no machine reads another's disk)."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import requests
from gateway_support import SECRET, CallbackReceiver, LiveServer, S3Server, make_settings, until
from servers import PostgresServer, RedisServer

TERMINAL = {"succeeded", "partial", "failed", "canceled"}


class Stack:
    """The servers, and the settings every process of the deployment shares."""

    def __init__(self, tmp, files):
        self.tmp, self.files = tmp, files
        self.redis, self.postgres, self.s3 = RedisServer(), PostgresServer(), S3Server()
        self.receiver = CallbackReceiver()
        self.shared = dict(database_url=self.postgres.url, queue="celery", broker_url=self.redis.url,
                           worker_lost_seconds=6, heartbeat_seconds=1, dispatch_check_seconds=1,
                           allowed_hosts=[files["allow"], self.receiver.allow], link_secret="l" * 40,
                           **self.s3.settings())
        self.workers: dict[str, subprocess.Popen] = {}
        self.gateway = None

    def start_gateway(self) -> LiveServer:
        self.gateway = LiveServer(make_settings(self.tmp / "gateway", self.files, **self.shared))
        return self.gateway

    def start_worker(self, name: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEYGEM_")}
        for key, value in self.shared.items():
            env["HEYGEM_" + key.upper()] = ",".join(value) if isinstance(value, list) else str(value)
        env.update(HEYGEM_DATA_DIR=str(self.tmp / name), HEYGEM_CACHE_DIR=str(self.tmp / name / "cache"),
                   HEYGEM_JWT_SECRET=SECRET, HEYGEM_MIN_FREE_MB="1", HEYGEM_MAX_DOWNLOAD_MB="2")
        log = open(self.tmp / f"{name}.log", "ab")
        process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "heygem"), "worker"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers[name] = process
        return process

    def kill_worker(self, name: str, how=signal.SIGKILL) -> None:
        process = self.workers.pop(name)
        os.killpg(process.pid, how)
        process.wait(60)

    def close(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name, signal.SIGTERM)
        if self.gateway:
            self.gateway.close()
        self.receiver.close()
        self.s3.stop()
        self.postgres.close()
        self.redis.close()


@pytest.fixture()
def stack(tmp_path, files):
    built = Stack(tmp_path, files)
    try:
        yield built
    finally:
        built.close()


def submit(gateway: LiveServer, **body) -> str:
    answer = requests.post(gateway.url + "/api/v1/jobs", headers=gateway.headers(), json=body, timeout=30)
    assert answer.status_code in (200, 202), answer.text
    return answer.json()["id"]


def job_of(gateway: LiveServer, job_id: str) -> dict:
    return requests.get(f"{gateway.url}/api/v1/jobs/{job_id}", headers=gateway.headers(), timeout=30).json()


def finished(gateway: LiveServer, job_id: str, timeout=240.0) -> dict:
    return until(lambda: (job := job_of(gateway, job_id))["status"] in TERMINAL and job, timeout, f"job {job_id}")


def items(gateway: LiveServer, job_id: str):
    return gateway.app.extensions["store"].job(job_id).items


def test_batch_spreads_over_two_workers_and_comes_back_from_the_bucket(stack, files):
    gateway = stack.start_gateway()
    stack.start_worker("w1"), stack.start_worker("w2")
    ready = requests.get(gateway.url + "/readyz", timeout=10).json()
    assert ready["queue"]["name"] == "celery" and ready["queue"]["queue"] == "render.embedded"
    job_id = submit(gateway, audio_url=files["speech"], templates=[files["h264"]] * 4, zip=True,
                    callback_url=stack.receiver.url)
    job = finished(gateway, job_id)
    assert job["status"] == "succeeded", job
    workers = {item.worker for item in items(gateway, job_id)}
    assert len(workers) == 2, f"every item ran on one worker: {workers}"
    video = requests.get(job["items"][0]["video_url"], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    bundle = zipfile.ZipFile(io.BytesIO(requests.get(job["archive_url"], timeout=30).content))
    assert sorted(n for n in bundle.namelist() if n.endswith(".mp4")) == [f"output_00{i}.mp4" for i in range(1, 5)]
    until(stack.receiver.accepted, 30, "the callback")
    time.sleep(3)  # a second delivery, if any, would have come by now
    assert len(stack.receiver.requests) == 1 and b'"job.succeeded"' in stack.receiver.requests[0]["body"]
    # The template was analysed once and its analysis shared through the bucket.
    shared = [o.object_name for o in stack.s3.client().list_objects("videos", "heygem/.shared/", recursive=True)]
    assert any(name.startswith("heygem/.shared/template-cache/") and name.endswith(".npz") for name in shared), shared
    # No worker kept a file of the job on its disk: the videos are in the bucket.
    for name in ("w1", "w2"):
        left = [os.path.join(root, f) for root, _, names in os.walk(stack.tmp / name / "outputs") for f in names]
        assert not left, left


def test_uploaded_narration_and_kept_template_reach_workers_on_other_disks(stack, media):
    gateway = stack.start_gateway()
    stack.start_worker("w1")
    headers = gateway.headers()
    with open(media["h264"], "rb") as clip:
        template = requests.post(gateway.url + "/api/v1/templates", headers=headers, files={"file": clip}, timeout=120)
    assert template.status_code in (200, 201), template.text
    with open(media["speech"], "rb") as speech:
        answer = requests.post(gateway.url + "/api/v1/jobs", headers=headers, files={"audio": speech},
                               data={"templates": template.json()["id"]}, timeout=60)
    assert answer.status_code in (200, 202), answer.text
    job = finished(gateway, answer.json()["id"])
    assert job["status"] == "succeeded", job


def test_worker_killed_mid_item_and_the_job_still_completes(stack, files):
    gateway = stack.start_gateway()
    stack.start_worker("w1"), stack.start_worker("w2")
    job_id = submit(gateway, audio_url=files["speech"], templates=[files["h264"]] * 2)

    def both_rendering():
        now = items(gateway, job_id)
        return all(i.status == "running" and i.frames_done > 0 for i in now) and len({i.worker for i in now}) == 2
    until(both_rendering, 120, "both workers rendering")
    victim = items(gateway, job_id)[0].worker
    name = next(n for n, p in stack.workers.items() if victim.endswith(f"-{p.pid}"))
    stack.kill_worker(name)  # SIGKILL: no goodbye, its task unacknowledged, its item 'running'
    job = finished(gateway, job_id)
    assert job["status"] == "succeeded", job
    first = items(gateway, job_id)[0]
    assert first.attempts == 2 and first.worker != victim


def test_cancel_reaches_the_worker_within_seconds(stack, files):
    gateway = stack.start_gateway()
    stack.start_worker("w1")
    job_id = submit(gateway, audio_url=files["speech"], templates=[files["h264"]] * 3)
    until(lambda: items(gateway, job_id)[0].frames_done > 0, 120, "the first item rendering")
    asked = time.monotonic()
    answer = requests.post(f"{gateway.url}/api/v1/jobs/{job_id}/cancel", headers=gateway.headers(), timeout=30)
    assert answer.status_code in (200, 202), answer.text
    job = finished(gateway, job_id, timeout=30)
    assert job["status"] == "canceled" and time.monotonic() - asked < 10
    assert [i["status"] for i in job["items"]] == ["canceled"] * 3


def test_redis_away_or_restarted_with_jobs_queued_loses_nothing(stack, files):
    gateway = stack.start_gateway()
    stack.redis.stop()
    job_id = submit(gateway, audio_url=files["speech"], templates=[files["h264"]] * 2)  # waits in the database
    ready = lambda: requests.get(gateway.url + "/readyz", timeout=10)  # noqa: E731
    until(lambda: ready().json()["queue"]["broker_reachable"] is False, 30, "/readyz to see Redis away")
    assert ready().status_code == 200
    stack.redis.start()
    store = gateway.app.extensions["store"]
    until(lambda: not store.undispatched_items(10), 30, "the items sent to Redis")
    stack.redis.restart()  # comes back empty: the tasks are gone, the database still has the items
    stack.start_worker("w1")
    job = finished(gateway, job_id)
    assert job["status"] == "succeeded", job


def test_gateway_killed_mid_job_loses_nothing(stack, files):
    gateway = stack.start_gateway()
    stack.start_worker("w1")
    job_id = submit(gateway, audio_url=files["speech"], templates=[files["h264"]] * 2, callback_url=stack.receiver.url)
    until(lambda: items(gateway, job_id)[0].frames_done > 0, 120, "the first item rendering")
    gateway.close()  # the worker goes on; the job's end is written by the worker, its callback sent by a gateway
    second = stack.start_gateway()  # takes over dispatching from the dead one
    job = finished(second, job_id)
    assert requests.get(second.url + "/readyz", timeout=10).json()["queue"]["dispatching"] is True
    assert job["status"] == "succeeded", job
    until(stack.receiver.accepted, 30, "the callback")
    time.sleep(3)
    assert len(stack.receiver.requests) == 1
