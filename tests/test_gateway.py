"""The gateway end to end through HTTP (Flask's WSGI client), with real renders by the engine.
Remote files come from a local HTTP server, which the tests allow past the SSRF guard."""
from __future__ import annotations

import io
import json
import os
import time
import zipfile

import jwt
import pytest

from gateway import create_app
from gateway.auth import create_token
from gateway.config import Settings
from gateway_support import SECRET, auth, make_settings, wait


@pytest.fixture()
def service(tmp_path, files, monkeypatch):
    monkeypatch.setenv("HEYGEM_CACHE_DIR", str(tmp_path / "cache"))
    settings = make_settings(tmp_path, files)
    app = create_app(settings)
    yield app
    app.extensions["workers"].shutdown()


def test_batch_with_a_failing_item_and_the_archive(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    body = {"audio_url": files["speech"], "templates": [files["h264"], files["noface"], files["text"]],
            "metadata": {"run": 7}, "zip": True}
    answer = client.post("/api/v1/jobs", json=body, headers=headers)
    assert answer.status_code == 202, answer.get_json()
    job = wait(client, headers, answer.get_json()["id"])
    assert job["status"] == "partial" and job["metadata"] == {"run": 7}
    first, noface, text = job["items"]
    assert first["status"] == "succeeded" and first["video_url"]
    assert noface["status"] == "failed" and "no face" in noface["error"]
    assert text["status"] == "failed" and "not a readable media file" in text["error"]
    assert job["progress"]["percent"] == 100.0 and job["video_urls"] == [first["video_url"]]

    video = client.get(first["video_url"])  # a signed link: no token needed
    assert video.status_code == 200 and video.mimetype == "video/mp4" and video.data[4:8] == b"ftyp"
    archive = client.get(job["archive_url"])
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.data)) as bundle:
        assert bundle.namelist() == ["output_001.mp4", "manifest.json"]
        assert bundle.getinfo("output_001.mp4").compress_type == zipfile.ZIP_STORED
        manifest = json.loads(bundle.read("manifest.json"))
    assert [i["status"] for i in manifest["items"]] == ["succeeded", "failed", "failed"]
    assert client.get(f"/api/v1/jobs/{job['id']}/archive", headers=headers).data == archive.data
    assert client.get("/download/not-a-token").status_code == 404


