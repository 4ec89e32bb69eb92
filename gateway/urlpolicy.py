"""The one policy every outbound request passes (downloads; later callbacks, object storage and
remote engines).

A URL is parsed once, by urllib3's parser, which is also the code that connects. Its host is
resolved once and every address it resolves to is checked. The connection then goes to a
checked address (pinned), so a second lookup cannot answer differently (DNS rebinding), while
the URL's host is kept for the Host header, TLS SNI and the certificate check.

Refused: loopback, private, link-local (cloud metadata), carrier-grade NAT, multicast, reserved
and unspecified addresses, and IPv6 addresses that embed such an IPv4 address (IPv4-mapped,
NAT64, 6to4; Teredo and the rest of 2001::/23 always). In-house servers are allowed by name or
network, with a port: see `AllowEntry`. Redirects are followed only through `open`, which checks
every hop."""
from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urljoin

import certifi
import urllib3
from urllib3.exceptions import HTTPError, LocationParseError
from urllib3.util import parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "heygem-gateway"


def _networks(*specs: tuple[str, str]) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    return [(ipaddress.ip_network(cidr), why) for cidr, why in specs]


INTERNAL_V4 = _networks(
    ("0.0.0.0/8", "'this network' (unspecified)"), ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT (shared)"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"), ("192.0.2.0/24", "documentation"), ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
)
INTERNAL_V6 = _networks(
    ("::/96", "unspecified, loopback or IPv4-compatible"), ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard"), ("2001::/23", "IETF protocol (Teredo, benchmarking)"),
    ("2001:db8::/32", "documentation"), ("3fff::/20", "documentation"), ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local (private)"), ("fe80::/10", "link-local"), ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated


class OutboundError(Exception):
    """A URL that cannot be fetched or posted to; the message names it and says why."""


class RefusedURL(OutboundError):
    """A URL the policy does not allow."""


class Unresolvable(RefusedURL):
    """A host name that does not resolve (now: it may later)."""


def shown(url: str) -> str:
    """A URL as quoted in messages (bounded: URLs can be long)."""
    return repr(url if len(url) <= 200 else url[:200] + "...")


def internal_reason(ip: IPAddress) -> str | None:
    """Why an address counts as internal, or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour]
        if ip in NAT64 or ip in SIIT:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in filter(None, embedded):
            reason = internal_reason(inner)
            if reason:
                return f"{reason}, embedded in {ip}"
        table = INTERNAL_V6
    else:
        table = INTERNAL_V4
    for network, why in table:
        if ip in network:
            return why
    if not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class AllowEntry:
    """One HEYGEM_ALLOWED_HOSTS entry: `host`, `host:port`, an address or network (`10.0.0.0/8`,
    `[fd00::/8]`) with an optional `:port`. Without a port it allows the schemes' default ports
    (80, 443) only. A name allows whatever it resolves to; a network allows the addresses in it,
    whatever name led there."""

    name: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    @classmethod
    def parse(cls, text: str) -> "AllowEntry":
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+(?:/\d+)?)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text.strip())
        if not match:
            try:  # a bare IPv6 address or network, no port
                return cls(None, ipaddress.ip_network(text.strip()), None)
            except ValueError:
                raise ValueError(f"allowed host {text!r}: expected host, host:port, CIDR or CIDR:port") from None
        host = (match.group(1) or match.group(3)).lower().rstrip(".")
        port = match.group(2) or match.group(4)
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"allowed host {text!r}: the port must be 1-65535")
        port = int(port) if port else None
        try:
            return cls(None, ipaddress.ip_network(host), port)
        except ValueError:
            if match.group(1) or not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", host):
                raise ValueError(f"allowed host {text!r}: not a host name, address or network") from None
            return cls(host, None, port)

    def allows_port(self, port: int, scheme: str) -> bool:
        return port == self.port if self.port is not None else port == DEFAULT_PORTS[scheme]


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (any of `addresses`, all checked) and what to ask for."""

    url: str
    scheme: str
    host: str                   # as in the URL, lower case (IPv6 without brackets)
    port: int
    request_uri: str            # path and query
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


class UrlPolicy:
    def __init__(self, allowed_hosts: list[str], max_url_length: int = 2048, ca_bundle: str = ""):
        self.allowed = [AllowEntry.parse(entry) for entry in allowed_hosts]
        self.max_url_length = max_url_length
        self.ca_bundle = ca_bundle or certifi.where()

    def with_servers(self, *urls: str) -> "UrlPolicy":
        """This policy, also allowing the hosts and ports of `urls`: servers the operator
        configured (a remote engine). Kept apart from the policy that checks users' URLs, so that
        naming the engine does not let a job's URLs reach it."""
        extra = []
        for url in filter(None, urls):
            _, host, port, _ = self._parse(url)
            extra.append(AllowEntry.parse(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
        trusted = UrlPolicy([], self.max_url_length, self.ca_bundle)
        trusted.allowed = self.allowed + extra
        return trusted

    # checking -----------------------------------------------------------------------------------

    def check(self, url: str) -> Destination:
        """Parse, resolve and check `url`; RefusedURL says why it may not be reached."""
        scheme, host, port, request_uri = self._parse(url)
        addresses = self._resolve(url, host, port)
        name = host.rstrip(".")
        if not any(entry.name == name and entry.allows_port(port, scheme) for entry in self.allowed):
            for address in addresses:
                reason = internal_reason(address)
                if reason and not any(entry.network and address in entry.network and entry.allows_port(port, scheme)
                                      for entry in self.allowed):
                    where = f"{host} is" if _is_literal(host) else f"{host} resolves to"
                    raise RefusedURL(f"{shown(url)}: {where} an internal address ({reason}); in-house servers "
                                     "are fetched only when HEYGEM_ALLOWED_HOSTS lists them (host:port)")
        return Destination(url, scheme, host, port, request_uri, addresses)

    def _parse(self, url: str) -> tuple[str, str, int, str]:
        if not isinstance(url, str) or not url:
            raise RefusedURL("a URL must be a non-empty string")
        if len(url) > self.max_url_length:
            raise RefusedURL(f"{shown(url)}: the URL is over {self.max_url_length} characters")
        # Spaces, control characters and backslashes are read differently by different parsers
        # (and by browsers); no valid URL needs them unencoded.
        if re.search(r"[\x00-\x20\x7f\\]", url):
            raise RefusedURL(f"{shown(url)}: the URL contains a space, control character or backslash; "
                             "percent-encode it")
        try:
            parts = parse_url(url)
        except (LocationParseError, ValueError) as exc:
            reason = _first_line(exc).removeprefix("Failed to parse: ")
            reason = "the host or port is malformed" if reason == url else reason
            raise RefusedURL(f"{shown(url)}: not a valid URL ({reason})") from None
        scheme = (parts.scheme or "").lower()
        if scheme not in DEFAULT_PORTS:
            raise RefusedURL(f"{shown(url)}: only http and https URLs can be fetched")
        if parts.auth is not None:
            raise RefusedURL(f"{shown(url)}: user names and passwords in URLs are not sent; use a signed URL")
        host = (parts.host or "").lower()
        if not host:
            raise RefusedURL(f"{shown(url)}: the URL has no host")
        if host.startswith("["):
            host = host[1:-1]
            if "%" in host:
                raise RefusedURL(f"{shown(url)}: IPv6 zone ids are not fetched")
        elif not _is_ipv4(host) and not re.fullmatch(r"([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                                                     r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?", host):
            raise RefusedURL(f"{shown(url)}: {host!r} is not a valid host name")
        elif re.fullmatch(r"(0x[0-9a-f]*|[0-9]+)", host.rstrip(".").rsplit(".", 1)[-1]) and not _is_ipv4(host):
            # 127.1, 0x7f.1, 2130706433, 0177.0.0.1: numbers no DNS name ends with, read as
            # addresses by some resolvers and not by others.
            raise RefusedURL(f"{shown(url)}: {host!r} is neither a host name nor an IPv4 address in dotted form")
        port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
        if not 0 < port < 65536:
            raise RefusedURL(f"{shown(url)}: the port must be 1-65535")
        return scheme, host, port, parts.request_uri

    @staticmethod
    def _resolve(url: str, host: str, port: int) -> tuple[IPAddress, ...]:
        try:
            return (ipaddress.ip_address(host),)
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise Unresolvable(f"{shown(url)}: the host {host!r} does not resolve ({reason})") from None
        addresses = dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos)
        if not addresses:
            raise Unresolvable(f"{shown(url)}: the host {host!r} does not resolve")
        return tuple(addresses)

    # connecting ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open(self, method: str, url: str, *, headers: dict | None = None, body: bytes | None = None,
             timeout: float = 60.0, connect_timeout: float = 10.0, deadline: float | None = None,
             max_redirects: int = 5) -> Iterator[urllib3.BaseHTTPResponse]:
        """The response to `method url`, its body not yet read. GET and HEAD follow up to
        `max_redirects` redirects, each hop checked like the first; other methods return the
        redirect itself. `timeout` is the longest wait for data once connected; `deadline`, if
        given, bounds the whole exchange (a server that trickles its answer byte by byte is cut
        off then): its connections are shut down from a timer."""
        first, pools, expired = url, [], threading.Event()

        def cut() -> None:
            expired.set()
            for pool in list(pools):
                pool.cut()

        timer = threading.Timer(deadline, cut) if deadline else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            for _ in range(max_redirects + 1):
                destination = self.check(url)
                pool, response = self._send(destination, method, headers or {}, body,
                                            urllib3.Timeout(connect=connect_timeout, read=timeout), pools)
                try:
                    if expired.is_set():  # cut mid-answer: what was parsed is not the answer
                        raise OutboundError(f"{shown(first)}: cut off")
                    location = response.headers.get("Location")
                    if response.status in REDIRECTS and location and method in ("GET", "HEAD"):
                        url = urljoin(destination.url, location)
                        continue
                    yield response
                    return
                finally:
                    response.release_conn()
                    response.close()
                    pool.close()
            raise OutboundError(f"{shown(first)}: more than {max_redirects} redirects")
        except (OutboundError, HTTPError, OSError) as exc:
            if expired.is_set():
                raise OutboundError(f"{shown(first)}: no complete answer within {deadline:g} s") from exc
            raise
        finally:
            if timer:
                timer.cancel()

    def _send(self, destination: Destination, method: str, headers: dict, body: bytes | None,
              timeout: urllib3.Timeout, pools: list) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
        headers = {"User-Agent": USER_AGENT, **headers, "Host": destination.host_header}
        failure: Exception | None = None
        for address in destination.addresses:
            pool = self._pool(destination, address, timeout)
            pools.append(pool)
            try:
                response = pool.urlopen(method, destination.request_uri, body=body, headers=headers,
                                        redirect=False, retries=False, preload_content=False,
                                        assert_same_host=False)
                return pool, response
            except HTTPError as exc:
                pool.close()
                failure = exc
        raise OutboundError(f"{shown(destination.url)}: {describe(failure)}")

    def _pool(self, destination: Destination, address: IPAddress, timeout: urllib3.Timeout):
        if destination.scheme == "http":
            return _HTTPPool(str(address), destination.port, timeout=timeout, maxsize=1, retries=False)
        return _HTTPSPool(
            str(address), destination.port, timeout=timeout, maxsize=1, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=self.ca_bundle, server_hostname=None if _is_literal(destination.host) else destination.host.rstrip("."))


class _Cuttable:
    """A connection pool whose open connections another thread can shut down (a deadline)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opened: list = []

    def _new_conn(self):
        connection = super()._new_conn()
        self.opened.append(connection)
        return connection

    def cut(self) -> None:
        for connection in self.opened:
            sock = getattr(connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _HTTPPool(_Cuttable, urllib3.HTTPConnectionPool):
    pass


class _HTTPSPool(_Cuttable, urllib3.HTTPSConnectionPool):
    pass


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


def describe(exc: BaseException | None) -> str:
    """What went wrong on the wire, in words (urllib3's messages name its objects)."""
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "timed out connecting"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"the TLS handshake failed ({_first_line(exc.__context__ or exc)})"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        cause = exc.__context__
        return f"could not connect ({getattr(cause, 'strerror', None) or 'refused'})"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "timed out waiting for data"
    if isinstance(exc, (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError)):
        return "the connection broke off"
    return f"the request failed ({exc.__class__.__name__})" if exc else "no address to connect to"


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text if len(text) <= 200 else text[:200] + "..."
