"""Remote files (narrations, templates) fetched with limits and an SSRF guard.

Loopback, private, link-local (cloud metadata), multicast and reserved addresses are refused,
for the URL's host and for every redirect, unless the host is on the allow-list (an in-house
Dify or MinIO server)."""
from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urljoin, urlsplit

import requests

MAX_REDIRECTS = 5
CHUNK = 1 << 16


class FetchError(Exception):
    """A URL that cannot or may not be fetched; the message says why."""


def check_url(url: str, allowed_hosts: list[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"{url!r}: only http and https URLs can be fetched")
    host = (parts.hostname or "").lower()
    if not host:
        raise FetchError(f"{url!r}: the URL has no host")
    if host in allowed_hosts:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as exc:
        raise FetchError(f"{url!r}: the host {host!r} does not resolve ({exc.strerror})") from exc
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
            raise FetchError(f"{url!r}: {host} resolves to the internal address {ip}, which is not fetched; "
                             "add the host to HEYGEM_ALLOWED_HOSTS if it is an in-house server")


def fetch(url: str, path: str, allowed_hosts: list[str], max_bytes: int, timeout: float) -> str:
    """Download `url` to `path` (atomically); redirects are followed by hand so that each hop
    passes the guard."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allowed_hosts)
        try:
            response = requests.get(url, stream=True, allow_redirects=False, timeout=(10, timeout),
                                    headers={"User-Agent": "heygem-gateway"})
        except requests.RequestException as exc:
            raise FetchError(f"{url!r}: the download failed ({exc.__class__.__name__}: {exc})") from exc
        with response:
            if response.is_redirect:
                url = urljoin(url, response.headers.get("Location", ""))
                continue
            if response.status_code != 200:
                raise FetchError(f"{url!r}: the server answered HTTP {response.status_code}")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"{url!r}: {int(length) / 2**20:.0f} MB is over the {max_bytes / 2**20:.0f} MB limit")
            received = 0
            partial = path + ".part"
            try:
                with open(partial, "wb") as handle:
                    for block in response.iter_content(CHUNK):
                        received += len(block)
                        if received > max_bytes:
                            raise FetchError(f"{url!r}: the file is over the {max_bytes / 2**20:.0f} MB limit")
                        handle.write(block)
            except BaseException as exc:
                if os.path.exists(partial):
                    os.remove(partial)
                if isinstance(exc, requests.RequestException):
                    raise FetchError(f"{url!r}: the download broke off ({exc.__class__.__name__})") from exc
                raise
            if received == 0:
                os.remove(partial)
                raise FetchError(f"{url!r}: the file is empty")
            os.replace(partial, path)
            return path
    raise FetchError(f"{url!r}: more than {MAX_REDIRECTS} redirects")
