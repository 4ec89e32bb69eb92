"""Quality figures over real media: every video and portrait as a template, with English and
Mandarin narrations, and cross-reconstruction on every talking clip with sound, with each half
as the template in turn.

    python benchmarks/quality.py [--media ../shared/media] [--out DIR]

Prints a Markdown table and writes report.json and contact sheets into DIR.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine import EngineError, render  # noqa: E402
from engine.evaluate import cross_reconstruction, evaluate_render  # noqa: E402
import av  # noqa: E402

NARRATIONS = ["whisper.cpp__jfk.wav", "SadTalker__RD_Radio31_000.wav", "PaddleSpeech__zh.wav", "SadTalker__bus_chinese.wav"]


def _has_sound(path: str) -> bool:
    """Cross-reconstruction needs the clip's own sound (LivePortrait's driving clips have none)."""
    with av.open(path) as container:
        return bool(container.streams.audio)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", default=os.path.join(ROOT, "..", "shared", "media"))
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="heygem-quality-"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    templates = sorted(glob.glob(os.path.join(args.media, "video", "*"))) + sorted(glob.glob(os.path.join(args.media, "image", "*")))
    rows, report = [], {"renders": [], "cross": []}
    for template in templates:
        for narration in NARRATIONS:
            name = f"{os.path.splitext(os.path.basename(template))[0]}__{os.path.splitext(narration)[0]}"
            output = os.path.join(args.out, name + ".mp4")
            try:
                render(os.path.join(args.media, "audio", narration), template, output)
            except EngineError as exc:  # reported in the table; the other templates still run
                report["renders"].append({"template": os.path.basename(template), "narration": narration, "error": str(exc)})
                rows.append(f"| {os.path.basename(template)} | {narration} | failed: {exc} | | | | |")
                print(rows[-1], flush=True)
                continue
            figures = evaluate_render(output, template, os.path.join(args.out, name + ".sheet.png"))
            figures.update(template=os.path.basename(template), narration=narration)
            report["renders"].append(figures)
            rows.append(f"| {figures['template']} | {narration} | {figures['av_offset_frames']} | {figures['av_peak_corr']} | "
                        f"{figures['silence_aperture_above_closed']} | {figures['psnr_above_nose_db']} | {figures['mouth_sharpness_ratio']} |")
            print(rows[-1], flush=True)
    print("\n| template | narration | AV offset | peak corr | silence | PSNR above nose | sharpness |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print("\n| talking clip | template half | M-LMD output | M-LMD template | ratio | aperture corr | template corr | truth's own AV offset / corr | narration shift |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    talking = [path for path in sorted(glob.glob(os.path.join(args.media, "video", "*"))) if _has_sound(path)]
    for clip, reverse in ((clip, reverse) for clip in talking for reverse in (False, True)):
        cross = cross_reconstruction(clip, args.out, reverse)
        report["cross"].append(cross)
        print(f"| {os.path.basename(clip)} | {cross['template_half']} | {cross['mlmd_output']} | {cross['mlmd_unchanged_template']} | {cross['mlmd_ratio']} | "
              f"{cross['aperture_corr_with_truth']} | {cross['template_aperture_corr_with_truth']} | "
              f"{cross['truth_own_av_offset_frames']} / {cross['truth_own_av_corr']} | {cross['narration_shift_frames']} |", flush=True)
    with open(os.path.join(args.out, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"\nreport and contact sheets in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
