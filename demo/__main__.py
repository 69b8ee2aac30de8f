"""``./run.sh demo``: django-replica-router on a real primary and replica.

Starts a throw-away PostgreSQL primary and one streaming replica that
applies WAL 1 s late (``recovery_min_apply_delay``), in a private temporary
directory; migrates the demo site (``demo.settings``: the ``notes`` app,
``PinningReplicaRouter``, ``PinningRouterMiddleware`` and
``multidb.views.health``) on the primary and waits for the replica to
replay it.  Then, run from the repository root:

``python -m demo``
    serves the site with uvicorn on a free port and plays a scripted
    scenario over real HTTP: a user who wrote reads from the primary (the
    pin cookie), a user who did not reads the replica, stale for a second.
    Every claim printed is checked: the first false one exits with status 1,
    so the demo doubles as an end-to-end test.

``python -m demo --serve [--port 8000]``
    serves the site at http://127.0.0.1:8000/ until Ctrl-C, for curl.

The servers and their files are removed on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    import uvicorn

    from multidb.testing.cluster import Cluster

APPLY_DELAY_MS = 1000
#: How long user B waits before reading again, in seconds.
LATER = 1.2
SETTINGS_MODULE = "demo.settings"


class DemoFailed(Exception):
    """A claim the demo printed turned out false."""


_claims = 0


def claim(holds: bool, message: str) -> None:
    """Check what the demo is about to tell the user."""
    global _claims
    if not holds:
        raise DemoFailed(message)
    _claims += 1


def say(text: str = "") -> None:
    print(text, flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(
                f"demo: cannot serve on 127.0.0.1:{port} ({exc.strerror}); "
                "choose another port with --port N"
            ) from None


# ------------------------------------------------------------------- setup


def start(cluster: Cluster) -> None:
    """Start the servers, configure Django for them, migrate, and wait for
    the replica to replay the migrations."""
    t0 = time.monotonic()
    cluster.start()
    replica = cluster.replicas[0]
    cluster.set_apply_delay(replica, APPLY_DELAY_MS)
    version = cluster.primary.scalar("SHOW server_version").split()[0]
    say(
        f"PostgreSQL {version} started in {time.monotonic() - t0:.1f}s: primary "
        f"on 127.0.0.1:{cluster.primary.port}, replica on 127.0.0.1:{replica.port}"
    )
    say(
        f"   the replica applies WAL {APPLY_DELAY_MS} ms late "
        f"(recovery_min_apply_delay); data in {cluster.base_dir}"
    )

    os.environ["MULTIDB_DEMO_PRIMARY_PORT"] = str(cluster.primary.port)
    os.environ["MULTIDB_DEMO_REPLICA_PORT"] = str(replica.port)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import django
    from django.core.management import call_command

    django.setup()
    # Any warning (a misconfiguration) stops the demo.
    call_command("check", fail_level="WARNING", stdout=io.StringIO())
    t1 = time.monotonic()
    call_command("migrate", database="default", interactive=False, verbosity=0)
    migrated = time.monotonic() - t1
    cluster.wait_caught_up(timeout=APPLY_DELAY_MS / 1000 + 10)
    say(
        f"migrated the primary in {migrated:.1f}s; the replica replayed it "
        f"{time.monotonic() - t1 - migrated:.1f}s later"
    )


def asgi_server(port: int, quiet: bool) -> uvicorn.Server:
    import uvicorn
    from django.core.asgi import get_asgi_application

    config = uvicorn.Config(
        get_asgi_application(),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning" if quiet else "info",
        access_log=not quiet,
    )
    return uvicorn.Server(config)


def stop(cluster: Cluster) -> None:
    """Stop the servers without a storm of "server is down" messages."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut this
    if "django.conf" in sys.modules:
        from django.conf import settings
        from django.db import connections

        if settings.configured:
            settings.MULTIDB_HEALTH_CHECK_INTERVAL = None  # the prober stops
            logging.getLogger("multidb").setLevel(logging.CRITICAL)
            connections.close_all()
    cluster.stop()


# ---------------------------------------------------------------- scenario