def test_wait_seconds_answers_when_done_and_generate_batch_alias(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    answer = client.post("/api/v1/generate-batch", headers=headers, json={
        "audio_url": files["speech"], "video_templates": [files["h264"]], "wait_seconds": 55})
    assert answer.status_code == 200 and answer.get_json()["status"] == "succeeded"
    assert answer.get_json()["archive_url"] is None  # no ZIP asked for


def test_idempotency(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = {**auth(settings), "Idempotency-Key": "order-42"}
    body = {"audio_url": files["speech"], "templates": [files["h264"]]}
    first = client.post("/api/v1/jobs", json=body, headers=headers).get_json()
    again = client.post("/api/v1/jobs", json=body, headers=headers).get_json()
    assert first["id"] == again["id"]
    other = client.post("/api/v1/jobs", json={**body, "templates": [files["tall"]]}, headers=headers)
    assert other.status_code == 409 and other.mimetype == "application/problem+json"


def test_cancel_stops_a_running_item_and_delete_removes_everything(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    body = {"audio_url": files["pause"], "templates": [files["h264"], files["hevc"], files["tall"]]}
    job_id = client.post("/api/v1/jobs", json=body, headers=headers).get_json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()["items"][0]["stage"] != "rendering":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    asked = time.monotonic()
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)
    job = wait(client, headers, job_id, timeout=10)
    assert time.monotonic() - asked < 5
    assert job["status"] == "canceled" and {i["status"] for i in job["items"]} == {"canceled"}
    folder = os.path.join(settings.outputs_dir, "acme", job_id)
    assert not os.path.isdir(folder) or os.listdir(folder) == []  # no partial file left

    done = client.post("/api/v1/jobs", json={"audio_url": files["speech"], "templates": [files["h264"]]},
                       headers=headers).get_json()
    wait(client, headers, done["id"])
    assert os.path.isdir(os.path.join(settings.outputs_dir, "acme", done["id"]))
    assert client.delete(f"/api/v1/jobs/{done['id']}", headers=headers).status_code == 204
    assert client.get(f"/api/v1/jobs/{done['id']}", headers=headers).status_code == 404
    assert not os.path.exists(os.path.join(settings.outputs_dir, "acme", done["id"]))


def test_tenants_see_only_their_own_jobs(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    acme, globex = auth(settings, "acme"), auth(settings, "globex")
    job_id = client.post("/api/v1/jobs", json={"audio_url": files["speech"], "templates": [files["h264"]]},
                         headers=acme).get_json()["id"]
    assert client.get(f"/api/v1/jobs/{job_id}", headers=globex).status_code == 404
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=globex).status_code == 404
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=globex).status_code == 404
    assert client.get("/api/v1/jobs", headers=globex).get_json()["jobs"] == []
    assert [j["id"] for j in client.get("/api/v1/jobs", headers=acme).get_json()["jobs"]] == [job_id]


def test_history_is_newest_first_with_a_cursor(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    service.extensions["workers"].shutdown()  # keep them queued
    ids = [client.post("/api/v1/jobs", json={"audio_url": files["speech"], "templates": [files["h264"]]},
                       headers=headers).get_json()["id"] for _ in range(3)]
    page = client.get("/api/v1/jobs?limit=2", headers=headers).get_json()
    rest = client.get(f"/api/v1/jobs?limit=2&cursor={page['next_cursor']}", headers=headers).get_json()
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == ids[::-1] and rest["next_cursor"] is None
    queued = client.get("/api/v1/jobs?status=queued", headers=headers).get_json()["jobs"]
    assert len(queued) == 3 and queued[-1]["queue_position"] == 0
    assert client.get("/api/v1/jobs?status=bogus", headers=headers).status_code == 400


def test_tokens(service):
    client, settings = service.test_client(), service.config["SETTINGS"]
    assert client.get("/api/v1/jobs").status_code == 401
    now = int(time.time())
    base = {"sub": "acme", "scope": "jobs:read", "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
            "iat": now, "exp": now + 600}

    def status(claims, key=SECRET, algorithm="HS256"):
        token = jwt.encode(claims, key, algorithm=algorithm)
        return client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code

    assert status(base) == 200
    assert status({**base, "exp": now - 60}) == 401
    assert status({**base, "nbf": now + 600}) == 401
    assert status({**base, "aud": "someone-else"}) == 401
    assert status({**base, "iss": "someone-else"}) == 401
    assert status(base, key="x" * 40) == 401
    assert status({k: v for k, v in base.items() if k != "exp"}) == 401
    unsigned = jwt.encode(base, None, algorithm="none")
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {unsigned}"}).status_code == 401
    read_only = auth(settings, scopes=["jobs:read"])
    answer = client.post("/api/v1/jobs", json={}, headers=read_only)
    assert answer.status_code == 403 and "jobs:write" in answer.get_json()["detail"]
    token, jti = create_token(settings, "acme", ["jobs:read"], 600)
    service.extensions["store"].revoke(jti)
    revoked = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["detail"]


def test_bad_requests_get_clear_errors(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)

    def problem(body):
        answer = client.post("/api/v1/jobs", json=body, headers=headers)
        assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
        return answer.get_json()["detail"]

    assert "audio_url" in problem({"templates": [files["h264"]]})
    assert "templates" in problem({"audio_url": files["speech"]})
    assert "at most 50" in problem({"audio_url": files["speech"], "templates": [files["h264"]] * 51})
    assert "wait_seconds" in problem({"audio_url": files["speech"], "templates": [files["h264"]], "wait_seconds": 90})
    assert "http" in problem({"audio_url": "file:///etc/passwd", "templates": [files["h264"]]})
    assert client.post("/api/v1/jobs", data="not json", headers=headers).status_code == 400


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/a.wav", "http://169.254.169.254/latest/meta-data/",
                                 "http://10.0.0.5/a.wav", "http://localhost/a.wav", "http://[::1]/a.wav"])
def test_ssrf_guard_refuses_internal_addresses(tmp_path, url):
    app = create_app(make_settings(tmp_path, allowed_hosts=[]), start_workers=False)
    client = app.test_client()
    answer = client.post("/api/v1/jobs", json={"audio_url": url, "templates": ["http://example.com/t.mp4"]},
                         headers=auth(app.config["SETTINGS"]))
    assert answer.status_code == 400 and "internal address" in answer.get_json()["detail"]


