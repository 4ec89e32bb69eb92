"""Results delivered where users read them: videos and ZIPs in an S3 bucket (a real S3 HTTP server,
moto's, on 127.0.0.1: the same minio SDK code path a MinIO deployment uses) and signed callbacks
from a durable outbox, received by a local HTTP receiver that checks signatures."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
import zipfile

import pytest
import requests

import engine

from gateway.cli import main as heygem
from gateway.storage import S3Storage, StorageError
from gateway_support import CallbackReceiver, LiveServer, S3Server, make_settings, until


def job_of(service, job_id):
    return requests.get(f"{service.url}/api/v1/jobs/{job_id}", headers=service.headers()).json()


def finished(service, job_id):
    return until(lambda: (job := job_of(service, job_id))["status"] not in ("queued", "running") and job,
                 what=f"job {job_id} finished")


@pytest.fixture()
def s3():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEYGEM_CACHE_DIR", str(tmp_path / "cache"))


def test_bucket_and_signed_callback_survive_refusals_and_a_restart(tmp_path, files, s3, cache):
    receiver = CallbackReceiver([500, "drop"])
    settings = make_settings(tmp_path, files, allowed_hosts=[files["allow"], receiver.allow], **s3.settings(),
                             callback_backoff_seconds=1.5, callback_backoff_max_seconds=3)
    service = LiveServer(settings)
    try:
        receiver.secret = requests.get(service.url + "/api/v1/callbacks/secret", headers=service.headers()).json()["secret"]
        answer = requests.post(service.url + "/api/v1/jobs", headers=service.headers(), json={
            "audio_url": files["speech"], "templates": [files["h264"], files["tall"]], "zip": True,
            "callback_url": receiver.url, "metadata": {"conversation": "c-42"}})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        until(lambda: receiver.requests, what="the first callback attempt")
        service.close()  # the service restarts between attempts
        service = LiveServer(settings)
        until(receiver.accepted, what="an accepted callback")
        time.sleep(4)  # nothing more arrives
        job = job_of(service, job_id)
    finally:
        service.close()
        receiver.close()

    assert [r["answer"] for r in receiver.requests] == [500, "drop", 200]
    assert all(r["valid"] for r in receiver.requests)
    delivery_ids = {r["headers"]["X-Heygem-Delivery"] for r in receiver.requests}
    assert len(delivery_ids) == 1  # one delivery, retried (its links made afresh each time)
    event = json.loads(receiver.requests[-1]["body"])
    assert receiver.requests[-1]["headers"]["X-Heygem-Event"] == event["event"] == "job.succeeded"
    assert event["job_id"] == job_id and event["status"] == "succeeded" and event["delivery_id"] in delivery_ids
    assert event["metadata"] == {"conversation": "c-42"} and event["videos_ready"] == event["videos_total"] == 2
    assert event["text"].startswith("2 of 2 videos ready:") and event["archive_url"] in event["text"]
    assert [i["status"] for i in event["items"]] == ["succeeded", "succeeded"]
    assert job["callback"]["status"] == "delivered" and job["callback"]["attempts"] == 3
    assert job["video_urls"] and job["archive_url"]

    # The links are the bucket's, and download real files with plain HTTP.
    for url in event["video_urls"]:
        assert url.startswith(s3.endpoint + "/videos/heygem/acme/" + job_id + "/output_00")
        video = requests.get(url)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    archive = requests.get(event["archive_url"])
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert bundle.namelist() == ["output_001.mp4", "output_002.mp4", "manifest.json"]
        assert json.loads(bundle.read("manifest.json"))["status"] == "succeeded"
    client = s3.client()
    objects = {o.object_name: o for o in client.list_objects("videos", "heygem/", recursive=True)}
    prefix = f"heygem/acme/{job_id}/"
    assert set(objects) == {prefix + "output_001.mp4", prefix + "output_002.mp4", prefix + job_id + ".zip"}
    assert client.stat_object("videos", prefix + "output_001.mp4").content_type == "video/mp4"
    assert client.stat_object("videos", prefix + job_id + ".zip").content_type == "application/zip"
    assert not os.path.exists(os.path.join(settings.outputs_dir, "acme", job_id))  # confirmed, then removed

    service = LiveServer(settings)  # deleting the job removes its objects
    try:
        assert requests.delete(f"{service.url}/api/v1/jobs/{job_id}", headers=service.headers()).status_code == 204
        until(lambda: not list(client.list_objects("videos", prefix, recursive=True)), what="objects removed")
    finally:
        service.close()


def test_an_item_waits_for_the_store_and_completes_when_it_is_back(tmp_path, files, s3, cache):
    settings = make_settings(tmp_path, files, **s3.settings())
    service = LiveServer(settings)
    try:
        assert requests.get(service.url + "/readyz").status_code == 200
        s3.stop()
        job_id = requests.post(service.url + "/api/v1/jobs", headers=service.headers(), json={
            "audio_url": files["speech"], "templates": [files["h264"]]}).json()["id"]
        storing = until(lambda: (job := job_of(service, job_id))["items"][0]["stage"] == "storing the video" and job,
                        what="the item rendered and waiting for the store")
        assert storing["status"] == "running" and storing["items"][0]["video_url"] is None
        ready = until(lambda: (ready := requests.get(service.url + "/readyz")).status_code == 503 and ready.json())
        assert ready["detail"] == "object storage is unreachable"  # no host named: /readyz is public
        time.sleep(3)  # attempts fail meanwhile; the local file stays
        assert os.path.isfile(os.path.join(settings.outputs_dir, "acme", job_id, "output_001.mp4"))
        s3.start()  # back, empty: the bucket is made again
        job = finished(service, job_id)
        assert job["status"] == "succeeded"
        video = requests.get(job["video_urls"][0])
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        until(lambda: requests.get(service.url + "/readyz").status_code == 200, what="ready again")
        # No ZIP was asked for, and the videos are in the bucket: none is made from nothing.
        archive = requests.get(f"{service.url}/api/v1/jobs/{job_id}/archive", headers=service.headers())
        assert archive.status_code == 404 and "zip" in archive.json()["detail"]
    finally:
        service.close()


def test_retry_after_refusals_redelivery_and_a_rotated_secret(tmp_path, files, cache, monkeypatch):
    receiver = CallbackReceiver([429, 404], retry_after=2)
    settings = make_settings(tmp_path, files, allowed_hosts=[files["allow"], receiver.allow],
                             callback_backoff_seconds=0.2)
    service = LiveServer(settings)
    try:
        headers = service.headers()
        refused = requests.post(service.url + "/api/v1/jobs", headers=headers, json={
            "audio_url": files["speech"], "templates": [files["h264"]], "callback_url": "http://169.254.169.254/hook"})
        assert refused.status_code == 400 and "callback_url" in refused.json()["detail"]
        answer = requests.post(service.url + "/api/v1/jobs", headers=headers, json={
            "audio_url": files["speech"], "templates": [files["h264"], files["noface"]], "callback_url": receiver.url})
        job_id = answer.json()["id"]
        running = requests.post(f"{service.url}/api/v1/jobs/{job_id}/callback/redeliver", headers=headers)
        assert running.status_code == 409
        job = until(lambda: (job := job_of(service, job_id))["callback"] and job["callback"]["status"] == "failed"
                    and job, what="the delivery refused")
        assert job["status"] == "partial"
        assert "HTTP 404" in job["callback"]["last_error"] and job["callback"]["attempts"] == 2
        first, second = receiver.requests
        assert second["time"] - first["time"] >= 1.9  # Retry-After: 2, not the 0.2 s backoff
        event = json.loads(first["body"])
        assert event["event"] == "job.partial" and event["text"].startswith("1 of 2 videos ready:")
        assert "no face" in event["text"] and event["items"][1]["url"] is None
        # Nothing top-level is null: Dify's webhook trigger refuses null for a typed variable.
        assert None not in event.values() and event["archive_url"] == "" and event["metadata"] == {}

        # The operator rotates the tenant's secret: the old one still verifies for a day.
        monkeypatch.setenv("HEYGEM_DATA_DIR", settings.data_dir)
        monkeypatch.setenv("HEYGEM_JWT_SECRET", settings.jwt_secret)
        old = requests.get(service.url + "/api/v1/callbacks/secret", headers=headers).json()["secret"]
        assert heygem(["tenant", "secret", "acme", "--rotate"]) == 0
        new = requests.get(service.url + "/api/v1/callbacks/secret", headers=headers).json()["secret"]
        assert new != old
        again = requests.post(f"{service.url}/api/v1/jobs/{job_id}/callback/redeliver", headers=headers)
        assert again.status_code == 202
        until(receiver.accepted, what="the redelivery")
        redelivered = receiver.accepted()[0]
        assert redelivered["headers"]["X-Heygem-Delivery"] != first["headers"]["X-Heygem-Delivery"]
        assert len(redelivered["headers"]["X-Heygem-Signature"].split(",")) == 3  # t, v1 (new), v1 (old)
        for secret in (old, new):
            receiver.secret = secret
            assert receiver.valid(redelivered["headers"], redelivered["body"])
        receiver.secret = "whsec_wrong"
        assert not receiver.valid(redelivered["headers"], redelivered["body"])
        assert until(lambda: job_of(service, job_id)["callback"]["status"] == "delivered", what="delivered")
        no_callback = requests.post(service.url + "/api/v1/jobs", headers=headers, json={
            "audio_url": files["speech"], "templates": [files["h264"]], "wait_seconds": 55}).json()
        assert no_callback["callback"] is None
        assert requests.post(f"{service.url}/api/v1/jobs/{no_callback['id']}/callback/redeliver",
                             headers=headers).status_code == 400
    finally:
        service.close()
        receiver.close()


class TricklingReceiver:
    """Answers a POST's status line, then one header byte a second: a receiver that never ends."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.allow = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            threading.Thread(target=self.trickle, args=(connection,), daemon=True).start()

    def trickle(self, connection):
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                for byte in b"X-Slow: " + b"x" * 100:
                    if self.stop.wait(1.0):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.server.close()


