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

``--groups`` (with either) also starts a second, independent primary,
``billing`` (its own ``initdb``), with its own replica ``billing_r1``, 1 s
late too: two replica groups (``MULTIDB_REPLICA_GROUPS``), and an
``invoices`` app that lives on ``billing`` (``MULTIDB_PRIMARY_FOR``),
migrated there.  The scenario then goes on: a user who writes an invoice
reads invoices from the billing primary but notes from the default
replica; after a note too, the pin cookie carries both primaries'
positions, and once both replicas have replayed them, that user reads both
apps from the replicas; ``multidb_status`` and the health view report by
group.

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
#: The second primary and its replica, with ``--groups``.
BILLING = "billing"
BILLING_REPLICA = "billing_r1"
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


#: Threads starting a cluster beside the main thread's: ``stop`` waits for
#: them, since a start that ends after the clean-up would leave its servers
#: running.
_starting: list[threading.Thread] = []


def start_together(cluster: Cluster, other: Cluster) -> None:
    """Start both clusters at once (``other`` in a thread)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            other.start()
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    # Not a daemon: at exit Python waits for it before the clusters' atexit
    # stop() runs.
    thread = threading.Thread(target=run, name="start billing")
    _starting.append(thread)
    thread.start()
    # In the main thread, which Ctrl-C and SIGTERM interrupt.
    cluster.start()
    thread.join()
    if errors:
        raise errors[0]


def start(cluster: Cluster, billing: Cluster | None = None) -> None:
    """Start the servers, configure Django for them, migrate, and wait for
    the replicas to replay the migrations."""
    t0 = time.monotonic()
    if billing is None:
        cluster.start()
    else:
        start_together(cluster, billing)
    replica = cluster.replicas[0]
    cluster.set_apply_delay(replica, APPLY_DELAY_MS)
    version = cluster.primary.scalar("SHOW server_version").split()[0]
    say(
        f"PostgreSQL {version} started in {time.monotonic() - t0:.1f}s: primary "
        f"on 127.0.0.1:{cluster.primary.port}, replica on 127.0.0.1:{replica.port}"
    )
    if billing is None:
        say(
            f"   the replica applies WAL {APPLY_DELAY_MS} ms late "
            f"(recovery_min_apply_delay); data in {cluster.base_dir}"
        )
        os.environ.pop("MULTIDB_DEMO_BILLING_PORT", None)
        os.environ.pop("MULTIDB_DEMO_BILLING_REPLICA_PORT", None)
    else:
        start_billing(cluster, billing)

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
    if billing is not None:
        # migrate runs per database; the router allows each app on its primary.
        call_command("migrate", database=BILLING, interactive=False, verbosity=0)
    migrated = time.monotonic() - t1
    cluster.wait_caught_up(timeout=APPLY_DELAY_MS / 1000 + 10)
    if billing is None:
        say(
            f"migrated the primary in {migrated:.1f}s; the replica replayed it "
            f"{time.monotonic() - t1 - migrated:.1f}s later"
        )
        return
    billing.wait_caught_up(timeout=APPLY_DELAY_MS / 1000 + 10)
    tables_placed(cluster, billing)
    say(
        f"migrated both primaries in {migrated:.1f}s, notes on default and "
        f"invoices on billing only; the replicas replayed them "
        f"{time.monotonic() - t1 - migrated:.1f}s later"
    )


def start_billing(cluster: Cluster, billing: Cluster) -> None:
    """Delay billing's replica too, and show that billing is a server of its
    own, not a copy of default's."""
    replica = billing.replicas[0]
    billing.set_apply_delay(replica, APPLY_DELAY_MS)
    system_id = "SELECT system_identifier FROM pg_control_system()"
    ours, theirs = cluster.primary.scalar(system_id), billing.primary.scalar(system_id)
    claim(
        ours != theirs,
        f"billing's primary has default's system identifier {ours}: not an "
        "independent server",
    )
    say(
        f"   and {BILLING}, a second primary, on 127.0.0.1:{billing.primary.port}, "
        f"its replica {BILLING_REPLICA} on 127.0.0.1:{replica.port}"
    )
    say(
        f"   {BILLING} has its own initdb: system identifier {theirs}, default's {ours}"
    )
    say(
        f"   the replicas apply WAL {APPLY_DELAY_MS} ms late "
        f"(recovery_min_apply_delay); data in {cluster.base_dir}"
    )
    say(f"   and {billing.base_dir}")
    os.environ["MULTIDB_DEMO_BILLING_PORT"] = str(billing.primary.port)
    os.environ["MULTIDB_DEMO_BILLING_REPLICA_PORT"] = str(replica.port)