def test_downloads_are_checked(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    body = {"audio_url": files["speech"], "templates": [files["redirect"], files["big"], files["base"] + "missing.mp4"]}
    job = wait(client, headers, client.post("/api/v1/jobs", json=body, headers=headers).get_json()["id"])
    redirect, big, missing = (item["error"] for item in job["items"])
    assert job["status"] == "failed"
    assert "169.254.169.254" in redirect and "internal address" in redirect
    assert "over the 2 MB limit" in big
    assert "HTTP 404" in missing
    bad_audio = {"audio_url": files["text"], "templates": [files["h264"]]}
    job = wait(client, headers, client.post("/api/v1/jobs", json=bad_audio, headers=headers).get_json()["id"])
    assert job["status"] == "failed" and "not a readable media file" in job["items"][0]["error"]


def test_restart_resumes_interrupted_items(tmp_path, files, monkeypatch):
    monkeypatch.setenv("HEYGEM_CACHE_DIR", str(tmp_path / "cache"))
    settings = make_settings(tmp_path, files)
    first = create_app(settings, start_workers=False)
    client = first.test_client()
    headers = auth(settings)
    job_id = client.post("/api/v1/jobs", json={"audio_url": files["speech"], "templates": [files["h264"], files["tall"]]},
                         headers=headers).get_json()["id"]
    first.extensions["store"].claim_item()  # a worker took the first item, then the process died
    assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()["status"] == "running"
    second = create_app(settings)
    try:
        job = wait(second.test_client(), headers, job_id)
        assert job["status"] == "succeeded" and len(job["video_urls"]) == 2
    finally:
        second.extensions["workers"].shutdown()


def test_health_metrics_and_spec(service):
    client, settings = service.test_client(), service.config["SETTINGS"]
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(settings)).status_code == 403  # jobs scopes only
    metrics = client.get("/metrics", headers=auth(settings, "prometheus", ["metrics:read"])).get_data(as_text=True)
    assert "heygem_queue_depth" in metrics and "heygem_disk_free_bytes" in metrics
    assert client.get("/openapi.yaml").status_code == 200


