"""Remote HeyGem engines behind the same job API (a stand-in of Duix.Heygem's video service, a real
Gradio app), and the gateway's own HeyGem-compatible /easy endpoints."""
from __future__ import annotations

import os
import threading
import time
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import av
import pytest
import requests

from gateway_support import free_port, until
from heygem_standin import GradioHeygemApp, HeygemVideoService, easy_render

FAST = dict(engine_poll_seconds=0.2, engine_poll_max_seconds=0.5, engine_unreachable_seconds=60)


def submit(server, templates, audio) -> str:
    answer = requests.post(server.url + "/api/v1/jobs", headers=server.headers(),
                           json={"audio_url": audio, "templates": templates})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def finished(server, job_id, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{server.url}/api/v1/jobs/{job_id}", headers=server.headers()).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']}: {job['items']}")


def assert_video(url: str, tmp_path) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.mp4"
    path.write_bytes(requests.get(url, timeout=30).content)
    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.audio
        assert container.duration / 1e6 > 1.0


@pytest.fixture()
def heygem(tmp_path):
    service = HeygemVideoService(str(tmp_path / "heygem-data"), render_seconds=1.5)
    yield service
    service.close()


def easy_settings(heygem, **extra):
    return dict(engine="heygem-easy", engine_url=heygem.url, engine_shared_dir=heygem.data, **FAST, **extra)


def test_the_stand_in_speaks_heygems_protocol(heygem, media, files):
    """The stand-in, driven by the client code HeyGem's users write: busy while a task runs,
    10002 on a missing field, a finished task forgotten once reported."""
    code = str(uuid.uuid4())
    assert heygem.submit({"audio_url": files["speech"]})["code"] == 10002
    done = easy_render(heygem.url, files["speech"], files["h264"], code)
    assert done["data"]["status"] == 2 and done["data"]["result"] == f"/code/data/temp/{code}-r.mp4"
    assert os.path.isfile(os.path.join(heygem.data, "temp", f"{code}-r.mp4"))
    assert heygem.query(code)["code"] == 10004
    heygem.occupy(1.0)
    assert heygem.submit({"audio_url": "a", "video_url": "b", "code": "c"})["code"] == 10001


def test_a_batch_on_heygem_waits_while_it_is_busy(live, files, heygem, tmp_path):
    server = live(files, **easy_settings(heygem))
    heygem.occupy(2.0)  # someone else's video first
    job = finished(server, submit(server, [files["h264"], files["hevc"], files["mpeg4"]], files["speech"]))
    assert job["status"] == "succeeded", job["items"]
    for url in job["video_urls"]:
        assert_video(url, tmp_path)
    assert heygem.busy_answers >= 1 and len(heygem.submits) == 3
    assert os.listdir(os.path.join(heygem.data, "temp")) == [], "staged inputs and results are cleaned up"
    metrics = requests.get(server.url + "/metrics", headers=server.headers(scopes=("metrics:read",))).text
    assert 'heygem_engine_busy_answers_total{engine="heygem-easy"}' in metrics
    assert 'heygem_engine_slots{engine="heygem-easy"} 1.0' in metrics
    ready = requests.get(server.url + "/readyz").json()
    assert ready["engine"]["name"] == "heygem-easy" and ready["engine"]["reachable"] is True


def test_heygem_restarting_mid_task_gets_the_task_again(live, files, heygem):
    heygem.render_seconds = 3.0
    server = live(files, **easy_settings(heygem))
    job_id = submit(server, [files["h264"], files["hevc"]], files["speech"])
    until(lambda: heygem.running and heygem.tasks.get(heygem.running, {}).get("progress", 0) >= 27, what="rendering")
    heygem.restart(down_seconds=1.5)  # forgets the task; refuses connections meanwhile
    job = finished(server, job_id)
    assert job["status"] == "succeeded", job["items"]
    assert len(heygem.submits) == 3  # the forgotten task was sent again, once


def test_the_gateway_restarting_finds_its_task_again(live, files, heygem):
    heygem.render_seconds = 3.0
    first = live(files, **easy_settings(heygem))
    job_id = submit(first, [files["h264"]], files["speech"])
    until(lambda: heygem.running is not None, what="the task on HeyGem")
    first.close()
    second = live(files, **easy_settings(heygem))
    job = finished(second, job_id)
    assert job["status"] == "succeeded", job["items"]
    assert len(heygem.submits) == 1  # found running, not sent twice


def test_heygems_failures_come_back_in_words_a_user_can_act_on(live, files, heygem):
    server = live(files, **easy_settings(heygem))
    heygem.fail_with = "Multiple faces detected in video"
    job = finished(server, submit(server, [files["h264"]], files["speech"]))
    assert job["status"] == "failed"
    assert "more than one face" in job["items"][0]["error"] and "Multiple faces" in job["items"][0]["error"]


def test_a_stuck_heygem_task_fails(live, files, heygem):
    server = live(files, **easy_settings(heygem, engine_stall_seconds=1.5))
    heygem.stall = True
    job = finished(server, submit(server, [files["h264"]], files["speech"]))
    assert "no progress" in job["items"][0]["error"] and "stuck at" in job["items"][0]["error"]


def test_cancel_stops_waiting_for_heygem(live, files, heygem):
    server = live(files, **easy_settings(heygem))
    heygem.stall = True  # it would never finish
    job_id = submit(server, [files["h264"]], files["speech"])
    until(lambda: heygem.running is not None, what="the task on HeyGem")
    started = time.monotonic()
    requests.post(f"{server.url}/api/v1/jobs/{job_id}/cancel", headers=server.headers())
    job = finished(server, job_id, timeout=10)
    assert job["status"] == "canceled" and time.monotonic() - started < 5


