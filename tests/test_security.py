"""The service's edge, tried as an attacker would: internal fetches by any spelling, local files,
paths out of the data directory, denial of service by a few clients, 500s and leaked insides.

Nothing here leaves the machine: names resolve through a resolver the tests control, and a
tripwire fails any connection to an address other than loopback."""
from __future__ import annotations

import json
import os
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

import jwt
import pytest
import requests

from gateway.auth import create_token
from gateway.fetch import FetchLimits, fetch
from gateway.urlpolicy import OutboundError, RefusedURL, UrlPolicy
from gateway_support import SECRET, LiveServer

REAL_GETADDRINFO = socket.getaddrinfo
REAL_CONNECT = socket.socket.connect


@pytest.fixture(autouse=True)
def tripwire(monkeypatch):
    """Fail any connection that would leave loopback (the code under test must never try)."""
    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
            raise AssertionError(f"a connection to {address} was attempted")
        return REAL_CONNECT(sock, address)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture()
def dns(monkeypatch):
    """A resolver the test controls: {name: [addresses]} (a list of lists answers in turn); IP
    literals resolve as usual, other names do not resolve."""
    class Answers(dict):
        asked: list[str]

    answers = Answers()
    answers.asked = asked = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        try:
            return REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        asked.append(host)
        answer = answers.get(host.rstrip("."))
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):  # answers in turn, the last one repeated
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in answer]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    answers.update({"localhost": ["127.0.0.1", "::1"], "public.test": ["93.184.215.14"],
                    "internal.test": ["10.1.2.3"], "metadata.test": ["169.254.169.254"],
                    "mixed.test": ["93.184.215.14", "127.0.0.1"], "v6.test": ["2606:4700::1111"],
                    "mapped.test": ["::ffff:10.0.0.1"], "minio.corp": ["10.20.1.5"], "cgnat.test": ["100.100.100.200"]})
    return answers


# The URL policy, spelling by spelling ----------------------------------------------------------

REFUSED = [
    # loopback in every spelling
    "http://127.0.0.1/", "http://127.1/", "http://0177.0.0.1/", "http://0x7f000001/", "http://2130706433/",
    "http://0x7f.0.0.1/", "http://017700000001/", "http://127.0.0.1./", "http://localhost/", "http://LOCALHOST./",
    "http://[::1]/", "http://[0:0:0:0:0:0:0:1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/", "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/", "http://[::ffff:0:7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "http://%31%32%37.0.0.1/", "http://127.0.0.1:80/",
    # unspecified, private, link-local (metadata), CGNAT, multicast, reserved
    "http://0.0.0.0/", "http://0/", "http://[::]/", "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.64.0.1/",
    "http://100.100.100.200/", "http://224.0.0.1/", "http://240.0.0.1/", "http://255.255.255.255/",
    "http://198.18.0.1/", "http://192.0.0.170/", "http://[fe80::1]/", "http://[fe80::1%25lo]/", "http://[ff02::1]/",
    "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/",
    # names that resolve inside, or partly inside
    "http://internal.test/", "http://metadata.test/", "http://mixed.test/", "http://mapped.test/",
    "http://cgnat.test/", "https://internal.test/",
    # parser differentials and malformed URLs
    "http://127.0.0.1:80\\@1.1.1.1/", "http://1.1.1.1\\@127.0.0.1/", "http://public.test@127.0.0.1/",
    "http://user:pass@public.test/", "http://127.0.0.1\t/", "http://pub\tlic.test/", "http://public.test /",
    "http://public.test\n/", "http://1.1.1.1:99999/", "http://1.1.1.1:-1/", "http://1.1.1.1:0/", "http://[::1/",
    "http://[::1]x/", "http://[v1.x]/", "http://１２７.0.0.1/", "http://127。0。0。1/", "http://no-such-host.test/",
    "http:/127.0.0.1/", "http:127.0.0.1", "//127.0.0.1/", "/etc/passwd", "upload:/etc/passwd", "file:///etc/passwd",
    "gopher://public.test/", "ftp://public.test/", "", "http://" + "a" * 2100 + ".test/",
]
ALLOWED = {
    "http://public.test/a.mp4": "93.184.215.14", "https://public.test:8443/x?y=1": "93.184.215.14",
    "http://93.184.215.14/": "93.184.215.14", "http://v6.test/": "2606:4700::1111",
    "http://[64:ff9b::5db8:d70e]/": "64:ff9b::5db8:d70e",  # NAT64 of a public address
    "http://PUBLIC.test./a": "93.184.215.14",
}


