"""The console's first load in Debian's Chromium against `heygem serve` on this machine: bytes
transferred and time to interactive (DOMContentLoaded, its script deferred and run), cold cache,
several runs; then the time from pressing "Sign in" to the app showing.

    python benchmarks/console.py [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys

from playwright.sync_api import sync_playwright

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import Gateway  # noqa: E402

FIRST_LOAD = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  return {interactive: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
          bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
          files: 1 + resources.length};
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    gateway = Gateway().start()
    token = gateway.token("jobs:read", "jobs:write")
    loads, sign_ins = [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for _ in range(args.runs):
                context = browser.new_context()  # a cold cache each time
                page = context.new_page()
                page.goto(gateway.url + "/", wait_until="load")
                loads.append(page.evaluate(FIRST_LOAD))
                page.fill("#token", token)
                started = page.evaluate("performance.now()")
                page.click("#sign-in-form button[type=submit]")
                page.wait_for_selector("#app:not([hidden])")
                sign_ins.append(page.evaluate("performance.now()") - started)
                context.close()
            browser.close()
    finally:
        gateway.stop()
    interactive = [run["interactive"] for run in loads]
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gateway", "console")
    sizes = ", ".join(f"{name} {os.path.getsize(os.path.join(folder, name))}" for name in sorted(os.listdir(folder)))
    print(f"first load: {loads[0]['bytes']} bytes transferred in {loads[0]['files']} files (on disk: {sizes})")
    print(f"time to interactive (DOMContentLoaded, ms): median {statistics.median(interactive):.0f} "
          f"(min {min(interactive):.0f}, max {max(interactive):.0f}) over {len(loads)} cold loads")
    print(f"load event (ms): median {statistics.median(r['load'] for r in loads):.0f}")
    print(f"sign in -> app shown (ms): median {statistics.median(sign_ins):.0f} (min {min(sign_ins):.0f}, max {max(sign_ins):.0f})")


if __name__ == "__main__":
    main()
