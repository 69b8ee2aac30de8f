"""``PinningRouterMiddleware`` through Django's test clients and by hand.

django-multidb-router 0.11's middleware is a sync-only ``MiddlewareMixin``:
under ASGI it runs ``process_request`` in a worker thread, so the pin it sets
never reaches an async view; it leaves the thread pinned after a pinned
request; and a GET that writes gets no cookie.  Tests that 0.11 would also
pass (cookie attributes, the hand-driven API) say so: they guard the
drop-in contract.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, AsyncRequestFactory, Client, RequestFactory

from multidb import pinning
from multidb.conf import conf
from multidb.middleware import READ_ONLY_METHODS, PinningRouterMiddleware
from multidb.pinning import this_thread_is_pinned
from tests.app.models import Item

REPLICAS = {"replica1", "replica2"}
COOKIE = "multidb_pin_writes"

db = pytest.mark.django_db(transaction=True, databases="__all__")


def assert_unpinned_outside_requests() -> None:
    assert not this_thread_is_pinned()
    assert pinning._scope.get() is pinning._ROOT


def assert_reads_replica(dbs: list[str]) -> None:
    assert len(set(dbs)) == 1 and dbs[0] in REPLICAS, dbs


# --- sync and async capable, without thread hops ------------------------------


def test_middleware_wrapping_an_async_handler_is_a_coroutine_function():
    async def async_get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    def sync_get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert PinningRouterMiddleware.sync_capable is True
    assert PinningRouterMiddleware.async_capable is True
    assert iscoroutinefunction(PinningRouterMiddleware(async_get_response))
    assert not iscoroutinefunction(PinningRouterMiddleware(sync_get_response))


@pytest.mark.asyncio
async def test_middleware_runs_an_async_view_on_the_calling_thread_pinned():
    """0.11 pins in a worker thread (MiddlewareMixin's sync_to_async hop)."""
    seen = {}

    async def view(request: HttpRequest) -> HttpResponse:
        seen["thread"] = threading.get_ident()
        seen["db"] = Item.objects.all().db
        return HttpResponse()

    middleware = PinningRouterMiddleware(view)
    request = AsyncRequestFactory().get("/", headers={"cookie": f"{COOKIE}=y"})
    response = await middleware(request)
    assert response.status_code == 200
    assert seen == {"thread": threading.get_ident(), "db": "default"}
    assert_unpinned_outside_requests()


@pytest.mark.asyncio
async def test_async_stack_runs_the_async_view_on_the_event_loop_thread():
    client = AsyncClient()
    client.cookies[COOKIE] = "y"
    body = (await client.get("/async-thread-info/")).json()
    assert body == {"pinned": True, "thread": threading.get_ident(), "in_request": True}
    assert_unpinned_outside_requests()


# --- the cookie ---------------------------------------------------------------


def fetch(
    client_class: type[Client] | type[AsyncClient],
    method: str,
    path: str,
    **kwargs: object,
) -> HttpResponse:
    """One request with either client, from a sync test (the async one runs on
    an event loop in another thread, as ``async_to_sync`` does it)."""
    client = client_class(**kwargs)
    if client_class is AsyncClient:

        async def request() -> HttpResponse:
            # Django 4.2's AsyncClient methods are not coroutine functions.
            return await getattr(client, method)(path)  # type: ignore[no-any-return]

        return async_to_sync(request)()
    return getattr(client, method)(path)


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_post_sets_the_cookie_with_the_configured_attributes(client_class, settings):
    """0.11 sets the same cookie; under AsyncClient its async view reads a replica."""
    settings.MULTIDB_PINNING_COOKIE = "pin"
    settings.MULTIDB_PINNING_SECONDS = 42
    settings.MULTIDB_PINNING_COOKIE_SECURE = True
    settings.MULTIDB_PINNING_COOKIE_HTTPONLY = True
    settings.MULTIDB_PINNING_COOKIE_SAMESITE = "Strict"
    response = fetch(client_class, "post", "/async-thread-info/")
    assert response.json()["pinned"] is True
    morsel = response.cookies["pin"]
    assert morsel.value == "y"
    assert morsel["max-age"] == 42
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert COOKIE not in response.cookies


def test_cookie_attributes_default_as_in_0_11():
    """Regression guard: the defaults are 0.11's."""
    response = Client().post("/read/")
    morsel = response.cookies[COOKIE]
    assert morsel["max-age"] == 15
    assert morsel["samesite"] == "Lax"
    assert not morsel["secure"]
    assert not morsel["httponly"]


@pytest.mark.parametrize("method", sorted(READ_ONLY_METHODS))
def test_read_only_methods_that_do_not_write_set_no_cookie_and_read_replicas(method):
    response = Client().generic(method, "/read-many/")
    assert response.status_code == 200
    assert COOKIE not in response.cookies
    if method != "HEAD":
        assert_reads_replica(response.json()["dbs"])


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_pin_the_request_and_set_the_cookie(method):
    response = Client().generic(method, "/read-many/")
    assert response.json()["dbs"] == ["default"] * 5
    assert response.cookies[COOKIE].value == "y"
    assert_unpinned_outside_requests()


@db
@pytest.mark.parametrize(
    "route", ["/write-then-read/", "/get-or-create-then-read/", "/save-then-read/"]
)
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_get_that_writes_sets_the_cookie_and_pins_the_rest(route, client_class):
    """0.11 sets no cookie on a GET that writes, and keeps reading replicas."""
    response = fetch(client_class, "get", route)
    assert response.status_code == 200
    body = response.json()
    assert body["before"] in REPLICAS
    assert body["after"] == "default"
    assert response.cookies[COOKIE].value == "y"
    assert response.cookies[COOKIE]["max-age"] == conf.PINNING_SECONDS
    assert_unpinned_outside_requests()


def test_db_write_view_sets_the_cookie():
    response = Client().get("/decorated-write/")
    assert response.json() == {"db": "default"}
    assert COOKIE in response.cookies


def test_marked_response_sets_the_cookie_but_does_not_pin_its_own_request():
    response = Client().get("/marked-write/")
    body = response.json()
    assert body["pinned"] is False
    assert_reads_replica(body["dbs"])
    assert response.cookies[COOKIE].value == "y"


def test_the_cookie_pins_the_next_request_of_the_same_client():
    client = Client()
    assert_reads_replica(client.get("/read-many/").json()["dbs"])
    client.post("/read-many/")
    body = client.get("/read-many/").json()
    assert body == {**body, "pinned": True, "dbs": ["default"] * 5}
    assert COOKIE not in client.get("/read-many/").cookies  # a read does not renew


# --- any cookie value pins, and nothing 500s ----------------------------------


def _as_wsgi(text: str) -> str:
    """How a WSGI server hands a header to Django: its UTF-8 bytes as latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


FIXED_VALUES = ["y", "", "garbage;;==\"'\\", "\x00\x7f", "ünïcødé ☃ 🎉", "x" * 4000]


@pytest.mark.parametrize("value", FIXED_VALUES, ids=range(len(FIXED_VALUES)))
def test_any_cookie_value_pins_a_get(value):
    response = Client().get("/read-many/", HTTP_COOKIE=_as_wsgi(f"{COOKIE}={value}"))
    assert response.status_code == 200
    assert response.json()["dbs"] == ["default"] * 5
    assert COOKIE not in response.cookies


@pytest.mark.parametrize("value", FIXED_VALUES, ids=range(len(FIXED_VALUES)))
@pytest.mark.asyncio
async def test_any_cookie_value_pins_an_async_get(value):
    client = AsyncClient()
    # The test client sends cookies as ASCII: give it the UTF-8 bytes.
    client.cookies[COOKIE] = value.encode("utf-8").decode("latin-1")
    response = await client.get("/async-read-many/")
    assert response.status_code == 200
    assert response.json()["dbs"] == ["default"] * 5


# --- the Cookie header is parsed only when it may hold the pin cookie --------


def _cookies_parsed_in_view(request: HttpRequest) -> list[bool]:
    """Whether ``request.COOKIES`` was parsed when the view ran."""
    seen: list[bool] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append("COOKIES" in request.__dict__)
        return HttpResponse()

    PinningRouterMiddleware(view)(request)
    return seen


@pytest.mark.parametrize("header", [None, "sessionid=abc; csrftoken=x"])
def test_a_request_without_the_pin_cookie_leaves_its_cookies_unparsed(header):
    extra = {} if header is None else {"HTTP_COOKIE": header}
    request = RequestFactory().get("/", **extra)
    assert _cookies_parsed_in_view(request) == [False]
    # Parsed when somebody reads them, as before.
    cookies = request.COOKIES
    assert cookies == ({} if header is None else {"sessionid": "abc", "csrftoken": "x"})


@pytest.mark.asyncio
async def test_an_async_request_without_the_pin_cookie_leaves_its_cookies_unparsed():
    request = AsyncRequestFactory().get("/", headers={"Cookie": "sessionid=abc"})
    seen: list[bool] = []

    async def view(request: HttpRequest) -> HttpResponse:
        seen.append("COOKIES" in request.__dict__)
        return HttpResponse()

    await PinningRouterMiddleware(view)(request)
    assert seen == [False]
    assert "sessionid" in request.COOKIES  # parsed when read, as before


def _pinned_in_view(request: HttpRequest) -> bool:
    """Whether the view ran pinned, through the middleware."""
    pinned: list[bool] = []
    middleware = PinningRouterMiddleware(
        lambda request: pinned.append(this_thread_is_pinned()) or HttpResponse()
    )
    middleware(request)
    (answer,) = pinned
    return answer


@pytest.mark.parametrize(
    "header", [f"{COOKIE}=y", f"a=1; {COOKIE}=y; b=2", f"a=1;{COOKIE}=y"]
)
def test_the_pin_cookie_among_other_cookies_pins_the_request(header):
    assert _pinned_in_view(RequestFactory().get("/", HTTP_COOKIE=header))


@pytest.mark.parametrize("header", [f"other={COOKIE}", f"x{COOKIE}=y; {COOKIE}x=y"])
def test_the_pin_cookies_name_elsewhere_in_the_header_pins_nothing(header):
    assert not _pinned_in_view(RequestFactory().get("/", HTTP_COOKIE=header))


def test_cookies_set_on_the_request_before_the_middleware_count():
    """As 0.11's tests do: ``request.COOKIES[...] = ...`` on a built request."""
    request = RequestFactory().get("/")
    request.COOKIES[COOKIE] = "y"
    assert _pinned_in_view(request)


def test_a_subclass_process_response_is_called_for_each_request():
    class Stamping(PinningRouterMiddleware):
        def process_response(
            self, request: HttpRequest, response: HttpResponse
        ) -> HttpResponse:
            response = super().process_response(request, response)  # type: ignore[assignment]
            response["X-Stamped"] = "yes"
            return response

    response = Stamping(lambda request: HttpResponse())(RequestFactory().post("/"))
    assert response["X-Stamped"] == "yes"
    assert COOKIE in response.cookies


# --- the request's context is reset after the response ------------------------


def test_a_pinned_request_leaves_the_calling_context_unpinned():
    """0.11 leaves the thread pinned after a pinned request."""
    client = Client()
    client.cookies[COOKIE] = "y"
    assert client.get("/read-many/").json()["pinned"] is True
    assert_unpinned_outside_requests()
    assert Client().post("/thread-info/").json()["pinned"] is True
    assert_unpinned_outside_requests()


@db
def test_a_request_that_wrote_leaves_the_calling_context_unpinned():
    assert Client().get("/write-then-read/").json()["after"] == "default"
    assert_unpinned_outside_requests()


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_a_view_that_raises_gets_a_500_and_leaves_the_context_unpinned(client_class):
    response = fetch(
        client_class, "get", "/pin-then-fail/", raise_request_exception=False
    )
    assert response.status_code == 500
    assert COOKIE not in response.cookies
    assert_unpinned_outside_requests()


def test_middleware_resets_the_context_when_the_sync_view_raises():
    def view(request: HttpRequest) -> HttpResponse:
        pinning.pin_this_thread()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PinningRouterMiddleware(view)(RequestFactory().post("/"))
    assert_unpinned_outside_requests()


@pytest.mark.asyncio
async def test_middleware_resets_the_context_when_the_async_view_raises():
    async def view(request: HttpRequest) -> HttpResponse:
        pinning.pin_this_thread()
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await PinningRouterMiddleware(view)(AsyncRequestFactory().post("/"))
    assert_unpinned_outside_requests()


def test_middleware_keeps_an_outer_block_after_the_request():
    with pinning.use_primary_db:
        outer = pinning._scope.get()
        response = Client().get("/read-many/")
        assert pinning._scope.get() is outer
    # The request starts a fresh scope: an outer block does not pin it.
    assert_reads_replica(response.json()["dbs"])


# --- the hand-driven 0.11 API -------------------------------------------------


def test_process_request_and_process_response_can_be_called_by_hand():
    """Regression guard for code that drives the middleware as 0.11 allowed."""
    middleware = PinningRouterMiddleware(lambda request: HttpResponse())
    factory = RequestFactory()

    get = factory.get("/")
    assert middleware.process_request(get) is None
    assert not this_thread_is_pinned()
    response = middleware.process_response(get, HttpResponse())
    assert COOKIE not in response.cookies

    pinned_get = factory.get("/")
    pinned_get.COOKIES[COOKIE] = "y"
    middleware.process_request(pinned_get)
    assert this_thread_is_pinned()

    post = factory.post("/")
    middleware.process_request(post)
    assert this_thread_is_pinned()
    response = middleware.process_response(post, HttpResponse())
    assert response.cookies[COOKIE]["max-age"] == 15

    marked = HttpResponse()
    marked._db_write = True  # type: ignore[attr-defined]
    assert COOKIE in middleware.process_response(get, marked).cookies


def test_process_response_without_process_request_sets_the_cookie_on_post():
    middleware = PinningRouterMiddleware(lambda request: HttpResponse())
    assert pinning.current_request() is None
    response = middleware.process_response(RequestFactory().post("/"), HttpResponse())
    assert COOKIE in response.cookies
    get_response = middleware.process_response(
        RequestFactory().get("/"), HttpResponse()
    )
    assert COOKIE not in get_response.cookies


def test_module_helpers_read_the_settings_live(settings):
    """Regression guard: 0.11's helper functions still exist and follow settings."""
    from multidb import middleware

    assert middleware.pinning_cookie() == COOKIE
    assert middleware.pinning_seconds() == 15
    settings.MULTIDB_PINNING_COOKIE = "pin"
    settings.MULTIDB_PINNING_SECONDS = "7"
    settings.MULTIDB_PINNING_COOKIE_SECURE = True
    settings.MULTIDB_PINNING_COOKIE_HTTPONLY = True
    settings.MULTIDB_PINNING_COOKIE_SAMESITE = None
    assert middleware.pinning_cookie() == "pin"
    assert middleware.pinning_seconds() == 7
    assert middleware.pinning_cookie_secure() is True
    assert middleware.pinning_cookie_httponly() is True
    assert middleware.pinning_cookie_samesite() is None
