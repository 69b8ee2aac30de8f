"""What the load generators share: the site's server, its table, cookie jars.

``benchmarks.consistency`` and ``benchmarks.faults`` both drive the Django
site in ``benchmarks.site`` over HTTP on 127.0.0.1, one ``httpx`` client
(and cookie jar) per simulated user, against a real cluster from
``multidb.testing.cluster``.  The site runs in a process of its own
(``Server``), configured by the JSON in ``MULTIDB_BENCH_SITE`` (see
``benchmarks/site/settings.py``), under uvicorn (ASGI) or gunicorn with
threads (WSGI, ``-k gthread``); ``benchmarks.concurrency`` runs its own
views in a ``Server`` too.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT

#: The servers ``Server`` can run the site under.
SERVERS = ("uvicorn", "gunicorn")
#: Worker threads of the gunicorn server (one process, ``-k gthread``).
GUNICORN_THREADS = 8


# ------------------------------------------------------------ cookie jar


class _PreciseNow:
    """``http.cookiejar`` keeps time in whole seconds, which would cut a
    ``Max-Age=1`` pin to anywhere between 0 and 1 s; browsers keep it exact."""

    @property
    def _now(self) -> float:
        return time.time()

    @_now.setter
    def _now(self, value: float) -> None:
        pass


class _PrecisePolicy(_PreciseNow, http.cookiejar.DefaultCookiePolicy):
    pass


class PreciseCookieJar(_PreciseNow, http.cookiejar.CookieJar):
    """Keeps expiry times exact.  httpx (0.28) copies the jar into a plain
    ``CookieJar`` for each request, which sends a cookie until the whole
    second after it expires: call ``clear_expired_cookies()`` (exact) just
    before a request to send none past its ``Max-Age``."""

    def __init__(self) -> None:
        super().__init__(_PrecisePolicy())

    def _cookie_from_cookie_tuple(self, tup: Any, request: Any) -> Any:
        cookie = super()._cookie_from_cookie_tuple(tup, request)  # type: ignore[misc]
        expires = tup[2].get("expires")
        if cookie is not None and isinstance(expires, float):
            cookie.expires = expires  # Cookie() truncates it to an int
        return cookie

    def live(self, name: str) -> str | None:
        """The value of the cookie called ``name``, unless missing or expired."""
        now = time.time()
        for cookie in self:
            if cookie.name == name and not cookie.is_expired(now):
                return cookie.value
        return None


def clients(url: str, users: int, timeout: float) -> list[Any]:
    """One ``httpx.AsyncClient`` per user, each with its own cookie jar."""
    import httpx

    return [
        httpx.AsyncClient(
            base_url=url,
            timeout=timeout,
            cookies=PreciseCookieJar(),
            trust_env=False,  # no proxy between us and 127.0.0.1
        )
        for _ in range(users)
    ]


def jar(client: Any) -> PreciseCookieJar:
    """The cookie jar of a client made by ``clients``."""
    cookie_jar: PreciseCookieJar = client.cookies.jar
    return cookie_jar


# ------------------------------------------------------------ the table


def reset_table(cluster: Any, users: int, rows_per_user: int) -> None:
    """A fresh benchmark table with ``rows_per_user`` rows per user, replayed
    by every replica."""
    from benchmarks.site import TABLE

    cluster.primary.query(f"DROP TABLE IF EXISTS {TABLE}")
    cluster.primary.query(
        f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, owner integer NOT NULL,"
        f" body text NOT NULL)"
    )
    cluster.primary.query(f"CREATE INDEX ON {TABLE} (owner, id)")
    cluster.primary.query(
        f"INSERT INTO {TABLE} (owner, body) SELECT g %% %s, 'seed'"
        f" FROM generate_series(0, %s - 1) AS g",
        [users, users * rows_per_user],
    )
    cluster.primary.query(f"ANALYZE {TABLE}")
    cluster.wait_caught_up(timeout=15)


# ------------------------------------------------------------ the server


class Server:
    """A Django site in a process of its own, on a free loopback port, ready
    once ``/ping/`` answers 200: the benchmark site (``Server.of_site``), or
    any ``command`` given the port (``benchmarks.concurrency``'s server).

    ``env`` is added to this process's environment, less libpq's ``PG*``
    variables and ``DJANGO_SETTINGS_MODULE``: the site reads its settings
    from ``env`` alone.
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        env: dict[str, str],
        log: Path,
    ) -> None:
        from multidb.testing.cluster import free_ports

        self.name = name
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.command = command(self.port)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PG") and k != "DJANGO_SETTINGS_MODULE"
        }
        self.env.update(env)
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def of_site(
        cls,
        site: dict[str, Any],
        seed_path: Path | None,
        log: Path,
        kind: str = "uvicorn",
        workers: int = 1,
        preload: bool = False,
    ) -> Server:
        """The benchmark site (``benchmarks.site``) configured by ``site``.

        ``kind`` is ``"uvicorn"`` (ASGI, sync views in a thread per request)
        or ``"gunicorn"`` (WSGI, ``workers`` processes with
        ``GUNICORN_THREADS`` threads each; with ``preload``, the master
        imports the site before it forks them: ``--preload``).
        """
        if kind not in SERVERS:
            raise ValueError(f"unknown server {kind!r}; one of {SERVERS}")
        if kind == "uvicorn" and (workers != 1 or preload):
            raise ValueError("workers and preload are gunicorn's options")

        def command(port: int) -> list[str]:
            if kind == "uvicorn":
                return [
                    sys.executable, "-m", "uvicorn",
                    "benchmarks.site.asgi:application",
                    "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off",
                    "--no-access-log", "--log-level", "warning",
                    "--timeout-graceful-shutdown", "3",
                ]  # fmt: skip
            return [
                sys.executable, "-m", "gunicorn", "benchmarks.site.wsgi:application",
                "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
                "--workers", str(workers), "--threads", str(GUNICORN_THREADS),
                "--log-level", "warning", "--graceful-timeout", "3",
                "--timeout", "60", "--backlog", "256",
            ] + (["--preload"] if preload else [])  # fmt: skip

        paths = [str(ROOT)] + ([str(seed_path)] if seed_path else [])
        env = {
            "DJANGO_SETTINGS_MODULE": "benchmarks.site.settings",
            "MULTIDB_BENCH_SITE": json.dumps(site),
            "PYTHONPATH": os.pathsep.join(paths),
        }
        return cls(kind, command, env, log)

    def start(self, timeout: float = 30) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process; ``wait_ready`` waits until it answers."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 30) -> None:
        import httpx

        assert self.process is not None, "call spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                ping = httpx.get(f"{self.url}/ping/", timeout=1, trust_env=False)
                if ping.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not answer within {timeout}s:\n{self.tail()}"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(6)
            except subprocess.TimeoutExpired:
                self.process.kill()
        # Reaped either way, so no ResourceWarning about a running child.
        self.process.wait(10)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# ------------------------------------------------------------ statistics


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so that servers and files go in the
    ``finally`` blocks that clean up after Ctrl-C."""

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
