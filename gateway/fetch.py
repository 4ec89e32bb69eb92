"""Remote files (narrations, templates) downloaded through the URL policy, with limits: size,
seconds without data, seconds in all, and the disk's free space."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable

from urllib3.exceptions import HTTPError

from .urlpolicy import OutboundError, UrlPolicy, describe, shown

CHUNK = 1 << 16
DISK_CHECK_BYTES = 16 * 2**20  # free space is checked again after this much


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout: float          # seconds without data
    max_seconds: float      # the whole download (it may overrun by one `timeout`)
    min_free_bytes: int     # the disk keeps this much free

    @classmethod
    def from_settings(cls, settings) -> "FetchLimits":
        return cls(settings.max_download_mb * 2**20, settings.download_timeout, settings.download_max_seconds,
                   settings.min_free_mb * 2**20)


def fetch(policy: UrlPolicy, url: str, path: str, limits: FetchLimits,
          keep_going: Callable[[], None] | None = None) -> str:
    """Download `url` to `path` (atomically: nothing is left at `path` on failure). Media are
    fetched as they are: a compressed transfer (Content-Encoding) is refused, so a few bytes on
    the wire cannot become a large file. `keep_going` is called every half second and may raise
    to stop the download (a cancel)."""
    started = time.monotonic()
    partial = path + ".part"
    try:
        with policy.open("GET", url, timeout=limits.timeout, headers={"Accept-Encoding": "identity"}) as response:
            if response.status != 200:
                raise OutboundError(f"{shown(url)}: the server answered HTTP {response.status}")
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise OutboundError(f"{shown(url)}: the server sent the file compressed ({encoding}); "
                                    "media files are fetched as they are")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limits.max_bytes:
                raise OutboundError(f"{shown(url)}: {int(length) / 2**20:.0f} MB is over the "
                                    f"{limits.max_bytes / 2**20:.0f} MB limit")
            received, checked_disk, asked = 0, -DISK_CHECK_BYTES, started
            with open(partial, "wb") as handle:
                # read1: whatever has arrived, so that the clocks are checked even when a server
                # trickles a byte at a time
                while block := response.read1(CHUNK, decode_content=False):
                    received += len(block)
                    if received > limits.max_bytes:
                        raise OutboundError(f"{shown(url)}: the file is over the {limits.max_bytes / 2**20:.0f} MB limit")
                    now = time.monotonic()
                    if now - started > limits.max_seconds:
                        raise OutboundError(f"{shown(url)}: the download took over {limits.max_seconds:g} s")
                    if received - checked_disk >= DISK_CHECK_BYTES:
                        checked_disk = received
                        if shutil.disk_usage(os.path.dirname(path)).free < limits.min_free_bytes + DISK_CHECK_BYTES:
                            raise OutboundError(f"{shown(url)}: the server is low on disk space; try again later")
                    if keep_going and now - asked >= 0.5:
                        asked = now
                        keep_going()
                    handle.write(block)
        if received == 0:
            raise OutboundError(f"{shown(url)}: the file is empty")
        os.replace(partial, path)
        return path
    except HTTPError as exc:  # while reading the body
        raise OutboundError(f"{shown(url)}: the download broke off ({describe(exc)})") from exc
    finally:
        if os.path.exists(partial):
            os.remove(partial)