def tables_placed(cluster: Cluster, billing: Cluster) -> None:
    """Each app's table is on its own primary and its replica, and only there."""
    from demo.invoices.models import Invoice
    from demo.notes.models import Note

    wanted = (Note._meta.db_table, Invoice._meta.db_table)
    for group, table in ((cluster, wanted[0]), (billing, wanted[1])):
        for node in group.nodes:
            found = {
                row[0]
                for row in node.query(
                    "SELECT tablename FROM pg_tables WHERE tablename = ANY(%s)",
                    [list(wanted)],
                )
            }
            claim(
                found == {table},
                f"{node.name} on port {node.port} has the tables {sorted(found)}, "
                f"expected only {table}",
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


def stop(cluster: Cluster, billing: Cluster | None = None) -> None:
    """Stop the servers without a storm of "server is down" messages."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut this
    for thread in _starting:
        thread.join()
    if "django.conf" in sys.modules:
        from django.conf import settings
        from django.db import connections

        if settings.configured:
            settings.MULTIDB_HEALTH_CHECK_INTERVAL = None  # the prober stops
            logging.getLogger("multidb").setLevel(logging.CRITICAL)
            connections.close_all()
    cluster.stop()
    if billing is not None:
        billing.stop()


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


#: What each list view lists, and the field the demo looks for.
LISTS = {"/notes/": ("notes", "text"), "/invoices/": ("invoices", "customer")}
#: How the group steps name each database.
NAMES = {
    "default": "the default primary",
    "replica": "the default replica",
    BILLING: "the billing primary",
    BILLING_REPLICA: "the billing replica",
}


def payload(positions: dict[str, int]) -> str:
    """A token's positions as it carries them (``default:LSN|billing:LSN``)."""
    return ";".join(f"{alias}:{lsn:X}" for alias, lsn in positions.items())


class Demo:
    def __init__(self, cluster: Cluster, site: Site, billing: Cluster | None) -> None:
        import httpx

        self.primary = cluster.primary.port
        self.replica = cluster.replicas[0].port
        #: Each alias's port.
        self.ports = {"default": self.primary, "replica": self.replica}
        if billing is not None:
            self.ports[BILLING] = billing.primary.port
            self.ports[BILLING_REPLICA] = billing.replicas[0].port
        self.groups = billing is not None
        self.site = site
        #: User A keeps cookies (and so the pin cookie) between requests.
        self.user_a = httpx.Client(base_url=site.url, timeout=10)
        #: User C writes to both primaries (with --groups only).
        self.user_c = httpx.Client(base_url=site.url, timeout=10)
        self.stale_avoided = 0
        self.explained = ""

    def close(self) -> None:
        self.user_a.close()
        self.user_c.close()

    def read(
        self, client: httpx.Client | None = None, path: str = "/notes/"
    ) -> dict[str, Any]:
        """``GET path`` as ``client``, or as a user without cookies."""
        import httpx

        if client is None:
            response = httpx.get(f"{self.site.url}{path}", timeout=10)
        else:
            response = client.get(path)
        claim(
            response.status_code == 200,
            f"GET {path} answered {response.status_code}: {response.text[:300]}",
        )
        data: dict[str, Any] = response.json()
        key, field = LISTS[path]
        data["texts"] = [item[field] for item in data[key]]
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

    def answered_by(self, data: dict[str, Any], alias: str) -> str:
        """``answered`` for any database of either group, by its alias."""
        port = self.ports[alias]
        role = "replica" if alias in ("replica", BILLING_REPLICA) else "primary"
        claim(
            data["server"] == role and data["port"] == port,
            f"expected {NAMES[alias]} (port {port}) to answer, but the "
            f"{data['server']} on port {data['port']} (alias {data['alias']!r}) did",
        )
        return f"answered by {NAMES[alias]} (port {port})"

    def post(self, text: str, client: httpx.Client | None = None) -> tuple[str, float]:
        """User A (or ``client``) posts a note; the Set-Cookie header and when
        it was done."""
        return self.post_to(client or self.user_a, "/notes/", {"text": text})

    def post_to(
        self, client: httpx.Client, path: str, fields: dict[str, str]
    ) -> tuple[str, float]:
        """``post`` of any form."""
        from multidb.middleware import pinning_cookie
        from multidb.tokens import cookie_seconds

        response = client.post(path, data=fields)
        done = time.monotonic()
        claim(
            response.status_code == 201,
            f"POST {path} answered {response.status_code}: {response.text[:300]}",
        )
        #: ``multidb.explain()`` in the view, after its write (notes only).
        self.explained = response.json().get("explain", "")
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
            name in client.cookies,
            f"the user's client did not keep the cookie {name}",
        )
        return cookie.split(";")[0] + "; Max-Age=" + str(seconds), done

    def run(self) -> None:
        say()
        say(f"Demo site (ASGI, uvicorn) at {self.site.url}/  - the scenario:")
        first = "hello from A"
        cookie, posted = self.post(first)
        say(f'1. user A posts a note "{first}"')
        say(f"   -> 201 Created; Set-Cookie: {cookie}")
        claim(
            self.explained.startswith("primary_pinned_time"),
            f"explain() after the write: {self.explained}",
        )
        say(f"   explain() after the write: {self.explained}")

        say("2. user A reads /notes/ right away, WITH the cookie")
        pinned = self.read(self.user_a)
        result = self.answered(pinned, "primary")
        claim(first in pinned["texts"], f"{first!r} missing from the primary's list")
        say(f"   -> {result}; the new note is there")
        claim(
            pinned["outcome"] == "primary_token_waiting",
            f"explain() with A's token: {pinned['explain']}",
        )
        say(f"   explain(): {pinned['explain']}")

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

        step = 7
        if self.groups:
            step = self.two_groups(step)
        self.status(step)
        self.health(step + 1)
        self.metrics(step + 2)

    def two_groups(self, step: int) -> int:
        """User C writes to billing, then to default too; the number of the
        next step."""
        from multidb.middleware import pinning_cookie
        from multidb.positions import format_lsn

        invoice = "ACME Corp"
        cookie, posted = self.post_to(
            self.user_c, "/invoices/", {"customer": invoice, "amount": "120.00"}
        )
        positions = self.cookie_positions(self.user_c)
        claim(
            list(positions) == [BILLING],
            f"after writing an invoice only, user C's cookie holds {positions}",
        )
        billing_position = positions[BILLING]
        say(
            f'{step}. user C posts an invoice for "{invoice}"; invoices live on '
            f"{BILLING}, the second primary"
        )
        say(f"   -> 201 Created; Set-Cookie: {cookie}")
        say(
            f"      the token, {payload(positions)} (signed), holds billing's "
            f"position {format_lsn(billing_position)} only"
        )

        step += 1
        say(f"{step}. user C reads /invoices/ right away, WITH the cookie")
        pinned = self.read(self.user_c, "/invoices/")
        result = self.answered_by(pinned, BILLING)
        claim(invoice in pinned["texts"], f"{invoice!r} missing from billing's list")
        say(f"   -> {result}; the new invoice is there")
        unpinned = self.read(path="/invoices/")
        elapsed = time.monotonic() - posted
        result = self.answered_by(unpinned, BILLING_REPLICA)
        claim(
            invoice not in unpinned["texts"],
            f"billing's replica already had {invoice!r} {elapsed:.2f}s after the "
            f"write, within its {APPLY_DELAY_MS} ms apply delay",
        )
        say(f"   user B (no cookie), {elapsed:.2f}s after the write: {result},")
        say("   and the invoice is NOT there yet: billing's replica is 1 s behind too")
        notes = self.read(self.user_c)
        result = self.answered_by(notes, "replica")
        say("   user C reads /notes/ with the same cookie")
        say(f"   -> {result}: a write to billing pins only billing's reads")

        step += 1
        text = "C's note"
        _, noted = self.post(text, self.user_c)
        positions = self.cookie_positions(self.user_c)
        claim(
            list(positions) == ["default", BILLING],
            f"after writing to both primaries, user C's cookie holds {positions}",
        )
        claim(
            positions[BILLING] == billing_position,
            f"the note's cookie should keep billing's position "
            f"{format_lsn(billing_position)}; it holds {positions}",
        )
        say(f'{step}. user C posts a note "{text}": the new cookie carries both')
        say(
            f"   primaries' positions, {payload(positions)} (signed): "
            + ", ".join(
                f"{alias} {format_lsn(lsn)}" for alias, lsn in positions.items()
            )
        )
        say("   billing's kept from the invoice's cookie")
        pinned = self.read(self.user_c)
        result = self.answered_by(pinned, "default")
        claim(text in pinned["texts"], f"{text!r} missing from the primary's list")
        say(f"   user C reads /notes/ -> {result}; the note is there")

        step += 1
        self.wait_replayed(positions)
        elapsed = time.monotonic() - noted
        say(
            f"{step}. once both replicas have replayed those positions, user C "
            f"reads again ({elapsed:.1f}s after the note)"
        )
        for path, alias, wanted in (
            ("/notes/", "replica", text),
            ("/invoices/", BILLING_REPLICA, invoice),
        ):
            data = self.read(self.user_c, path)
            result = self.answered_by(data, alias)
            claim(
                wanted in data["texts"],
                f"{NAMES[alias]} answered user C without {wanted!r}",
            )
            say(f'   {path:<11} -> {result}; "{wanted}" is there')
        claim(
            pinning_cookie() in self.user_c.cookies,
            f"user C's client dropped the cookie {pinning_cookie()}",
        )
        say(
            "   the cookie is still set: its positions send C's reads to any "
            "replica that has them"
        )
        return step + 1

    def cookie_positions(self, client: httpx.Client) -> dict[str, int]:
        """The positions in ``client``'s pin cookie, by primary, in its order."""
        from django.http import parse_cookie

        from multidb import tokens
        from multidb.middleware import pinning_cookie
        from multidb.pinning import NO_PIN

        name = pinning_cookie()
        # As Django reads it: a token for several primaries has a ";" in it,
        # so the Set-Cookie value is a quoted string.
        value = parse_cookie(f"{name}={client.cookies[name]}").get(name, "")
        decoded = tokens._decode(value)
        if decoded is None:
            raise DemoFailed(f"the pin cookie is not a valid token: {value!r}")
        parts, _ = decoded
        if not all(parts.values()):
            raise DemoFailed(f"the pin cookie pins by time, without positions: {parts}")
        positions = {alias: int(lsn, 16) for alias, lsn in parts.items()}
        # The routers read the cookie with pins_for: the same positions.
        default_pin, others = tokens.pins_for(value)
        claim(
            default_pin == positions.get("default", NO_PIN)
            and others == {k: v for k, v in positions.items() if k != "default"},
            f"pins_for reads {default_pin!r} and {others!r} from a cookie "
            f"holding {positions}",
        )
        return positions

    def wait_replayed(self, positions: dict[str, int]) -> None:
        """Until the prober has seen each group's replica past its position."""
        from multidb import health

        replicas = {"default": "replica", BILLING: BILLING_REPLICA}
        deadline = time.monotonic() + APPLY_DELAY_MS / 1000 + 5
        while True:
            seen = health.registry.replay_positions()
            behind = {
                replicas[primary]: position
                for primary, position in positions.items()
                if seen.get(replicas[primary], -1) < position
            }
            if not behind or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        claim(
            not behind,
            f"the prober has not seen these replicas replay C's positions: {behind}",
        )

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
        claim(data["outcome"] == "replica", f"explain(): {data['explain']}")
        say(f"   explain(): {data['explain']}")

    def status(self, step: int) -> None:
        from django.core.management import CommandError, call_command

        out = io.StringIO()
        say(f"{step}. manage.py multidb_status --strict")
        try:
            call_command("multidb_status", strict=True, stdout=out)
        except CommandError as exc:
            raise DemoFailed(f"multidb_status --strict: {exc}") from None
        lines = out.getvalue().rstrip().splitlines()
        if self.groups:
            rows = {line.split()[1]: line.split()[0] for line in lines[1:]}
            claim(
                lines[0].split()[:2] == ["GROUP", "ALIAS"]
                and rows
                == {
                    "default": "default",
                    "replica": "default",
                    BILLING: BILLING,
                    BILLING_REPLICA: BILLING,
                },
                "multidb_status should list both groups' databases by group:\n"
                + "\n".join(lines),
            )
        for line in lines:
            say(f"   {line}")

    def health(self, step: int) -> None:
        import httpx

        response = httpx.get(f"{self.site.url}/health/", timeout=10)
        body = response.json()
        claim(
            response.status_code == 200 and body.get("status") == "ok",
            f"GET /health/ answered {response.status_code}: {response.text[:300]}",
        )
        replicas = 2 if self.groups else 1
        claim(
            body["usable_replicas"] == replicas,
            f"GET /health/ reports {body['usable_replicas']} usable replicas",
        )
        claim(
            set(body) == {"status", "usable_replicas", "min_replicas"},
            f"GET /health/ shows an anonymous client more than the summary: {body}",
        )
        say(
            f"{step}. GET /health/ -> {response.status_code} {response.text} "
            "(the details are in multidb_status, above, and for staff with "
            'MULTIDB_HEALTH_DETAILS = "staff")'
        )
        if self.groups:
            self.health_by_group()

    def metrics(self, step: int) -> None:
        """An excerpt of ``GET /metrics/``: multidb.contrib.prometheus's
        counters of the requests above, and the replicas' gauges."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        response = httpx.get(f"{self.site.url}/metrics/", timeout=10)
        claim(response.status_code == 200, f"GET /metrics/ -> {response.status_code}")
        samples = [
            sample
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name.startswith("multidb_")
        ]
        requests = {
            s.labels["outcome"]: s.value
            for s in samples
            if s.name == "multidb_requests_total" and s.labels["group"] == "default"
        }
        for outcome in ("replica", "primary_pinned_time", "primary_token_waiting"):
            claim(
                requests.get(outcome, 0) >= 1,
                f"multidb_requests_total counted no {outcome} request: {requests}",
            )
        replica = "replica"
        state = {
            s.labels["state"]
            for s in samples
            if s.name == "multidb_replica_state"
            and s.labels["alias"] == replica
            and s.value == 1
        }
        claim(state == {"ok"}, f"multidb_replica_state of {replica}: {state}")
        say(f"{step}. GET /metrics/ (multidb.contrib.prometheus), an excerpt:")
        shown = (
            "multidb_requests_total",
            "multidb_token_checks_total",
            "multidb_replica_lag_seconds",
            "multidb_usable_replicas",
        )
        for sample in samples:
            if sample.name in shown or (
                sample.name == "multidb_replica_state" and sample.value == 1
            ):
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                say(f"   {sample.name}{{{labels}}} {sample.value:g}")

    def health_by_group(self) -> None:
        """The details' ``groups``, which the view shows staff."""
        from multidb.views import report

        healthy, details = report()
        by_group = details.get("groups", {})
        claim(
            healthy
            and list(by_group) == ["default", BILLING]
            and all(
                group["status"] == "ok" and group["usable_replicas"] == 1
                for group in by_group.values()
            ),
            f"the health details should show both groups ok: {by_group}",
        )
        say(
            "   the view's details (multidb.views.report()), by group: "
            + "; ".join(
                f"{name} {group['status']}, {group['usable_replicas']} usable replica"
                for name, group in by_group.items()
            )
        )


