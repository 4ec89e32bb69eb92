"""The operator console in a real browser (Debian's Chromium through Playwright) against a live
gateway with real renders: sign in, a two-template batch from the page with live progress, the
ZIP's entries, playing a result, deleting a job, a template without a face, single mode, Chinese.
Screenshots of each screen go to the test's output folder (and HEYGEM_SCREENSHOTS if set)."""
from __future__ import annotations

import io
import os
import re
import shutil
import zipfile

import pytest
import requests
from playwright.sync_api import expect, sync_playwright



@pytest.fixture()
def service(live, files):
    return live(files, max_download_mb=50)


@pytest.fixture()
def page(tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "the console's tests need Debian's chromium (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # confirmations
        yield page
        browser.close()


def shoot(page, tmp_path, name):
    folders = [tmp_path / "screens"] + ([os.environ["HEYGEM_SCREENSHOTS"]] if os.environ.get("HEYGEM_SCREENSHOTS") else [])
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, name), full_page=True)


def test_an_operator_runs_a_batch_from_the_page(service, page, media, tmp_path):
    page.goto(service.url + "/")
    expect(page.locator("#sign-in")).to_be_visible()
    page.fill("#token", "not-a-token")
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("not accepted")
    shoot(page, tmp_path, "01-sign-in.png")
    page.fill("#token", service.headers()["Authorization"].split()[1])
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#tenant")).to_have_text("acme")

    # Batch: one narration, two templates dropped in (uploaded and analysed), start.
    page.set_input_files("#audio-file", media["speech"])
    expect(page.locator("#audio-preview")).to_be_visible()
    page.set_input_files("#template-files", [media["h264"], media["tall"]])
    expect(page.locator("#chosen li")).to_have_count(2, timeout=60_000)
    expect(page.locator("#picker button[aria-pressed=true]")).to_have_count(2)
    shoot(page, tmp_path, "02-batch-ready.png")
    page.click("#start")
    expect(page.locator("#run")).to_be_visible()
    expect(page.locator("#run-items li")).to_have_count(2, timeout=30_000)
    shoot(page, tmp_path, "03-batch-running.png")
    expect(page.locator("#run-summary")).to_contain_text("2 of 2 done", timeout=120_000)
    expect(page.locator("#run-summary")).to_contain_text("succeeded")
    expect(page.locator("#run-items li.done")).to_have_count(2)
    shoot(page, tmp_path, "04-batch-done.png")
    archive = requests.get(page.get_attribute("#run-zip", "href"))
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert bundle.namelist() == ["output_001.mp4", "output_002.mp4", "manifest.json"]

    # History: open the job, play a video, delete the job.
    page.click("#tab-history")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    page.click("#jobs tbody tr button")
    expect(page.locator("#job-items video")).to_have_count(2)
    played = page.evaluate("""async () => {
        const video = document.querySelector('#job-items video');
        video.muted = true;
        await video.play();
        await new Promise((done) => setTimeout(done, 700));
        return {time: video.currentTime, width: video.videoWidth, error: video.error && video.error.code};
    }""")
    assert played["error"] is None and played["time"] > 0 and played["width"] == 320, played
    shoot(page, tmp_path, "05-history-job.png")
    page.click("#job-delete")
    expect(page.locator("#jobs tbody")).to_contain_text("No jobs yet.")

    # The library: a template without a face says why.
    page.click("#tab-library")
    page.set_input_files("#library-files", media["noface"])
    expect(page.locator("#templates li")).to_have_count(3, timeout=60_000)
    expect(page.locator("#templates .rejected")).to_contain_text("no face")
    shoot(page, tmp_path, "06-library.png")

    # Single mode: one template from the library; the result plays on the page.
    page.click("#tab-single")
    page.click("#picker li:first-child button")
    expect(page.locator("#chosen li")).to_have_count(1)
    page.click("#start")
    expect(page.locator("#run-player")).to_be_visible(timeout=120_000)
    shoot(page, tmp_path, "07-single-done.png")

    # Chinese.
    page.select_option("#language", "zh")
    expect(page.locator("#tab-history")).to_have_text("历史")
    page.click("#tab-history")
    expect(page.locator("#jobs tbody tr td").nth(1)).to_have_text(re.compile("成功|进行中|排队中"))
    shoot(page, tmp_path, "08-history-zh.png")
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('heygem-token')") is None


def test_the_page_is_served_with_a_strict_policy(service):
    answer = requests.get(service.url + "/")
    assert answer.status_code == 200 and "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert "<script" in answer.text and "cdn" not in answer.text.lower()
    assert requests.get(service.url + "/ui/console.js").headers["Content-Type"].startswith("text/javascript")
    assert requests.get(service.url + "/ui/../gateway/store.py").status_code == 404
