import json
import os
import subprocess
import sys


def run(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, **kwargs)


def test_render_command(media, cache_dir, tmp_path):
    result = run("-m", "engine.cli", "render", "--audio", media["speech"], "--template", media["h264"],
                 "--template", media["noface"], "--out", str(tmp_path))
    assert result.returncode == 1  # one template failed, and says why
    assert "no face" in result.stderr
    assert os.path.exists(tmp_path / "output_001.mp4")


def test_evaluate_command(media, cache_dir, tmp_path):
    out = tmp_path / "output_001.mp4"
    assert run("-m", "engine.cli", "render", "--audio", media["speech"], "--template", media["portrait"],
               "--out", str(tmp_path)).returncode == 0
    result = run("-m", "engine.evaluate", str(out), "--template", media["portrait"])
    report = json.loads(result.stdout)
    assert {"av_offset_frames", "av_peak_corr", "psnr_above_nose_db", "mouth_sharpness_ratio"} <= report.keys()
    assert os.path.exists(report["contact_sheet"])