def test_heygem_without_a_shared_folder_fetches_inputs_by_link(live, files, heygem):
    """Inputs by short links the gateway serves; the result fetched from HeyGem's data folder
    served over HTTP."""
    results = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=heygem.data))
    threading.Thread(target=results.serve_forever, daemon=True).start()
    port = free_port()
    try:
        server = live(files, port=port, public_url=f"http://127.0.0.1:{port}", engine="heygem-easy",
                      engine_url=heygem.url, engine_result_url=f"http://127.0.0.1:{results.server_port}", **FAST)
        job = finished(server, submit(server, [files["h264"], files["hevc"]], files["speech"]))
        assert job["status"] == "succeeded", job["items"]
        assert all(s["audio_url"].startswith(server.url + "/engine-inputs/") for s in heygem.submits)
        # The links were for the task alone: an unknown one is refused.
        assert requests.get(server.url + "/engine-inputs/forged/x.wav").status_code == 404
    finally:
        results.shutdown()


@pytest.fixture()
def gradio_app(tmp_path):
    app = GradioHeygemApp(str(tmp_path / "gradio"), free_port(), render_seconds=1.5)
    yield app
    app.stop()


def test_a_batch_on_a_gradio_webui_with_a_restart_and_a_failure(live, files, gradio_app, tmp_path):
    from gradio_client import Client, handle_file
    server = live(files, engine="gradio", engine_url=gradio_app.url, **FAST)
    # Busy: another user's call holds the app's single slot.
    other = Client(gradio_app.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / "other"))
    other.submit(handle_file(files["speech"]), handle_file(files["h264"]), api_name="/predict")
    job = finished(server, submit(server, [files["h264"], files["hevc"], files["mpeg4"]], files["speech"]))
    assert job["status"] == "succeeded", job["items"]
    for url in job["video_urls"]:
        assert_video(url, tmp_path)
    other.close()

    # The app restarts while it renders ours: the call is sent again.
    job_id = submit(server, [files["h264"]], files["speech"])
    until(lambda: requests.get(f"{server.url}/api/v1/jobs/{job_id}", headers=server.headers()).json()["items"][0]
          ["stage"] == "rendering on the Gradio app", what="rendering on Gradio")
    gradio_app.stop()
    gradio_app.start()
    job = finished(server, job_id)
    assert job["status"] == "succeeded", job["items"]

    gradio_app.fail("multiple faces in the video")
    job = finished(server, submit(server, [files["h264"]], files["speech"]))
    assert job["status"] == "failed"
    assert job["items"][0]["error"] == "the Gradio app could not make this video: multiple faces in the video"


def test_our_easy_endpoints_serve_heygems_clients(live, files, tmp_path):
    server = live(files)
    headers = server.headers()
    code = str(uuid.uuid4())
    done = easy_render(server.url, files["speech"], files["h264"], code, headers=headers)
    assert done["code"] == 10000 and done["data"]["status"] == 2, done
    assert_video(done["data"]["result"], tmp_path)
    # Reported again (HeyGem would forget it; its clients do not mind either way).
    again = requests.get(server.url + "/easy/query", params={"code": code}, headers=headers).json()
    assert again["data"]["status"] == 2
    assert requests.get(server.url + "/easy/query", params={"code": "nope"}, headers=headers).json()["code"] == 10004
    sent = requests.post(server.url + "/easy/submit", headers=headers, json={"code": code, "audio_url": files["tone"],
                                                                              "video_url": files["h264"]}).json()
    assert sent["code"] == 10002 and "another task" in sent["msg"]
    sent = requests.post(server.url + "/easy/submit", headers=headers, json={"code": "x", "audio_url": files["speech"]}).json()
    assert sent["code"] == 10002 and "video_url" in sent["msg"]
    sent = requests.post(server.url + "/easy/submit", headers=headers,
                         json={"code": "y", "audio_url": "http://169.254.169.254/a.wav", "video_url": files["h264"]}).json()
    assert sent["code"] == 10002 and "internal address" in sent["msg"]
    failed = easy_render(server.url, files["speech"], files["noface"], str(uuid.uuid4()), headers=headers)
    assert failed["data"]["status"] == 3 and "face" in failed["data"]["msg"]
    assert requests.post(server.url + "/easy/submit", json={"code": "z"}).status_code == 401


def test_easy_endpoints_take_the_token_in_the_query_when_allowed(live, files):
    server = live(files, easy_token_in_query=True)
    token = server.headers()["Authorization"].split()[1]
    done = easy_render(server.url, files["speech"], files["h264"], str(uuid.uuid4()), params={"token": token})
    assert done["data"]["status"] == 2
    # Only there: the rest of the API still wants the header.
    assert requests.get(server.url + "/api/v1/jobs", params={"token": token}).status_code == 401
    closed = live(files)
    assert requests.get(closed.url + "/easy/query", params={"code": "a", "token": token}).status_code == 401


def test_a_result_that_links_elsewhere_is_not_taken(live, files, heygem, tmp_path):
    """HeyGem's data folder is shared: a result that is a symlink (to a secret of ours) is refused."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for users")
    server = live(files, **easy_settings(heygem))
    original = heygem._work

    def linking(body, generation):
        original(body, generation)
        result = os.path.join(heygem.data, "temp", f"{body['code']}-r.mp4")
        os.remove(result)
        os.symlink(secret, result)
    heygem._work = linking
    job = finished(server, submit(server, [files["h264"]], files["speech"]))
    assert job["status"] == "failed" and "is a link" in job["items"][0]["error"]