@pytest.mark.parametrize("url", REFUSED)
def test_policy_refuses(dns, url):
    with pytest.raises(RefusedURL):
        UrlPolicy([]).check(url)


@pytest.mark.parametrize("url,address", ALLOWED.items())
def test_policy_allows_public_addresses_and_pins_them(dns, url, address):
    assert [str(a) for a in UrlPolicy([]).check(url).addresses] == [address]


@pytest.mark.parametrize("entries,url,allowed", [
    (["127.0.0.1:8080"], "http://127.0.0.1:8080/", True),
    (["127.0.0.1:8080"], "http://127.0.0.1:8081/", False),   # another port on an allowed host
    (["127.0.0.1:8080"], "http://127.0.0.1/", False),
    (["127.0.0.1:8080"], "http://localhost:8080/", False),    # ::1 is not 127.0.0.1
    (["minio.corp"], "http://minio.corp/", True),             # no port: 80 and 443 only
    (["minio.corp"], "https://minio.corp/", True),
    (["minio.corp"], "http://minio.corp:9000/", False),
    (["minio.corp:9000"], "http://minio.corp:9000/", True),
    (["minio.corp:9000"], "http://10.20.1.5:9000/", False),  # a name allows the name, not its address
    (["10.20.0.0/16:9000"], "http://minio.corp:9000/", True),  # a network allows any name leading into it
    (["10.20.0.0/16:9000"], "http://10.20.9.9:9000/", True),
    (["10.20.0.0/16:9000"], "http://10.21.0.1:9000/", False),
    (["[::1]:9000"], "http://[::1]:9000/", True),
    (["[fd00::/8]"], "http://[fd12::1]/", True),
    (["internal.test"], "http://INTERNAL.test./", True),
])
def test_allow_list_entries_name_a_host_and_port(dns, entries, url, allowed):
    policy = UrlPolicy(entries)
    if allowed:
        policy.check(url)
    else:
        with pytest.raises(RefusedURL):
            policy.check(url)


@pytest.mark.parametrize("entry", ["*", "minio.corp:99999", "minio.corp:x", "[fd00::", "a b", "http://x"])
def test_bad_allow_list_entries_stop_the_start(entry):
    with pytest.raises(ValueError, match="allowed host"):
        UrlPolicy([entry])