def scenario(cluster: Cluster, billing: Cluster | None = None) -> None:
    with Site() as site:
        demo = Demo(cluster, site, billing)
        try:
            demo.run()
        finally:
            demo.close()


# ------------------------------------------------------------------- serve


def serve(port: int, groups: bool = False) -> None:
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
    if groups:
        say(
            f"""With --groups, invoices live on the second primary, billing:
  {url}/invoices/ GET: newest invoices and the server that answered;
      POST customer=...&amount=...
An invoice pins only billing's reads (paste the three lines at once):
  curl -s -c /tmp/demo-c.jar -d customer=ACME -d amount=9.50 {url}/invoices/
  curl -s -b /tmp/demo-c.jar {url}/invoices/   # C reads the billing primary
  curl -s -b /tmp/demo-c.jar {url}/notes/      # and the default replica
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
        "--groups",
        action="store_true",
        help="also start a second primary (billing) with its own replica: two "
        "replica groups, and an invoices app on billing",
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
    # Its own initdb: an independent server, not a copy of default's.
    billing = Cluster(replicas=1, own_initdb=True) if args.groups else None
    try:
        try:
            start(cluster, billing)
            if args.serve:
                serve(args.port, groups=billing is not None)
            else:
                scenario(cluster, billing)
        finally:
            stop(cluster, billing)
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