def finished_without_rendering(store, tenant: str, callback_url: str) -> str:
    """A job whose only item failed: it ends at once, with a callback queued."""
    job, _ = store.create_job(tenant, "https://example.com/a.wav", None, "a.wav", ["https://example.com/t.mp4"],
                              callback_url, None, False, None, None)
    store.finish_item(store.claim_item(), "failed", error="no face found")
    return job.id


def test_a_stalled_receiver_holds_back_only_its_own_tenant(tmp_path):
    slow, good = TricklingReceiver(), CallbackReceiver()
    settings = make_settings(tmp_path, allowed_hosts=[slow.allow, good.allow], callback_timeout=2,
                             callback_backoff_seconds=30)
    service = LiveServer(settings, start_workers=False)
    store, deliverer, stop = service.app.extensions["store"], service.app.extensions["deliverer"], threading.Event()
    thread = threading.Thread(target=deliverer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        stalled = finished_without_rendering(store, "slowco", slow.url)
        time.sleep(0.3)  # its attempt is in flight
        for _ in range(80):  # and many more of the same tenant's wait behind it
            finished_without_rendering(store, "slowco", slow.url)
        slowco = {"Authorization": service.headers("slowco")["Authorization"]}
        again = requests.post(f"{service.url}/api/v1/jobs/{stalled}/callback/redeliver", headers=slowco)
        assert again.status_code == 409 and "still on its way" in again.json()["detail"]
        started = time.monotonic()
        others = [finished_without_rendering(store, tenant, good.url) for tenant in ("acme", "globex")]
        until(lambda: len(good.accepted()) == 2, timeout=10, what="the other tenants' callbacks")
        assert time.monotonic() - started < 1.5  # not behind the stalled one
        assert {json.loads(r["body"])["job_id"] for r in good.accepted()} == set(others)
        delivery = until(lambda: (d := store.latest_delivery(stalled)).attempts and d, timeout=10, what="cut off")
        assert delivery.status == "pending" and "no complete answer within 2 s" in delivery.last_error
        assert delivery.next_attempt > time.time() + 10  # backing off, not hammering
    finally:
        stop.set()
        deliverer.wake()
        thread.join(5)
        service.close()
        slow.close()
        good.close()


def test_a_video_rendered_before_a_restart_is_stored_not_rendered_again(tmp_path, files, media, cache, monkeypatch):
    settings = make_settings(tmp_path, files)
    first = LiveServer(settings, start_workers=False)
    job_id = requests.post(first.url + "/api/v1/jobs", headers=first.headers(), json={
        "audio_url": files["speech"], "templates": [files["h264"], files["h264"]]}).json()["id"]
    store = first.app.extensions["store"]
    store.claim_item()  # a worker rendered it to the end, then the process died before recording it
    folder = os.path.join(settings.outputs_dir, "acme", job_id)
    os.makedirs(folder)
    shutil.copy(media["h264"], os.path.join(folder, "output_001.mp4"))
    first.close()
    rendered = []
    real_render = engine.render
    monkeypatch.setattr(engine, "render", lambda audio, template, output, **kw: rendered.append(output) or
                        real_render(audio, template, output, **kw))
    second = LiveServer(settings)
    try:
        job = finished(second, job_id)
    finally:
        second.close()
    assert job["status"] == "succeeded" and len(job["video_urls"]) == 2
    assert [os.path.basename(path) for path in rendered] == ["output_002.mp4"]  # the first was not rendered again


def test_an_upload_cut_off_midway_fails_cleanly_and_succeeds_once_the_store_is_back(tmp_path, s3):
    settings = make_settings(tmp_path, **s3.settings(s3_part_mb=5))
    storage = S3Storage(settings)
    path = str(tmp_path / "big.mp4")
    with open(path, "wb") as handle:
        handle.write(os.urandom(80 * 2**20))  # 16 parts: the store dies while they go up
    outcome = []

    def upload():
        try:
            storage.put("heygem/acme/job/output_001.mp4", path, "video/mp4")
            outcome.append("stored")
        except StorageError as exc:
            outcome.append(exc)

    uploading = threading.Thread(target=upload)
    uploading.start()
    time.sleep(0.3)
    s3.stop()
    uploading.join(60)
    assert isinstance(outcome[0], StorageError) and "could not store heygem/acme/job/output_001.mp4" in str(outcome[0])
    assert os.path.getsize(path) == 80 * 2**20  # the local file is untouched
    s3.start()
    storage.put("heygem/acme/job/output_001.mp4", path, "video/mp4")
    assert s3.client().stat_object("videos", "heygem/acme/job/output_001.mp4").size == 80 * 2**20


def test_retry_after_takes_ascii_seconds_or_a_date():
    from gateway.callbacks import retry_after

    assert retry_after("120") == 120.0 and retry_after("²") is None and retry_after("1e9") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and retry_after(None) is None