class Named(BaseHTTPRequestHandler):
    """Answers with its own name; /hop/N redirects to /hop/N-1; /to?u=URL redirects to URL."""

    name = "server"
    hits = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).hits += 1
        if self.path.startswith("/hop/"):
            n = int(self.path.rsplit("/", 1)[1])
            return self._redirect(f"/hop/{n - 1}" if n > 0 else "/")
        if self.path.startswith("/to?u="):
            return self._redirect(unquote(self.path[len("/to?u="):]))
        body = self.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _serve(address: str, name: str, port: int = 0, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    handler = type(name, (Named,), {"name": name, "hits": 0})
    server = ThreadingHTTPServer((address, port), handler)
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(policy: UrlPolicy, url: str) -> str:
    with policy.open("GET", url, timeout=5) as response:
        return response.read().decode()


def test_the_connection_goes_to_the_address_that_was_checked(dns):
    """DNS rebinding: the name answers an allowed address, then loopback. One lookup, pinned."""
    good = _serve("127.0.0.2", "good")
    port = good.server_port
    evil = _serve("127.0.0.1", "evil", port)
    try:
        dns["rebind.test"] = [["127.0.0.2"], ["127.0.0.1"]]
        policy = UrlPolicy([f"127.0.0.2:{port}"])
        assert _get(policy, f"http://rebind.test:{port}/") == "good"
        assert dns.asked.count("rebind.test") == 1 and evil.RequestHandlerClass.hits == 0
        with pytest.raises(RefusedURL, match="internal address"):  # the next lookup is checked again
            _get(policy, f"http://rebind.test:{port}/")
        assert evil.RequestHandlerClass.hits == 0
    finally:
        good.shutdown(), evil.shutdown()


def test_redirects_are_checked_hop_by_hop(dns):
    allowed = _serve("127.0.0.1", "allowed")
    other = _serve("127.0.0.1", "other")
    try:
        policy = UrlPolicy([f"127.0.0.1:{allowed.server_port}"])
        base = f"http://127.0.0.1:{allowed.server_port}"
        assert _get(policy, f"{base}/hop/4") == "allowed"  # five redirects
        with pytest.raises(OutboundError, match="more than 5 redirects"):
            _get(policy, f"{base}/hop/5")
        for target in (f"http://127.0.0.1:{other.server_port}/", "http://169.254.169.254/latest/",
                       "http://[::ffff:127.0.0.1]:%d/" % other.server_port, "http://internal.test/"):
            with pytest.raises(RefusedURL):
                _get(policy, f"{base}/to?u={quote(target, safe='')}")
        assert other.RequestHandlerClass.hits == 0
    finally:
        allowed.shutdown(), other.shutdown()


def test_tls_keeps_the_hostname_check_while_pinned(dns, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("files.test").configure_cert(context)
    server = _serve("127.0.0.1", "tls", tls=context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    try:
        dns.update({"files.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        policy = UrlPolicy([f"127.0.0.0/8:{server.server_port}"], ca_bundle=str(bundle))
        assert _get(policy, f"https://files.test:{server.server_port}/") == "tls"
        with pytest.raises(OutboundError, match="TLS"):  # same address, a name the certificate lacks
            _get(policy, f"https://other.test:{server.server_port}/")
        with pytest.raises(OutboundError, match="TLS"):  # not signed by a trusted CA
            _get(UrlPolicy([f"127.0.0.0/8:{server.server_port}"]), f"https://files.test:{server.server_port}/")
    finally:
        server.shutdown()


class Trickle(BaseHTTPRequestHandler):
    """A file that arrives a byte every 0.2 s; /gzip sends a compressed body."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/gzip":
            import gzip
            body = gzip.compress(b"\0" * 10**6)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


def test_downloads_stop_at_their_limits(dns, tmp_path):
    server = _serve("127.0.0.1", "x" * 5000)
    trickle = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=trickle.serve_forever, daemon=True).start()
    try:
        policy = UrlPolicy([f"127.0.0.1:{server.server_port}", f"127.0.0.1:{trickle.server_port}"])
        url = f"http://127.0.0.1:{server.server_port}/file"
        with pytest.raises(OutboundError, match="over the"):
            fetch(policy, url, str(tmp_path / "f"), FetchLimits(1000, 5, 60, 0))
        assert os.listdir(tmp_path) == []  # nothing half-written is left
        assert open(fetch(policy, url, str(tmp_path / "f"), FetchLimits(10**6, 5, 60, 0))).read() == "x" * 5000
        # A byte every 0.2 s never trips the 5 s silence limit; the whole-download limit stops it.
        with pytest.raises(OutboundError, match="took over 1 s"):
            fetch(policy, f"http://127.0.0.1:{trickle.server_port}/", str(tmp_path / "g"), FetchLimits(10**6, 5, 1, 0))
        with pytest.raises(OutboundError, match="compressed"):  # 1 KB on the wire must not become 1 MB
            fetch(policy, f"http://127.0.0.1:{trickle.server_port}/gzip", str(tmp_path / "g"), FetchLimits(10**6, 5, 60, 0))
        with pytest.raises(OutboundError, match="low on disk"):
            fetch(policy, url, str(tmp_path / "f2"), FetchLimits(10**6, 5, 60, 2**62))
        assert os.listdir(tmp_path) == ["f"]
    finally:
        server.shutdown(), trickle.shutdown()


# The live service ------------------------------------------------------------------------------

def stalled_readers(service: LiveServer, url: str, headers: str = "") -> list[socket.socket]:
    """Eight connections (twice the server's threads) that ask for `url` and never read."""
    stalled = []
    for _ in range(8):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", service.port))
        sock.sendall(f"GET {url.split(str(service.port), 1)[1]} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        stalled.append(sock)
    return stalled


def _problem(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["Content-Type"] == "application/problem+json"
    return answer.json()["detail"]


def test_no_local_file_can_become_a_narration(live, dns, media):
    service = live(start_workers=False)
    database = service.settings.database
    for source in (f"upload:{database}", f"upload:{media['speech']}", "upload:/no/such/file", "/etc/passwd",
                   f"file://{database}", "upload:../../gateway.sqlite3", "tpl_x"):
        answer = requests.post(service.url + "/api/v1/jobs", headers=service.headers(),
                               json={"audio_url": source, "templates": ["http://public.test/t.mp4"]})
        detail = _problem(answer, 400)
        assert "only http and https" in detail and "exist" not in detail
    assert requests.get(service.url + "/api/v1/jobs", headers=service.headers()).json()["jobs"] == []


@pytest.mark.parametrize("tenant", ["../x", "/abs", "a/../b", "a\x00b", "x" * 65, ".hidden", "", "a b", "é",
                                    7, ["acme"], {"a": 1}])
def test_tenant_claims_are_plain_names(live, tenant):
    service = live(start_workers=False)
    now = int(time.time())
    claims = {"tenant": tenant, "scope": "jobs:read jobs:write", "iss": "heygem-gateway", "aud": "heygem-api",
              "exp": now + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    answer = requests.get(service.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert "tenant" in _problem(answer, 401)
    before = set(os.listdir(os.path.dirname(service.settings.data_dir)))
    answer = requests.post(service.url + "/api/v1/templates", headers={"Authorization": f"Bearer {token}"},
                           files={"file": ("t.png", b"not an image")})
    assert answer.status_code == 401
    assert set(os.listdir(os.path.dirname(service.settings.data_dir))) == before
    if isinstance(tenant, str):
        with pytest.raises(ValueError, match="tenant"):
            create_token(service.settings, tenant, ["jobs:read"], 60)


@pytest.mark.parametrize("claims", [{"scope": 7}, {"scope": {"jobs:read": True}}, {"scope": ["jobs:read", 7]},
                                    {"scp": None, "scope": None}, {"jti": 5}, {"jti": ["a"]}])
def test_odd_claims_are_refused_not_500(live, claims):
    service = live(start_workers=False)
    now = int(time.time())
    base = {"tenant": "acme", "scope": "jobs:read", "iss": "heygem-gateway", "aud": "heygem-api", "exp": now + 60}
    token = jwt.encode({**base, **claims}, SECRET, algorithm="HS256")
    assert requests.get(service.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def _raw(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> str:
    """Send a request's head (and maybe some body) on a raw socket; the answer's status line and
    body, which must come without the rest of the request's body (or the read times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while block := sock.recv(65536):  # the server closes the connection after a refusal
            answer += block
        answer = answer.decode(errors="replace")
    return answer.split("\r\n")[0] + "\n" + answer.split("\r\n\r\n", 1)[-1]


def test_bodies_are_refused_from_their_headers(live):
    service = live(start_workers=False, max_upload_mb=5, max_json_kb=64)
    token = service.headers()["Authorization"]
    cases = [  # (headers, status): the body (hundreds of MB) is never sent
        ("POST /api/v1/jobs HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 629145600\n", 401),
        (f"POST /api/v1/jobs HTTP/1.1\nHost: x\nAuthorization: {token}\nContent-Type: application/json\n"
         "Content-Length: 629145600\n", 413),
        (f"POST /api/v1/jobs HTTP/1.1\nHost: x\nAuthorization: {token}\nContent-Type: application/json\n"
         "Content-Length: 70000\n", 413),  # JSON takes far less than an upload
        (f"POST /api/v1/templates HTTP/1.1\nHost: x\nAuthorization: {token}\n"
         "Content-Type: multipart/form-data; boundary=b\nContent-Length: 7340032\nExpect: 100-continue\n", 413),
        ("POST /api/v1/templates HTTP/1.1\nHost: x\nContent-Type: multipart/form-data; boundary=b\n"
         "Transfer-Encoding: chunked\n", 401),
        (f"POST /api/v1/jobs HTTP/1.1\nHost: x\nAuthorization: Bearer {create_token(service.settings, 'acme', ['jobs:read'], 60)[0]}"
         "\nContent-Type: application/json\nContent-Length: 100\n", 403),
    ]
    for head, status in cases:
        answer = _raw(service.port, head)
        assert answer.startswith(f"HTTP/1.1 {status}") and "100 Continue" not in answer, answer
        assert json.loads(answer.split("\n", 1)[1])["status"] == status


def test_chunked_bodies_are_cut_off_at_their_limit(live):
    service = live(start_workers=False, max_json_kb=64)
    head = (f"POST /api/v1/jobs HTTP/1.1\nHost: x\nAuthorization: {service.headers()['Authorization']}\n"
            "Content-Type: application/json\nTransfer-Encoding: chunked\n")
    chunk = b"%x\r\n%s\r\n" % (8192, b"[" * 8192)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        sent = 0
        # A chunk at a time, stopping once the server answers: bytes it never reads would make
        # its close a reset that can swallow the answer.
        while sent < 10 * 2**20 and not select.select([sock], [], [], 0.02)[0]:
            sock.sendall(chunk)
            sent += len(chunk)
        answer = sock.recv(65536).decode(errors="replace")  # the status line comes first
    assert answer.startswith("HTTP/1.1 413") and sent < 10 * 2**20  # cut off, not read to the end


def test_idle_and_slow_clients_do_not_starve_others(live):
    service = live(start_workers=False, http_idle_timeout=3, http_header_timeout=2, http_connections_per_client=100)
    # 150 silent connections from one address (beyond waitress's default limit of 100 in all)...
    idle = [socket.create_connection(("127.0.0.1", service.port), source_address=("127.0.0.2", 0))
            for _ in range(150)]
    slow = socket.create_connection(("127.0.0.1", service.port))
    try:
        for _ in range(3):  # ...and another client is served (times out if it is not)
            assert requests.get(service.url + "/healthz", timeout=5).status_code == 200
        # That address's connections beyond its 100 were answered 503 and closed.
        for sock in idle[-10:]:
            sock.settimeout(2)
            assert sock.recv(4096).split(b"\r\n")[0].endswith(b" 503 Service Unavailable")
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(2.5)
        slow.sendall(b"X-Slow: 1\r\n")  # headers still unfinished after the deadline
        assert slow.recv(1024).split(b"\r\n")[0].endswith(b" 408 Request Timeout")
        time.sleep(service.settings.http_idle_timeout + 3.5)  # the silent ones are closed
        idle[0].settimeout(1)
        assert idle[0].recv(1) == b""
    finally:
        for sock in idle + [slow]:
            sock.close()


def test_public_routes_take_no_body(live):
    service = live(start_workers=False)
    for head, status in (("POST /healthz HTTP/1.1\nHost: x\nContent-Length: 1000000\n", 405),
                         ("GET /healthz HTTP/1.1\nHost: x\nContent-Length: 1000000\n", 413),
                         ("GET /download/x HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n", 413),
                         ("PUT /nowhere HTTP/1.1\nHost: x\nContent-Length: 1000000\n", 404)):
        answer = _raw(service.port, head)  # answered although the body never comes
        assert answer.startswith(f"HTTP/1.1 {status}"), answer


def test_a_tenant_sends_few_bodies_at_once(live):
    service = live(start_workers=False, max_uploads_per_tenant=2)
    token = service.headers()["Authorization"]
    head = (f"POST /api/v1/templates HTTP/1.1\nHost: x\nAuthorization: {token}\n"
            "Content-Type: multipart/form-data; boundary=b\nContent-Length: 100000000\n\n")
    held = []
    try:
        for _ in range(2):  # two uploads left half-sent
            sock = socket.create_connection(("127.0.0.1", service.port))
            sock.sendall(head.replace("\n", "\r\n").encode() + b"x" * 1000)
            held.append(sock)
        time.sleep(0.3)
        answer = _raw(service.port, head.rstrip("\n") + "\n")
        assert answer.startswith("HTTP/1.1 429") and "still sending" in answer
        other = create_token(service.settings, "globex", ["jobs:write"], 60)[0]  # another tenant is not held up
        answer = _raw(service.port, head.replace(token, f"Bearer {other}")
                               .rstrip("\n").replace("100000000", "7") + "\nConnection: close\n", b"--b--\r\n")
        assert answer.startswith("HTTP/1.1 400")
    finally:
        for sock in held:
            sock.close()


def test_waiting_submits_are_bounded(live, files):
    service = live(files, workers=0, max_waiters=2)  # no renderer: every job stays queued
    body = {"audio_url": files["speech"], "templates": [files["h264"]], "wait_seconds": 8}
    answers: list[tuple[float, int]] = []

    def submit():
        started = time.monotonic()
        status = requests.post(service.url + "/api/v1/jobs", headers=service.headers(), json=body).status_code
        answers.append((time.monotonic() - started, status))
    threads = [threading.Thread(target=submit) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    assert requests.get(service.url + "/healthz", timeout=5).status_code == 200
    for thread in threads:
        thread.join()
    assert sorted(status for _, status in answers) == [202] * 5
    # Two waited their 8 s; the others were answered at once (well before).
    assert sum(1 for seconds, _ in answers if seconds >= 7.9) == 2
    assert sum(1 for seconds, _ in answers if seconds < 4) == 3


def _bomb(path, side: int = 20000) -> str:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))
    return str(path)


def test_oversized_pictures_metadata_and_json_are_refused(live, files, tmp_path):
    service = live(files, start_workers=False)
    with open(_bomb(tmp_path / "bomb.png"), "rb") as handle:
        answer = requests.post(service.url + "/api/v1/templates", headers=service.headers(),
                               files={"file": ("bomb.png", handle)})
    detail = _problem(answer, 400)  # from the header (benchmarks/bombs.py measures time and memory)
    assert detail.startswith("bomb.png: the picture is") and "MP is accepted" in detail
    assert os.listdir(os.path.join(service.settings.data_dir, "templates", "acme")) == []
    submit = {"audio_url": files["speech"], "templates": [files["h264"]]}
    url, headers = service.url + "/api/v1/jobs", service.headers()
    assert "metadata" in _problem(requests.post(url, headers=headers, json={**submit, "metadata": {"x": "y" * 20000}}), 400)
    for depth in (33, 100_000):
        text = json.dumps({**submit, "metadata": {"a": 1}}).replace('{"a": 1}', "[" * depth + "]" * depth)
        answer = requests.post(url, headers={**headers, "Content-Type": "application/json"}, data=text)
        assert "JSON" in _problem(answer, 400)
    for bad in ("http://1.1.1.1:99999/a.wav", "http://[::1/a.wav", "http://[fe80::1%25eth0]/a.wav", 7, None, ""):
        _problem(requests.post(url, headers=headers, json={**submit, "audio_url": bad}), 400)
    _problem(requests.post(url, headers={**headers, "Idempotency-Key": "x" * 201}, json=submit), 400)


def test_uploads_of_refused_and_deleted_jobs_are_removed(live, dns, files, media):
    service = live(files, workers=0)
    uploads = os.path.join(service.settings.data_dir, "uploads")
    url, headers = service.url + "/api/v1/jobs", service.headers()

    def submit(templates, key=None):
        with open(media["speech"], "rb") as handle:
            return requests.post(url, headers={**headers, **({"Idempotency-Key": key} if key else {})},
                                 files={"audio": ("narration.wav", handle)}, data={"templates": templates})
    assert submit(["http://internal.test/t.mp4"]).status_code == 400
    assert submit(["tpl_nope"]).status_code == 400
    assert not os.path.isdir(uploads) or os.listdir(uploads) == []
    first = submit([files["h264"]], key="k1").json()
    assert submit([files["h264"]], key="k1").json()["id"] == first["id"]  # a retry keeps one copy
    assert len(os.listdir(uploads)) == 1
    assert requests.delete(f"{url}/{first['id']}", headers=headers).status_code == 204
    assert os.listdir(uploads) == []


def test_the_sweep_and_the_start_remove_what_nothing_needs(live, files, monkeypatch, tmp_path):
    import gateway.housekeeping as housekeeping_module

    service = live(files, start_workers=False)
    settings, store = service.settings, service.app.extensions["store"]
    data = settings.data_dir
    orphan_template = os.path.join(data, "templates", "acme", "tpl_crashed")  # a crash during analysis
    os.makedirs(orphan_template)
    stale_upload = os.path.join(data, "uploads", "0" * 32)  # a submit that died before its job was written
    os.makedirs(os.path.dirname(stale_upload))
    open(stale_upload, "wb").write(b"x")
    partial = os.path.join(settings.outputs_dir, "acme", "job", "output_001.mp4.part")
    os.makedirs(os.path.dirname(partial))
    open(partial, "wb").write(b"x")
    finished_work = os.path.join(data, "work", "f" * 32)
    os.makedirs(finished_work)
    monkeypatch.setattr(housekeeping_module, "UPLOAD_GRACE_SECONDS", 0.0)
    service.app.extensions["housekeeping"].startup()
    assert not any(map(os.path.exists, (orphan_template, stale_upload, partial, finished_work)))
    assert store.template_ids() == set()


def test_faults_answer_500_with_an_id_that_is_in_the_log(live, monkeypatch):
    service = live(start_workers=False)
    store = service.app.extensions["store"]
    monkeypatch.setattr(store, "jobs", lambda *args: 1 / 0)
    answer = requests.get(service.url + "/api/v1/jobs", headers=service.headers())
    error_id = answer.json()["error_id"]
    assert error_id in _problem(answer, 500) and "ZeroDivision" not in answer.text
    with open(service.settings.log_file) as log:
        entries = [json.loads(line) for line in log if error_id in line]
    assert entries and "ZeroDivisionError" in entries[0]["exception"]


def test_messages_name_what_the_user_sent_never_server_paths(live, files, media):
    service = live(files)
    url, headers = service.url + "/api/v1/jobs", service.headers()
    with open(media["text"], "rb") as handle:
        job = requests.post(url, headers=headers, files={"audio": ("my narration.mp3", handle)},
                            data={"templates": [files["h264"]], "wait_seconds": "30"}).json()
    bad_template = requests.post(url, headers=headers, json={
        "audio_url": files["speech"], "templates": [files["text"], files["noface"]], "wait_seconds": 55}).json()
    errors = [item["error"] for item in job["items"] + bad_template["items"]]
    assert errors[0].startswith("my_narration.mp3: not a readable media file")
    assert errors[1].startswith(files["text"] + ": not a readable media file")
    assert errors[2].startswith(files["noface"] + ": no face found")
    for document in (job, bad_template):
        text = json.dumps(document)
        assert service.settings.data_dir not in text and "template-" not in text and "/uploads/" not in text


def test_links_are_signed_with_their_own_secret(live, files, media):
    service = live(files, start_workers=False)
    settings = service.settings
    assert settings.link_secret and settings.link_secret != settings.jwt_secret
    assert os.path.exists(os.path.join(settings.data_dir, "link-secret"))
    with open(media["h264"], "rb") as handle:
        template = requests.post(service.url + "/api/v1/templates", headers=service.headers(),
                                 files={"file": ("anna.mp4", handle)}).json()
    assert requests.get(template["thumbnail_url"]).headers["Content-Type"] == "image/jpeg"
    key = service.app.extensions["links"].serializer  # even with the key, a link names only what links name
    for named in (["thumbnail", template["id"] + "x"], ["video", "nope", 0], ["data", "jwt-secret"], "data:jwt-secret"):
        assert requests.get(f"{service.url}/download/{key.dumps(named)}").status_code == 404


def test_slow_readers_of_a_zip_hold_no_thread(live, files, media):
    """The ZIP is made once and sent as a file: a client that never reads holds a socket only."""
    service = live(files, workers=0, http_threads=4)  # no renderer: the test writes the output
    headers = service.headers()
    job = requests.post(service.url + "/api/v1/jobs", headers=headers,
                        json={"audio_url": files["speech"], "templates": [files["h264"]], "zip": True}).json()
    folder = os.path.join(service.settings.outputs_dir, "acme", job["id"])
    os.makedirs(folder)
    with open(os.path.join(folder, "output_001.mp4"), "wb") as handle:
        handle.write(os.urandom(24 * 2**20))  # bigger than any socket buffer
    deadline = time.monotonic() + 10
    while (job := requests.get(f"{service.url}/api/v1/jobs/{job['id']}", headers=headers).json())["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stalled = stalled_readers(service, job["archive_url"])
    try:
        time.sleep(1)
        for _ in range(3):  # times out if the stalled readers hold the threads
            assert requests.get(service.url + "/healthz", timeout=5).status_code == 200
        archive = requests.get(job["archive_url"], timeout=30)
        assert archive.status_code == 200 and len(archive.content) > 24 * 2**20
    finally:
        for sock in stalled:
            sock.close()


def test_json_that_cannot_be_stored_or_read_back_is_refused(live, files, media):
    service = live(files, start_workers=False)
    url, headers = service.url + "/api/v1/jobs", {**service.headers(), "Content-Type": "application/json"}
    base = json.dumps({"audio_url": files["speech"], "templates": [files["h264"]], "metadata": {"k": "V"}})
    for value, reason in (('"\\ud800"', "surrogate"), ("NaN", "NaN"), ("-Infinity", "Infinity"), ("1e400", "too large")):
        for body in (base.replace('"V"', value), base.replace(f'"{files["h264"]}"', value)):
            assert reason in _problem(requests.post(url, headers=headers, data=body), 400)
    with open(media["speech"], "rb") as handle:  # multipart fields are JSON too, with the same limits
        answer = requests.post(url, headers=service.headers(), files={"audio": ("n.wav", handle)},
                               data={"templates": [files["h264"]], "metadata": "[" * 40 + "]" * 40})
    assert "nests over 32" in _problem(answer, 400)


def test_odd_templates_are_refused_with_a_reason(live, tmp_path):
    import cv2
    import numpy as np

    service = live(start_workers=False)
    strip = str(tmp_path / "strip.png")
    cv2.imwrite(strip, np.full((2000, 1, 3), 200, np.uint8))  # its thumbnail is 1 px wide
    raw = str(tmp_path / "raw.h264")  # an elementary stream: no container, no timestamps
    with open(raw, "wb") as handle:
        handle.write(b"\x00\x00\x00\x01\x67\x64\x00\x1f" + os.urandom(2000))
    with open(strip, "rb") as handle:
        answer = requests.post(service.url + "/api/v1/templates", headers=service.headers(),
                               files={"file": ("strip.png", handle)})
    assert answer.status_code == 201 and answer.json()["status"] == "rejected"
    with open(raw, "rb") as handle:
        answer = requests.post(service.url + "/api/v1/templates", headers=service.headers(),
                               files={"file": ("raw.h264", handle)})
    assert "raw.h264: not a readable media file" in _problem(answer, 400)


def test_range_requests_are_sent_by_the_server_not_a_thread(live, files):
    service = live(files, workers=0, http_threads=4)
    headers = service.headers()
    job = requests.post(service.url + "/api/v1/jobs", headers=headers,
                        json={"audio_url": files["speech"], "templates": [files["h264"]]}).json()
    folder = os.path.join(service.settings.outputs_dir, "acme", job["id"])
    os.makedirs(folder)
    content = os.urandom(24 * 2**20)
    with open(os.path.join(folder, "output_001.mp4"), "wb") as handle:
        handle.write(content)
    deadline = time.monotonic() + 10
    while not (job := requests.get(f"{service.url}/api/v1/jobs/{job['id']}", headers=headers).json())["video_urls"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    link = job["video_urls"][0]
    part = requests.get(link, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == content[1000:2000]
    assert requests.get(link, headers={"Range": "bytes=-10"}).content == content[-10:]
    stalled = stalled_readers(service, link, "Range: bytes=0-\r\n")
    try:
        time.sleep(1)
        assert requests.get(service.url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def test_archives_of_jobs_without_videos_and_of_running_jobs(live, files):
    service = live(files, workers=0)
    headers = service.headers()
    job = requests.post(service.url + "/api/v1/jobs", headers=headers,
                        json={"audio_url": files["speech"], "templates": [files["h264"]], "zip": True}).json()
    archive = f"{service.url}/api/v1/jobs/{job['id']}/archive"
    assert "still running" in _problem(requests.get(archive, headers=headers), 409)
    requests.post(f"{service.url}/api/v1/jobs/{job['id']}/cancel", headers=headers)  # never rendered: no folder
    answer = requests.get(archive, headers=headers)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/zip"


def test_a_tenant_gets_a_share_of_the_queue_and_of_the_analyses(live, files):
    from gateway.templates import AnalysisSlots

    service = live(files, start_workers=False, tenant_queue_limit=3)
    body = {"audio_url": files["speech"], "templates": [files["h264"]] * 2}
    url = service.url + "/api/v1/jobs"
    assert requests.post(url, headers=service.headers(), json=body).status_code == 202
    assert "waiting already" in _problem(requests.post(url, headers=service.headers(), json=body), 429)
    assert requests.post(url, headers=service.headers("globex"), json=body).status_code == 202
    slots = AnalysisSlots(2)
    assert slots.take("acme") is None and "yours" not in (slots.take("acme") or "yours")
    assert slots.take("globex") is None and "being analysed already" in slots.take("initech")
    slots.give_back("acme")
    assert slots.take("initech") is None


def test_a_body_that_trickles_in_is_cut_off(live, monkeypatch):
    import gateway.edge as edge_module

    monkeypatch.setattr(edge_module, "BODY_GRACE_SECONDS", 0.5)
    service = live(start_workers=False, http_min_body_rate=100_000)
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: {service.headers()['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(head.encode())
        for _ in range(20):  # 10 bytes every 0.1 s
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(b" " * 10)
        assert sock.recv(4096).split(b"\r\n")[0].endswith(b" 408 Request Timeout")


def test_clients_are_counted_by_address_and_ipv6_by_their_64():
    from gateway.edge import _client

    assert _client(("127.0.0.2", 5000)) == "127.0.0.2"
    assert _client(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == _client(("2001:db8:1:2:bbbb::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert _client(("::ffff:10.0.0.1", 5000, 0, 0)) == "10.0.0.1"