def test_templates_are_analysed_once_and_named_in_jobs(service, files, media):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    with open(media["h264"], "rb") as handle:
        uploaded = client.post("/api/v1/templates", headers=headers,
                               data={"file": (handle, "anna.mp4")}, content_type="multipart/form-data")
    assert uploaded.status_code == 201, uploaded.get_json()
    anna = uploaded.get_json()
    assert anna["status"] == "ready" and (anna["width"], anna["height"]) == (320, 320) and anna["fps"] == 25.0
    thumbnail = client.get(anna["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/jpeg"
    by_url = client.post("/api/v1/templates", headers=headers, json={"url": files["noface"]}).get_json()
    assert by_url["status"] == "rejected" and "no face" in by_url["reason"]
    notes = client.post("/api/v1/templates", headers=headers, json={"url": files["text"]})
    assert notes.status_code == 400 and "not a readable media file" in notes.get_json()["detail"]
    listed = client.get("/api/v1/templates", headers=headers).get_json()["templates"]
    assert {t["id"] for t in listed} == {anna["id"], by_url["id"]}
    assert client.get(f"/api/v1/templates/{anna['id']}", headers=auth(settings, "globex")).status_code == 404

    rejected = client.post("/api/v1/jobs", headers=headers, json={"audio_url": files["speech"], "templates": [by_url["id"]]})
    assert rejected.status_code == 400 and "rejected" in rejected.get_json()["detail"]
    job = client.post("/api/v1/jobs", headers=headers, json={"audio_url": files["speech"], "templates": [anna["id"]],
                                                             "wait_seconds": 55}).get_json()
    assert job["status"] == "succeeded"
    assert client.delete(f"/api/v1/templates/{anna['id']}", headers=headers).status_code == 204
    assert client.get(f"/api/v1/templates/{anna['id']}", headers=headers).status_code == 404


def test_narration_uploaded_with_the_job(service, files, media):
    client, settings = service.test_client(), service.config["SETTINGS"]
    headers = auth(settings)
    with open(media["mp3"], "rb") as handle:
        answer = client.post("/api/v1/jobs", headers={**headers, "Idempotency-Key": "upload-1"}, data={
            "audio": (handle, "narration.mp3"), "templates": [files["h264"], files["tall"]],
            "metadata": '{"from": "browser"}', "wait_seconds": "55"}, content_type="multipart/form-data")
    job = answer.get_json()
    assert answer.status_code == 200 and job["status"] == "succeeded" and len(job["video_urls"]) == 2
    assert job["metadata"] == {"from": "browser"}
    missing = client.post("/api/v1/jobs", headers=headers, data={"templates": [files["h264"]]},
                          content_type="multipart/form-data")
    assert missing.status_code == 400 and "'audio' file" in missing.get_json()["detail"]


def test_watcher_publishes_what_an_external_engine_writes(tmp_path, files, media):
    settings = make_settings(tmp_path, files, workers=0)  # no renderer here: something else writes outputs
    app = create_app(settings)
    try:
        client, headers = app.test_client(), auth(settings)
        job_id = client.post("/api/v1/jobs", json={"audio_url": files["speech"], "templates": [files["h264"]] * 2},
                             headers=headers).get_json()["id"]
        folder = os.path.join(settings.outputs_dir, "acme", job_id)
        os.makedirs(folder)
        with open(media["h264"], "rb") as source, open(os.path.join(folder, "output_002.mp4"), "wb") as out:
            out.write(source.read())
        time.sleep(2.5)
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
        assert [i["status"] for i in job["items"]] == ["queued", "succeeded"] and job["items"][1]["video_url"]
    finally:
        app.extensions["workers"].shutdown()


def test_queue_limit_disk_space_and_retention(tmp_path, files):
    settings = make_settings(tmp_path, files, queue_limit=2)
    app = create_app(settings, start_workers=False)
    client, headers = app.test_client(), auth(settings)
    body = {"audio_url": files["speech"], "templates": [files["h264"]] * 2}
    first = client.post("/api/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202
    full = client.post("/api/v1/jobs", json=body, headers=headers)
    assert full.status_code == 429 and full.headers["Retry-After"] == "60"
    settings.min_free_mb = 10**9
    low = client.post("/api/v1/jobs", json=body, headers=headers)
    assert low.status_code == 503 and "disk space" in low.get_json()["detail"]
    assert client.get("/readyz").status_code == 503
    job_id = first.get_json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)
    housekeeping = app.extensions["housekeeping"]
    assert housekeeping.sweep() == 0  # newer than the retention period
    settings.retention_days = 0
    assert housekeeping.sweep() == 1 and client.get(f"/api/v1/jobs/{job_id}", headers=headers).status_code == 404


def test_rs256_tokens_and_config_file(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    config = tmp_path / "heygem.conf"
    config.write_text(f"# gateway settings\nHEYGEM_JWT_PUBLIC_KEY_FILE={public}\nHEYGEM_JWT_AUDIENCE=dify\n"
                      "HEYGEM_WORKERS=3\n")
    settings = Settings.from_env(env={"HEYGEM_CONFIG": str(config), "HEYGEM_WORKERS": "2",
                                      "HEYGEM_DATA_DIR": str(tmp_path / "data")})
    assert settings.workers == 2 and settings.jwt_audience == "dify"  # the environment wins over the file
    client = create_app(settings, start_workers=False).test_client()
    now = int(time.time())
    claims = {"sub": "acme", "scope": "jobs:read", "iss": settings.jwt_issuer, "aud": "dify", "exp": now + 60}
    signed = jwt.encode(claims, key, algorithm="RS256")
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {signed}"}).status_code == 200
    # Algorithm confusion: an HS256 token keyed with the public key's text is refused.
    forged = jwt.encode(claims, "not-the-key" * 4, algorithm="HS256")
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_links_expire_and_nginx_can_send_files(tmp_path, files, monkeypatch):
    monkeypatch.setenv("HEYGEM_CACHE_DIR", str(tmp_path / "cache"))
    settings = make_settings(tmp_path, files, accel_redirect_prefix="/protected/")
    app = create_app(settings)
    try:
        client, headers = app.test_client(), auth(settings)
        job = client.post("/api/v1/jobs", headers=headers, json={"audio_url": files["speech"], "templates": [files["h264"]],
                                                                 "wait_seconds": 55}).get_json()
        sent = client.get(job["video_urls"][0])
        assert sent.headers["X-Accel-Redirect"] == f"/protected/acme/{job['id']}/output_001.mp4" and not sent.data
        settings.link_ttl = -1
        expired = client.get(job["video_urls"][0])
        assert expired.status_code == 410 and "expired" in expired.get_json()["detail"]
    finally:
        app.extensions["workers"].shutdown()


def test_links_do_not_show_server_paths(service, files):
    client, settings = service.test_client(), service.config["SETTINGS"]
    job = client.post("/api/v1/jobs", headers=auth(settings), json={
        "audio_url": files["speech"], "templates": [files["h264"]], "wait_seconds": 55}).get_json()
    token = job["video_urls"][0].rsplit("/", 1)[1]
    assert service.extensions["links"].serializer.loads(token) == ["video", job["id"], 0]
    for named in ("output:../../../../etc/passwd", ["video", "../../..", 0], ["thumbnail", "../../jwt-secret"]):
        assert client.get(f"/download/{service.extensions['links'].serializer.dumps(named)}").status_code == 404
