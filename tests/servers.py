"""Real Redis and PostgreSQL servers from Debian's packages, on 127.0.0.1 and a free port, for the
tests. Each runs as a child of the test process and dies with it, even if that is killed."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway_support import free_port


def _run_as(user: str | None) -> list[str]:
    """setpriv execs (no extra process, so signals reach the server) and asks the kernel to
    SIGTERM the server when the thread that started it dies without cleaning up."""
    switch = ["--reuid", user, "--regid", user, "--clear-groups"] if user else []
    return ["setpriv", *switch, "--pdeathsig", "TERM", "--"]


def _stop(process: subprocess.Popen | None, signal_: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal_)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _spawn(command: list[str], directory: str) -> subprocess.Popen:
    """The server's output goes to a log in its directory, quoted if it fails to start."""
    with open(os.path.join(directory, "server.log"), "ab") as log:
        return subprocess.Popen(command, cwd=directory, stdout=log, stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, directory: str, ready, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            ready()
            return
        except (redis.RedisError, psycopg.OperationalError):
            time.sleep(0.05)
    _stop(process, signal.SIGKILL)
    with open(os.path.join(directory, "server.log"), errors="replace") as log:
        tail = "".join(log.readlines()[-10:])
    raise RuntimeError(f"{process.args[process.args.index('--') + 1]} did not start:\n{tail}")


class _Server:
    """A server process with its data in `self.dir`: `close` stops it and removes the data."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _first_start(self) -> None:
        """Start; a server that fails to start leaves no process and no data behind."""
        self.process = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RedisServer(_Server):
    """redis-server without persistence; `restart` comes back empty on the same port, as Redis
    does after a crash when nothing is saved."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError("redis-server not found: install the Debian package redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="heygem-redis-")
        self._first_start()

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"]
        self.process = _spawn(_run_as(None) + command, self.dir)
        # No retries inside redis-py: the loop in _wait retries, and notices if the server exits.
        with redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)) as client:
            _wait(self.process, self.dir, client.ping)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)



def _postgres_bin() -> str:
    """The directory holding initdb and postgres: the one on PATH (symlinks followed, so both
    come from the same version), else the newest under /usr/lib/postgresql."""
    on_path = shutil.which("postgres")
    if on_path:
        return os.path.dirname(os.path.realpath(on_path))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[-3]))
    if not found:
        raise RuntimeError("PostgreSQL server not found: install the Debian package postgresql-15")
    return os.path.dirname(found[-1])


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster with a database `heygem`; trust auth, no durability."""

    USER = "postgres"

    def __init__(self):
        self.bin = _postgres_bin()
        # initdb and postgres refuse to run as root: then they run as the `postgres` system user.
        self.os_user = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs the 'postgres' system user (Debian package postgresql-common)")
            self.os_user = "postgres"
        self.port = free_port()
        self.url = f"postgresql+psycopg://{self.USER}@127.0.0.1:{self.port}/heygem"
        self.dir = tempfile.mkdtemp(prefix="heygem-postgres-")
        if self.os_user:
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._first_start()

    def _command(self, name: str, *args: str) -> list[str]:
        return _run_as(self.os_user) + [os.path.join(self.bin, name), *args]

    def start(self) -> None:
        data = os.path.join(self.dir, "data")
        initdb = subprocess.run(self._command("initdb", "-D", data, "-U", self.USER, "--auth=trust", "-E", "UTF8",
                                              "--no-locale", "--no-sync"),
                                cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if initdb.returncode:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()}")
        # postgres in the foreground (not pg_ctl), so it is our child and dies with us.
        self.process = _spawn(
            self._command("postgres", "-D", data, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                          "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off",
                          "-c", "synchronous_commit=off", "-c", "full_page_writes=off"), self.dir)
        connect = dict(host="127.0.0.1", port=self.port, user=self.USER, dbname="postgres", connect_timeout=1)
        _wait(self.process, self.dir, lambda: psycopg.connect(**connect).close())
        with psycopg.connect(**connect, autocommit=True) as connection:
            connection.execute("CREATE DATABASE heygem")

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # fast shutdown: does not wait for clients to disconnect

