from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from hypothesis import settings as hypothesis_settings

from multidb import groups, health, pinning, rotation, signals, tallies, tokens
from multidb import routers as multidb_routers
from multidb.conf import _clear_cache, conf
from multidb.middleware import PinningRouterMiddleware
from tests.app import routers

#: The sessions on real servers (tests/postgres, tests/groups): every test in
#: them is marked ``postgres``, so ``-m "not postgres"`` deselects them.
ON_SERVERS = (Path(__file__).parent / "postgres", Path(__file__).parent / "groups")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(folder in Path(item.path).parents for folder in ON_SERVERS):
            item.add_marker(pytest.mark.postgres)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``-m "not postgres"`` deselects a whole session on real servers: that
    is a success, not pytest's "no tests collected" (exit 5), e.g. under tox."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and "not postgres" in (
        session.config.option.markexpr or ""
    ):
        session.exitstatus = pytest.ExitCode.OK


# --- Hypothesis: local runs explore, CI runs repeat the same examples ----------


T = TypeVar("T")


def hypothesis_profile(environ: Mapping[str, str]) -> str:
    """``HYPOTHESIS_PROFILE`` if set; else ``ci`` where ``CI`` is (``.ci/run``
    and CI services set it, tox passes it on); else ``dev``."""
    return environ.get("HYPOTHESIS_PROFILE") or ("ci" if environ.get("CI") else "dev")


