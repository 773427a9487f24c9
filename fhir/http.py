"""Per-call headers on an outbound ``requests`` session, from a provider the caller passes in.

The app sends its request id to the EHR as ``X-Request-ID`` on every FHIR and OAuth call (discovery, token,
JWKS, style, FHIR REST), so an EHR's logs and ours can be joined. This module knows nothing of the app: the
caller passes a function returning the headers for the call being made (read at send time, so one shared
session serves every request and thread). Mounted as a transport adapter, so it also applies to any
``requests.Session`` subclass (requests-oauthlib's ``OAuth2Session``) given the same adapter.

Also here: ``OutboundSession`` and its ``NoAmbientState``: one session serves every user's calls, so it keeps
no cookies an EHR sets and takes no credentials from ~/.netrc.

Every call has a deadline on the whole of it: requests' ``timeout`` bounds each socket read, so an EHR that
trickles its answer a byte at a time would hold the calling thread for as long as it trickles. Here the call's
``timeout`` is the time the whole call may take, connect, headers, body and every redirect included, and an
optional request-wide deadline (``RequestScope``) caps it further. At the deadline a watchdog shuts the
call's socket down and the call raises ``DeadlineExceeded`` (a ``requests.Timeout``). A ``Bulkhead`` bounds the
requests (pages) with calls in flight per EHR and in all: a call beyond either bound fails at once with ``EhrBusy``
(a ``requests.ConnectionError``), never sent, so one slow EHR cannot take every thread of a process.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.exceptions import SSLError as TlsSetupError

HeaderProvider = Callable[[], Mapping[str, str]]


class DeadlineExceeded(requests.Timeout):
    """The whole call (connect, headers, body, redirects) did not finish by its deadline."""


class DeadlineBeforeSend(DeadlineExceeded):
    """The deadline came before the request was written to a connection (no time left, or still connecting)."""


class EhrBusy(requests.ConnectionError):
    """The bulkhead is full for this EHR (or for all EHRs): the call was refused at once and never sent."""


# Why urllib3 gave up before a request was written: no connection (refused, unreachable, no such host), the
# connect timed out, or the TLS handshake failed. requests wraps each in a MaxRetryError (the app never retries).
_BEFORE_SENDING = (NewConnectionError, ConnectTimeoutError, TlsSetupError)


def never_sent(exc: BaseException) -> bool:
    """Whether a failed call is known never to have reached the EHR: refused by the bulkhead, out of time before it
    began, or stopped while connecting. A write that failed so is certainly not applied, and may simply be sent
    again. Anything else (a timeout after sending, a connection dropped mid-answer) may have arrived: False."""
    if isinstance(exc, EhrBusy | DeadlineBeforeSend):
        return True
    if isinstance(exc, DeadlineExceeded) or not isinstance(exc, requests.ConnectionError):
        return False
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, _BEFORE_SENDING)


def not_answering(exc: BaseException) -> str:
    """Why an EHR call failed to answer, in words a page can show: busy (the bulkhead), too slow, or the error."""
    if isinstance(exc, EhrBusy):
        return "it is still answering this app's earlier calls"
    if isinstance(exc, requests.Timeout):
        return "it did not answer in time"
    return type(exc).__name__


class RequestScope:
    """The inbound request (page) outbound calls are made for: their common deadline (time.monotonic(); None =
    none), and the one bulkhead holder all of them share (a page's parallel reads hold one slot, not one each)."""

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline


# The deadline of the call being made (set by DeadlineSession.request, so it spans every redirect hop), and the
# inbound request the call serves (set by the app around a request; None outside one).
_call_deadline: ContextVar[float | None] = ContextVar("outbound_call_deadline", default=None)
_request_scope: ContextVar[RequestScope | None] = ContextVar("outbound_request_scope", default=None)


def enter_request_scope(scope: RequestScope) -> object:
    """Make ``scope`` the request every outbound call from now on in this context serves (threads started with a
    copy of this context too); returns the token for ``exit_request_scope``."""
    return _request_scope.set(scope)


def exit_request_scope(token: object) -> None:
    _request_scope.reset(token)  # type: ignore[arg-type]


def _seconds(timeout: Any) -> float | None:
    """The whole-call budget a requests ``timeout`` gives: a number, or connect + read of a pair."""
    if isinstance(timeout, tuple):
        parts = [t for t in timeout if isinstance(t, int | float)]
        return float(sum(parts)) if parts else None
    return float(timeout) if isinstance(timeout, int | float) else None


def _deadline_for(timeout: Any) -> float | None:
    """The earliest of the call's, the request's and (when no call deadline is set yet) now + ``timeout``."""
    budget = _seconds(timeout)
    scope = _request_scope.get()
    candidates = [d for d in (_call_deadline.get(), scope.deadline if scope else None) if d is not None]
    if _call_deadline.get() is None and budget is not None:
        candidates.append(time.monotonic() + budget)
    return min(candidates) if candidates else None


class _Watch:
    """One call's watchdog: at the deadline it shuts down the socket of the connection the call uses, so a
    read blocked on a trickling EHR returns at once (every socket read restarts requests' own timeout)."""

    def __init__(self, deadline: float):
        self.lock = threading.Lock()
        self.fired = False
        self.done = False
        self.conn: Any = None  # the urllib3 connection, then its response
        _WATCHDOG.add(deadline, self)

    def watch(self, conn: Any) -> None:
        with self.lock:
            self.conn = conn
            if self.fired:
                _shut(conn)

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            _shut(self.conn)

    def disarm(self) -> None:
        with self.lock:
            self.done = True
            self.conn = None  # the entry stays queued until its deadline: it must not keep the response alive


class _Watchdog:
    """One daemon thread holds every call's deadline in a heap and fires each watch that is not disarmed when its
    deadline comes: the same as a timer thread a call, without starting a thread for every EHR call. A
    disarmed watch is dropped when it reaches the top. Started on first use in each process (a forked worker
    starts its own; the parent's thread does not survive the fork)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()  # ties on a deadline never compare two watches
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, watch: _Watch) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbound-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._cond.notify()  # a new earliest deadline: the thread is waiting for a later one

    def _due(self) -> tuple[list[_Watch], float | None]:
        """Under the lock: the watches whose deadline has come (disarmed ones dropped), and the seconds until
        the next deadline (None: none queued)."""
        now, due = time.monotonic(), []
        while self._heap and (self._heap[0][0] <= now or self._heap[0][2].done):
            _, _, watch = heapq.heappop(self._heap)
            if not watch.done:
                due.append(watch)
        return due, (self._heap[0][0] - now if self._heap else None)

    def _run(self) -> None:
        while True:
            with self._cond:
                due, wait = self._due()
                if not due:
                    self._cond.wait(wait)
                    continue
            for watch in due:  # outside the heap's lock: a call's own lock is taken to shut its socket
                watch.fire()


_WATCHDOG = _Watchdog()


def _shut(what: Any) -> None:
    """Shut down the socket under a urllib3 connection or response; nothing when there is none yet (still
    connecting: the connect timeout, capped at the time left, ends that)."""
    try:
        if hasattr(what, "shutdown") and not isinstance(what, socket.socket):
            what.shutdown()  # a urllib3 response: its socket, kept even after the connection let go of it
        elif getattr(what, "sock", None) is not None:
            what.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


_current_watch: ContextVar[_Watch | None] = ContextVar("outbound_watch", default=None)


def _watched(make_request: Callable[..., Any], conn: Any, *args, **kwargs) -> Any:
    watch = _current_watch.get()
    if watch is None:
        return make_request(conn, *args, **kwargs)
    watch.watch(conn)
    response = make_request(conn, *args, **kwargs)
    watch.watch(response)  # the connection may let go of its socket once the headers are in
    return response


class _WatchedHTTPPool(HTTPConnectionPool):
    def _make_request(self, conn, *args, **kwargs):  # noqa: ANN001 - urllib3's signature
        return _watched(super()._make_request, conn, *args, **kwargs)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _make_request(self, conn, *args, **kwargs):  # noqa: ANN001 - urllib3's signature
        return _watched(super()._make_request, conn, *args, **kwargs)


@dataclass(frozen=True)
class BulkheadLimits:
    per_ehr: int
    total: int


class Bulkhead:
    """Bounded holders of calls in flight at once, per EHR (``key_for(url)`` names the EHR a URL belongs to) and in
    all. A holder is the inbound request the call serves (RequestScope: a page's parallel reads count once), or
    the call itself outside a request. A call beyond a bound fails with ``EhrBusy`` at once: it never waits for a
    slot, so the thread is free again right away. ``key_for`` and ``limits`` are re-set by the caller at each use
    (they follow the app's config)."""

    def __init__(self, key_for: Callable[[str], str], limits: Callable[[], BulkheadLimits]):
        self.key_for = key_for
        self.limits = limits
        self._lock = threading.Lock()
        self._holders: dict[str, dict[object, int]] = {}  # EHR -> holder -> its calls in flight
        self._total = 0

    def in_flight(self, key: str) -> int:
        """Holders with calls to ``key`` in flight."""
        with self._lock:
            return len(self._holders.get(key, {}))

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        key, limits = self.key_for(url), self.limits()
        holder: object = _request_scope.get() or object()
        with self._lock:
            held = self._holders.get(key, {})
            if holder not in held:
                if len(held) >= limits.per_ehr or self._total >= limits.total:
                    raise EhrBusy("the EHR has as many calls in flight as this process allows")
                self._total += 1
            held[holder] = held.get(holder, 0) + 1
            self._holders[key] = held
        try:
            yield
        finally:
            with self._lock:
                held[holder] -= 1
                if not held[holder]:
                    del held[holder]
                    self._total -= 1
                if not held:
                    self._holders.pop(key, None)


class HeaderAdapter(HTTPAdapter):
    """The outbound transport: adds the provider's headers to each prepared request (existing ones win), holds
    each call to its deadline (body read before the call returns) and, given one, to the bulkhead."""

    def __init__(self, provider: HeaderProvider, bulkhead: Bulkhead | None = None, **kwargs):
        super().__init__(**kwargs)
        self.provider = provider
        self.bulkhead = bulkhead

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             **kwargs) -> requests.Response:
        for name, value in (self.provider() or {}).items():
            if value and name not in request.headers:
                request.headers[name] = value
        if self.bulkhead is None:
            return self._send_by_deadline(request, stream, timeout, **kwargs)
        with self.bulkhead.slot(request.url or ""):
            return self._send_by_deadline(request, stream, timeout, **kwargs)

    def _send_by_deadline(self, request: requests.PreparedRequest, stream: bool, timeout: Any,
                          **kwargs) -> requests.Response:
        deadline = _deadline_for(timeout)
        if deadline is None:
            return super().send(request, stream=stream, timeout=timeout, **kwargs)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineBeforeSend("no time left for this call", request=request)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        capped = (min(connect or left, left), min(read or left, left))
        watch = _Watch(deadline)
        token = _current_watch.set(watch)
        try:
            response = super().send(request, stream=True, timeout=capped, **kwargs)
            if not stream:
                response.content  # noqa: B018 - the body is read here, under the watchdog
        except Exception as exc:
            watch.disarm()
            if watch.fired:
                late = DeadlineBeforeSend if never_sent(exc) else DeadlineExceeded
                raise late("the call outlasted its deadline", request=request) from None
            raise
        finally:
            _current_watch.reset(token)
        watch.disarm()
        if watch.fired:  # a body without a length ends quietly when its socket is shut: never a cut answer
            response.close()
            raise DeadlineExceeded("the call outlasted its deadline", request=request)
        return response


def add_header_provider(session: requests.Session, provider: HeaderProvider,
                        bulkhead: Bulkhead | None = None) -> requests.Session:
    """Mount a HeaderAdapter for http:// and https:// on ``session``; returns the session."""
    adapter = HeaderAdapter(provider, bulkhead)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An ``auth`` that adds nothing: given, it keeps requests from filling in credentials of its own."""
    return request


class DeadlineSession:
    """Mixin for a ``requests.Session``: a call's ``timeout`` is the deadline of the whole call, redirects
    included (the hops share the deadline set when the call began)."""

    def request(self, method: str, url: str, *args, **kwargs) -> requests.Response:
        if _call_deadline.get() is not None:
            return super().request(method, url, *args, **kwargs)
        token = _call_deadline.set(_deadline_for(kwargs.get("timeout")))
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            _call_deadline.reset(token)


class NoAmbientState:
    """Mixin for a ``requests.Session`` shared by every user and launch of a process.

    - Cookies: an EHR's ``Set-Cookie`` on one user's call would otherwise be sent with every later user's calls
      to that host (a session cookie tying patients' requests together). The jar's policy accepts none.
    - ~/.netrc: requests fills in credentials from it when a call carries no ``auth`` (and again after a
      redirect), replacing the bearer token's Authorization header with the file's login for that host.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cookies = RequestsCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if not request.auth and not self.auth:
            request.auth = no_auth  # an auth is given, so requests does not look in ~/.netrc
        return super().prepare_request(request)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        # requests' own, without its ~/.netrc lookup: credentials are dropped when a redirect leaves the host.
        headers = prepared_request.headers
        if "Authorization" in headers and self.should_strip_auth(response.request.url, prepared_request.url):
            del headers["Authorization"]


class OutboundSession(DeadlineSession, NoAmbientState, requests.Session):
    """The app's outbound session class: a requests.Session keeping no cookies, reading no ~/.netrc, and
    holding each call (redirects included) to one deadline."""
