"""The real Redis and PostgreSQL servers the tests start (tests/servers.py)."""
from __future__ import annotations

import socket

import redis
import sqlalchemy

from servers import PostgresServer, RedisServer


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_redis_restart_loses_everything_and_answers_on_the_same_port():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("job", "queued")
        port = server.port
        server.restart()
        assert server.port == port and client.ping()
        assert client.get("job") is None
        client.close()
    assert not port_open(port)


def test_postgres_accepts_sqlalchemy_and_is_gone_after_the_block():
    with PostgresServer() as server:
        engine = sqlalchemy.create_engine(server.url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE jobs (id serial PRIMARY KEY, status text)"))
            connection.execute(sqlalchemy.text("INSERT INTO jobs (status) VALUES ('queued')"))
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT status FROM jobs")).scalar_one() == "queued"
            assert connection.execute(sqlalchemy.text("SELECT current_database()")).scalar_one() == "heygem"
        engine.dispose()
        port = server.port
    assert not port_open(port)
