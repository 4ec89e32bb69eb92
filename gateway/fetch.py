"""Remote files (narrations, templates) downloaded through the URL policy, with limits: size,
seconds without data, seconds in all."""
from __future__ import annotations

import os
import time

from urllib3.exceptions import HTTPError

from .urlpolicy import OutboundError, UrlPolicy, describe, shown

CHUNK = 1 << 16


def fetch(policy: UrlPolicy, url: str, path: str, max_bytes: int, timeout: float, max_seconds: float) -> str:
    """Download `url` to `path` (atomically: nothing is left at `path` on failure)."""
    deadline = time.monotonic() + max_seconds
    partial = path + ".part"
    try:
        with policy.open("GET", url, timeout=timeout) as response:
            if response.status != 200:
                raise OutboundError(f"{shown(url)}: the server answered HTTP {response.status}")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise OutboundError(f"{shown(url)}: {int(length) / 2**20:.0f} MB is over the "
                                    f"{max_bytes / 2**20:.0f} MB limit")
            received = 0
            with open(partial, "wb") as handle:
                for block in response.stream(CHUNK, decode_content=True):
                    received += len(block)
                    if received > max_bytes:
                        raise OutboundError(f"{shown(url)}: the file is over the {max_bytes / 2**20:.0f} MB limit")
                    if time.monotonic() > deadline:
                        raise OutboundError(f"{shown(url)}: the download took over {max_seconds:g} s")
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
