"""Concurrent requests through a real ASGI server (uvicorn, in a thread).

One event loop serves every request, and the sync views share one worker
thread: django-multidb-router 0.11's thread-local pin would leak between
them (a POST or a pinned GET would pin whichever request reads next).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from django.core.asgi import get_asgi_application

from multidb.conf import conf
from tests.app import views

REPLICAS = {"replica1", "replica2"}
START_TIMEOUT = 5.0
REQUEST_TIMEOUT = 5.0


class _NoCookies(http.cookiejar.CookieJar):
    """Never stores a cookie: each request carries exactly the cookies it is given."""

    def extract_cookies(self, response: object, request: object) -> None:
        return None


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        get_asgi_application(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        loop="asyncio",
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            assert thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"


def _client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        # The jar itself: httpx.Cookies(jar) would copy it into a plain,
        # storing one.
        cookies=_NoCookies(),
        timeout=REQUEST_TIMEOUT,
        trust_env=False,  # no proxy between us and 127.0.0.1
        limits=httpx.Limits(max_connections=100),
    )


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_concurrent_requests_through_uvicorn_each_follow_their_own_pin(
    server_url, monkeypatch
):
    n = 50
    # (method, pinned by cookie, path) for each request, interleaved.
    plan = []
    for i in range(n):
        path = "/async-read-many/" if i % 2 else "/read-many/"
        mode = ("GET", "GET+cookie", "POST")[i % 3]
        plan.append((mode, path))
    async_requests = sum(path == "/async-read-many/" for _, path in plan)
    # Every async request waits for all the others at each of its reads.
    monkeypatch.setattr(views, "READ_BARRIER", asyncio.Barrier(async_requests))

    async def one(client: httpx.AsyncClient, mode: str, path: str) -> httpx.Response:
        headers = {"Cookie": f"{conf.PINNING_COOKIE}=y"} if mode == "GET+cookie" else {}
        method = "POST" if mode == "POST" else "GET"
        return await client.request(method, path, headers=headers)

    async def run_all() -> list[httpx.Response]:
        async with _client(server_url) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(one(client, mode, path) for mode, path in plan)),
                REQUEST_TIMEOUT * 2,
            )

    responses = asyncio.run(run_all())

    used = set()
    for (mode, path), response in zip(plan, responses, strict=True):
        assert response.status_code == 200, (mode, path, response.text[:300])
        body = response.json()
        assert len(body["dbs"]) == 5
        pinned = mode != "GET"
        assert body["pinned"] is pinned, (mode, path)
        if pinned:
            assert body["dbs"] == ["default"] * 5, (mode, path)
        else:
            assert len(set(body["dbs"])) == 1, (mode, path)
            assert body["dbs"][0] in REPLICAS, (mode, path)
            used.add(body["dbs"][0])
        sets_cookie = any(
            header.startswith(f"{conf.PINNING_COOKIE}=")
            for header in response.headers.get_list("set-cookie")
        )
        assert sets_cookie is (mode == "POST"), (mode, path)
    assert used == REPLICAS  # both replicas served unpinned requests


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_writes_through_uvicorn_pin_only_their_own_request(server_url):
    """A GET that writes pins the rest of itself; concurrent reads stay free."""
    plan = ["/async-write/", "/read-many/", "/async-read-many/"] * 6

    async def run_all() -> list[httpx.Response]:
        async with _client(server_url) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(client.get(path) for path in plan)),
                REQUEST_TIMEOUT * 2,
            )

    for path, response in zip(plan, asyncio.run(run_all()), strict=True):
        assert response.status_code == 200, (path, response.text[:300])
        body = response.json()
        if path == "/async-write/":
            assert body["before"] in REPLICAS
            assert body["write"] == body["after"] == "default"
            assert f"{conf.PINNING_COOKIE}=" in response.headers["set-cookie"]
        else:
            assert body["pinned"] is False
            assert len(set(body["dbs"])) == 1 and body["dbs"][0] in REPLICAS
            assert "set-cookie" not in response.headers