# Both sessions (tests/ and tests/postgres/) load this file before importing
# any test module, so every @settings(...) there inherits the profile.  The
# parent is Hypothesis's own default: under CI, Hypothesis has already loaded
# its built-in "ci" profile, which "dev" must not inherit from.
_default = hypothesis_settings.get_profile("default")
# Timing is never what these tests check.
hypothesis_settings.register_profile("dev", _default, deadline=None)
# The same examples on every run, so that a CI failure is the code's and not
# the seed's; printed so that it can be replayed (@reproduce_failure).
hypothesis_settings.register_profile(
    "ci", _default, deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile(hypothesis_profile(os.environ))


@pytest.fixture
def decisions() -> list[tuple[str, str, int]]:
    """The router's decisions, as ``(kind, alias, thread id)``, in order."""
    return routers.decisions


# --- health: shared by the SQLite and the PostgreSQL sessions -----------------

#: Name of the background prober's thread.
PROBER_THREAD = "multidb-health"


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a true value, and return that value;
    fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(
                f"timed out after {timeout:g}s waiting for "
                f"{what or getattr(predicate, '__name__', 'a condition')} "
                f"(last: {result!r})"
            )
        time.sleep(0.02)


@pytest.fixture(name="wait_until")
def _wait_until() -> Callable[..., Any]:
    return wait_until


def at_once(fn: Callable[[], T], threads: int) -> list[T]:
    """``fn()``'s results from ``threads`` threads that call it together."""
    barrier = threading.Barrier(threads)
    results: list[T] = []

    def call() -> None:
        barrier.wait()
        results.append(fn())

    started = [threading.Thread(target=call) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return results


def prober_threads() -> list[threading.Thread]:
    """The background prober threads alive in this process."""
    return [t for t in threading.enumerate() if t.name == PROBER_THREAD]


def stop_prober(timeout: float = 15.0) -> None:
    """Let a prober started by a test see that health checks are off, and
    wait for it to end (the test's ``override_settings`` must be over)."""
    thread = health._worker._thread
    if thread is None or not thread.is_alive():
        return
    if conf.HEALTH_CHECK_INTERVAL is not None:
        pytest.fail("a test left MULTIDB_HEALTH_CHECK_INTERVAL set: the prober runs on")
    health._worker.wake()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the health prober did not stop within {timeout:g}s")


def reset_state() -> None:
    """Put the package's process-wide state back as a test expects to find
    it: no prober thread, no probe still waiting, no health state or probe
    connection, every replica back in rotation and the rotation rebuilt, the
    settings read afresh, this context unpinned, and no recorded decisions.

    The one place that knows the package's internals well enough to reset
    them: fixtures and tests call this rather than poke them."""
    stop_prober()
    # A probe stuck on a frozen server ends once the server is thawed.
    wait_until(lambda: not health.registry._in_flight, 15, "probes still in flight")
    forget(health.registry)
    rotation.exclude(())
    rotation._invalidate()
    _clear_cache()
    groups.forget()
    pinning._scope.set(pinning._ROOT)
    routers.decisions.clear()
    multidb_routers._unmeasured_logged = False


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """Each test starts, and ends, with the state of ``reset_state``."""
    reset_state()
    yield
    reset_state()


def forget(registry: health.Registry) -> None:
    """``registry.forget()``, and close the probe connections that Django's
    ``close()`` leaves open: those to an in-memory SQLite database (Python
    3.13 warns about a sqlite3 connection garbage-collected open)."""
    wrappers = [probe.wrapper for probe in registry._connections.values()]
    registry.forget()
    close_for_real(wrappers)


def close_for_real(wrappers: list[Any]) -> None:
    for wrapper in wrappers:
        if wrapper.connection is not None:
            wrapper.connection.close()
            wrapper.connection = None


class SignalEvent(NamedTuple):
    signal: str
    alias: str
    reason: str
    #: The thread that sent it (``multidb-health`` for the background prober).
    thread: str


@pytest.fixture
def replica_signals() -> Iterator[list[SignalEvent]]:
    """Every ``replica_down``/``replica_up``/``replica_lagging`` sent during the
    test, in order."""
    events: list[SignalEvent] = []
    connected = []
    for name in ("replica_down", "replica_up", "replica_lagging"):

        def receiver(
            sender: Any, alias: str, reason: str, _name: str = name, **kwargs: Any
        ) -> None:
            events.append(
                SignalEvent(_name, alias, reason, threading.current_thread().name)
            )

        signal = getattr(signals, name)
        signal.connect(receiver, weak=False, dispatch_uid=f"tests-{name}")
        connected.append((signal, name))
    yield events
    for signal, name in connected:
        signal.disconnect(dispatch_uid=f"tests-{name}")


@pytest.fixture
def routed() -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of each ``request_routed`` sent during the test."""
    sent: list[dict[str, Any]] = []

    def receiver(sender: Any, signal: Any, **kwargs: Any) -> None:
        assert sender is PinningRouterMiddleware
        sent.append(kwargs)

    signals.request_routed.connect(receiver, weak=False, dispatch_uid="tests-routed")
    yield sent
    signals.request_routed.disconnect(dispatch_uid="tests-routed")


def tally(outcome: str, token_check: str | None, position_queries: int) -> None:
    """Count one request in ``multidb.tallies`` as the middleware counts it."""
    next(tallies.outcomes[outcome])
    if token_check is not None:
        next(tallies.token_checks[token_check])
    tallies.count_position_queries(position_queries)


@contextlib.contextmanager
def request_scope(pinned: pinning.Pin) -> Iterator[pinning.RequestState]:
    """The routing scope of one request, as the middleware opens it."""
    token = pinning.begin_request(pinned)
    try:
        request = pinning.current_request()
        assert request is not None
        yield request
    finally:
        pinning.end_request(token)


def token_for(**positions: int) -> str:
    """A token with ``positions`` (by primary alias), as after writes there."""
    token = tokens.groups_token([], list(positions), positions.get)
    assert token is not None
    return token


def respond(request: Any) -> HttpResponse:
    return HttpResponse("ok")


def run_middleware(
    method: str,
    cookie: str | None = None,
    header: str | None = None,
    after: Callable[[pinning.RequestState], Any] | None = None,
) -> tuple[pinning.RequestState, HttpResponse]:
    """One request through the middleware (``after`` runs in its view);
    the request's routing state and the response."""
    request = RequestFactory().generic(method, "/")
    if cookie is not None:
        request.COOKIES[conf.PINNING_COOKIE] = cookie
    if header is not None:
        request.META["HTTP_X_MULTIDB_TOKEN"] = header
    seen: list[pinning.RequestState] = []

    def view(request: Any) -> HttpResponse:
        state = pinning.current_request()
        assert state is not None
        seen.append(state)
        if after is not None:
            after(state)
        return respond(request)

    response = PinningRouterMiddleware(view)(request)
    return seen[0], response