class Site:
    """The demo site on uvicorn, in a thread of this process."""

    def __init__(self) -> None:
        from multidb.testing.cluster import free_ports

        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = asgi_server(self.port, quiet=True)
        self.thread = threading.Thread(
            target=self.server.run, name="uvicorn", daemon=True
        )

    def __enter__(self) -> Site:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoFailed(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


class Demo:
    def __init__(self, cluster: Cluster, site: Site) -> None:
        import httpx

        self.primary = cluster.primary.port
        self.replica = cluster.replicas[0].port
        self.site = site
        #: User A keeps cookies (and so the pin cookie) between requests.
        self.user_a = httpx.Client(base_url=site.url, timeout=10)
        self.stale_avoided = 0

    def read(self, client: httpx.Client | None = None) -> dict[str, Any]:
        """``GET /notes/`` as ``client``, or as a user without cookies."""
        import httpx

        if client is None:
            response = httpx.get(f"{self.site.url}/notes/", timeout=10)
        else:
            response = client.get("/notes/")
        claim(
            response.status_code == 200,
            f"GET /notes/ answered {response.status_code}: {response.text[:300]}",
        )
        data: dict[str, Any] = response.json()
        data["texts"] = [note["text"] for note in data["notes"]]
        return data

    def answered(self, data: dict[str, Any], server: str) -> str:
        port = self.primary if server == "primary" else self.replica
        claim(
            data["server"] == server and data["port"] == port,
            f"expected the {server} (port {port}) to answer, but the "
            f"{data['server']} (port {data['port']}, alias {data['alias']!r}) did",
        )
        count = data["count"]
        return (
            f"answered by the {server} (port {port}): "
            f"{count} note{'' if count == 1 else 's'}"
        )

    def post(self, text: str) -> tuple[str, float]:
        """User A posts a note; the Set-Cookie header and when it was done."""
        from multidb.middleware import pinning_cookie
        from multidb.tokens import cookie_seconds

        response = self.user_a.post("/notes/", data={"text": text})
        done = time.monotonic()
        claim(
            response.status_code == 201,
            f"POST /notes/ answered {response.status_code}: {response.text[:300]}",
        )
        cookie = response.headers.get("set-cookie", "")
        name = pinning_cookie()
        # A position token's cookie outlives the lag limit, not just
        # MULTIDB_PINNING_SECONDS (multidb.tokens.cookie_seconds).
        seconds = cookie_seconds()
        claim(
            cookie.startswith(f"{name}=") and f"max-age={seconds}" in cookie.lower(),
            f"the POST should set the pin cookie {name} for {seconds}s; "
            f"Set-Cookie: {cookie!r}",
        )
        claim(
            name in self.user_a.cookies,
            f"user A's client did not keep the cookie {name}",
        )
        return cookie.split(";")[0] + "; Max-Age=" + str(seconds), done

    def run(self) -> None:
        say()
        say(f"Demo site (ASGI, uvicorn) at {self.site.url}/  - the scenario:")
        first = "hello from A"
        cookie, posted = self.post(first)
        say(f'1. user A posts a note "{first}"')
        say(f"   -> 201 Created; Set-Cookie: {cookie}")

        say("2. user A reads /notes/ right away, WITH the cookie")
        pinned = self.read(self.user_a)
        result = self.answered(pinned, "primary")
        claim(first in pinned["texts"], f"{first!r} missing from the primary's list")
        say(f"   -> {result}; the new note is there")

        user_b = self.read()
        elapsed = time.monotonic() - posted
        say(f"3. user B (no cookie) reads /notes/ right away ({elapsed:.2f}s later)")
        result = self.answered(user_b, "replica")
        claim(
            first not in user_b["texts"],
            f"the replica already had {first!r} {elapsed:.2f}s after the write, "
            f"within its {APPLY_DELAY_MS} ms apply delay",
        )
        say(f"   -> {result}; the new note is NOT there")
        say("      yet: a stale read, the replica is 1 s behind")

        say("4. the same read by user A, with pinning off (no cookie)")
        unpinned = self.read()
        elapsed = time.monotonic() - posted
        result = self.answered(unpinned, "replica")
        claim(
            first not in unpinned["texts"],
            f"the replica already had {first!r} {elapsed:.2f}s after the write",
        )
        self.stale_avoided += 1
        say(f"   -> {result}; A's own note is missing:")
        say("      the stale read that the pin cookie saved A from")

        time.sleep(max(0.0, posted + LATER - time.monotonic()))
        say(f"5. {LATER:g}s after the write, user B reads again")
        later = self.read()
        result = self.answered(later, "replica")
        claim(
            first in later["texts"],
            f"the replica still lacks {first!r} {LATER:g}s after the write",
        )
        say(f"   -> {result}; the note is there now")
        self.token_released(posted)

        say("6. user A posts two more notes and reads each back at once:")
        for text in ("second note", "third note"):
            _, posted = self.post(text)
            pinned = self.read(self.user_a)
            claim(text in pinned["texts"], f"{text!r} missing from the primary's list")
            self.answered(pinned, "primary")
            unpinned = self.read()
            elapsed = time.monotonic() - posted
            self.answered(unpinned, "replica")
            claim(
                text not in unpinned["texts"],
                f"the replica already had {text!r} {elapsed:.2f}s after the write",
            )
            self.stale_avoided += 1
            say(f'   "{text}": primary (cookie) has it, replica (no cookie) not')
        say(f"   stale reads avoided: {self.stale_avoided}")

        self.status()
        self.health()

    def token_released(self, posted: float) -> None:
        """User A still holds the cookie, but its token has been replayed."""
        from multidb import health, tokens
        from multidb.middleware import pinning_cookie, pinning_seconds

        position = tokens.pin_for(self.user_a.cookies[pinning_cookie()])
        claim(type(position) is int, "the pin cookie should hold a position token")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            seen >= position for seen in health.registry.replay_positions().values()
        ):
            time.sleep(0.05)
        data = self.read(self.user_a)
        elapsed = time.monotonic() - posted
        result = self.answered(data, "replica")
        claim(
            "hello from A" in data["texts"],
            "the replica answered user A without A's own note",
        )
        say(f"   user A, cookie still set, reads again {elapsed:.1f}s after the write")
        say(f"   -> {result}; the replica has replayed A's token, so A")
        say(f"      reads it again: no {pinning_seconds()} s pin to the primary")

    def status(self) -> None:
        from django.core.management import CommandError, call_command

        out = io.StringIO()
        say("7. manage.py multidb_status --strict")
        try:
            call_command("multidb_status", strict=True, stdout=out)
        except CommandError as exc:
            raise DemoFailed(f"multidb_status --strict: {exc}") from None
        for line in out.getvalue().rstrip().splitlines():
            say(f"   {line}")

    def health(self) -> None:
        import httpx

        response = httpx.get(f"{self.site.url}/health/", timeout=10)
        body = response.json()
        claim(
            response.status_code == 200 and body.get("status") == "ok",
            f"GET /health/ answered {response.status_code}: {response.text[:300]}",
        )
        claim(
            body["usable_replicas"] == 1,
            f"GET /health/ reports {body['usable_replicas']} usable replicas",
        )
        claim(
            set(body) == {"status", "usable_replicas", "min_replicas"},
            f"GET /health/ shows an anonymous client more than the summary: {body}",
        )
        say(
            f"8. GET /health/ -> {response.status_code} {response.text} "
            "(the details are in multidb_status, above, and for staff with "
            'MULTIDB_HEALTH_DETAILS = "staff")'
        )


