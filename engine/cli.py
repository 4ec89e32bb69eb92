"""`heygem` command line: render narrations onto templates, or the bundled demo."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from tqdm import tqdm

from .errors import EngineError
from .pipeline import render_batch

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
DEMO_PORTRAIT = os.path.join(ASSETS, "astronaut.jpg")
DEMO_TEXT = ("Hello! I am your digital presenter. Give me any narration, in English or in Mandarin, "
             "and I will say it for you. Pauses keep my mouth closed. Bye for now.")


def _render(audio: str, templates: list[str], out_dir: str) -> int:
    bars: dict[int, tqdm] = {}

    def progress(index: int, done: int, total: int) -> None:
        if index not in bars:
            bars[index] = tqdm(total=total, unit="frame", desc=os.path.basename(templates[index]), leave=True)
        bar = bars[index]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:
        results = render_batch(audio, templates, out_dir, on_progress=progress)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for template, result in zip(templates, results):
        if isinstance(result, EngineError):
            failed += 1
            print(f"FAILED {template}: {result}", file=sys.stderr)
        else:
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
            cached = " (template cached)" if result.template_cached else ""
            print(f"{result.output}  {result.width}x{result.height} {result.fps:g} fps {result.duration:.1f}s  "
                  f"[{stages}]{cached}")
    return 1 if failed else 0


def _demo(out_dir: str) -> int:
    espeak = shutil.which("espeak-ng")
    if not espeak:
        print("error: espeak-ng is not installed (Debian: apt-get install espeak-ng); `make demo` installs it",
              file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    narration = os.path.join(out_dir, "narration.wav")
    subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", narration, DEMO_TEXT], check=True)
    code = _render(narration, [DEMO_PORTRAIT], out_dir)
    if code == 0:
        print(f"\nDemo video: {os.path.abspath(os.path.join(out_dir, 'output_001.mp4'))}")
    return code


def add_commands(commands) -> None:
    """The engine's subcommands (`render`, `demo`), also mounted by the gateway's `heygem`."""
    render = commands.add_parser("render", help="render one narration onto one or more templates")
    render.add_argument("--audio", required=True, help="narration: wav, mp3, m4a, ogg, flac, ...")
    render.add_argument("--template", action="append", required=True,
                        help="template video or portrait image; repeat for a batch")
    render.add_argument("--out", required=True, help="output directory (output_001.mp4, ...)")
    render.set_defaults(handler=lambda args: _render(args.audio, args.template, args.out))
    demo = commands.add_parser("demo", help="synthesise a narration and render it onto the bundled portrait")
    demo.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "heygem-demo"))
    demo.set_defaults(handler=lambda args: _demo(args.out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heygem", description="Lip-sync narrations onto presenter templates.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