def scenario(cluster: Cluster) -> None:
    with Site() as site:
        demo = Demo(cluster, site)
        try:
            demo.run()
        finally:
            demo.user_a.close()


# ------------------------------------------------------------------- serve


def serve(cluster: Cluster, port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    say(
        f"""
Serving the demo site at {url}/ (uvicorn, ASGI). Ctrl-C stops it and the servers.
  {url}/notes/    GET: newest notes and the server that answered; POST text=...
  {url}/health/   the databases' health (200 or 503)
Try it: paste the first three lines at once (B's read, within 1 s, is stale):
  curl -s -c /tmp/demo.jar -d text=hello {url}/notes/   # A writes: pin cookie
  curl -s -b /tmp/demo.jar {url}/notes/                 # A reads the primary
  curl -s {url}/notes/                                  # B reads the replica
  curl -s {url}/health/
"""
    )
    server = asgi_server(port, quiet=False)
    # uvicorn handles Ctrl-C and SIGTERM itself, then raises them again.
    server.run()
    if not server.started:
        raise SystemExit(f"demo: uvicorn could not serve on {url}")


# -------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="django-replica-router on a real PostgreSQL primary and "
        "replica: a scripted, self-checking scenario, or --serve.",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="serve the demo site until Ctrl-C instead of running the scenario",
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port for --serve (default 8000)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.serve:
        _check_port_free(args.port)
    t0 = time.monotonic()
    from multidb.testing.cluster import Cluster

    cluster = Cluster(replicas=1)
    try:
        try:
            start(cluster)
            if args.serve:
                serve(cluster, args.port)
            else:
                scenario(cluster)
        finally:
            stop(cluster)
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        say("\nstopped; the database servers and their files are gone")
        return 0 if args.serve else 130
    if not args.serve:
        say(
            f"\nAll {_claims} checks passed in {time.monotonic() - t0:.1f}s; the "
            "database servers and their files are gone."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
