"""HTTP plumbing on the standard library (http.client), and the event
streams of the daemon parsed without EventSource.

Every request gets its own connection: a stream can then be closed (which
tells the daemon to kill what it follows) without touching other calls, and
the asyncio client can cut one call's connection when its task is cancelled.
"""

from __future__ import annotations

import base64
import contextvars
import http.client
import json
import socket
import threading
import urllib.parse
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Tuple, TypeVar, Union

from .errors import SandboxError, UnavailableError, error_from_code, error_from_response

MAX_ERROR_BODY = 1 << 20
"""Error bodies are read up to this size."""

MAX_EVENT_BYTES = 48 << 20
"""Upper bound of one event (a code result carries up to 16 MiB of base64 image)."""

Query = Mapping[str, Union[str, int, bool, None, List[str]]]


class _Scope:
    """The connections one call opened, so that another thread (the asyncio
    client, on cancellation) can cut them."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._conns: List[http.client.HTTPConnection] = []
        self.aborted = False

    def add(self, conn: http.client.HTTPConnection) -> None:
        with self._mu:
            if self.aborted:
                raise UnavailableError("", "the call was cancelled")
            self._conns.append(conn)

    def abort(self) -> None:
        with self._mu:
            self.aborted = True
            conns, self._conns = self._conns, []
        for c in conns:
            _cut(c)


_scope: contextvars.ContextVar[Optional[_Scope]] = contextvars.ContextVar("sandboxd_scope", default=None)


def _cut(conn: http.client.HTTPConnection) -> None:
    """Closes a connection so that a thread blocked reading it wakes up:
    shutdown wakes a blocked recv, close alone does not on Linux."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


class Transport:
    """One daemon: its base URL and token."""

    def __init__(self, url: str, token: Optional[str], timeout: Optional[float] = None, user_agent: str = "sandboxd-python-sdk") -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"sandboxd URL {url!r}: want http:// or https://")
        self.url = url.rstrip("/")
        self._scheme = u.scheme
        self._host = u.hostname
        self._port = u.port
        self._prefix = u.path.rstrip("/")
        self._token = token or None
        self._timeout = timeout
        self._ua = user_agent

    def _connect(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: Optional[Union[bytes, Any]] = None,
        query: Optional[Query] = None,
        headers: Optional[Dict[str, str]] = None,
        accept: str = "application/json",
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends a request and returns its connection and 2xx response;
        any other answer is raised as a SandboxError."""
        target = self._prefix + path
        if query:
            pairs: List[Tuple[str, str]] = []
            for k, v in query.items():
                if v is None or v is False or v == "":
                    continue
                values: List[Any] = []
                if isinstance(v, list):
                    values.extend(v)
                else:
                    values.append(v)
                for one in values:
                    pairs.append((k, "true" if one is True else str(one)))
            if pairs:
                target += "?" + urllib.parse.urlencode(pairs)
        h = {"User-Agent": self._ua, "Accept": accept}
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        h.update(headers or {})
        data: Any = None
        if json_body is not None:
            data = json.dumps(_drop_none(json_body)).encode()
            h["Content-Type"] = "application/json"
        elif body is not None:
            data = body
            h.setdefault("Content-Type", "application/octet-stream")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                h["Transfer-Encoding"] = "chunked"
        conn = self._connect()
        scope = _scope.get()
        if scope is not None:
            scope.add(conn)
        try:
            if data is not None and "Transfer-Encoding" in h:
                conn.request(method, target, body=_chunks(data), headers=h, encode_chunked=True)
            else:
                conn.request(method, target, body=data, headers=h)
            resp = conn.getresponse()
        except SandboxError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if scope is not None and scope.aborted:
                raise UnavailableError("", "the call was cancelled") from e
            raise UnavailableError("", f"{method} {path}: cannot reach sandboxd at {self.url}: {e}") from e
        if 200 <= resp.status < 300:
            return conn, resp
        try:
            raw = resp.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            raw = b""
        conn.close()
        raise error_from_response(resp.status, resp.reason, raw)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """A JSON call: returns the parsed answer (None for 204)."""
        conn, resp = self.send(method, path, **kw)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError("", f"{method} {path}: reading the answer: {e}") from e
        finally:
            conn.close()
        if resp.status == 204 or not raw:
            return None
        return json.loads(raw)

    def stream(self, method: str, path: str, what: str, must_end: bool = True, **kw: Any) -> "EventStream":
        conn, resp = self.send(method, path, accept="text/event-stream", **kw)
        ct = resp.getheader("Content-Type", "")
        if not ct.startswith("text/event-stream"):
            conn.close()
            raise UnavailableError("", f"{method} {path}: the answer is not an event stream ({ct or 'no Content-Type'})", resp.status)
        return EventStream(conn, resp, what, must_end)


def _chunks(f: Any) -> Iterator[bytes]:
    """Reads a file-like object or iterates an iterable of bytes."""
    if hasattr(f, "read"):
        while True:
            b = f.read(1 << 20)
            if not b:
                return
            yield b
    else:
        yield from f


def _drop_none(v: Any) -> Any:
    """A body without its top-level fields left None, so the daemon applies
    its defaults. Nested values are kept as given: in ``{"env": {"K": None}}``
    the null means unset."""
    if isinstance(v, dict):
        return {k: x for k, x in v.items() if x is not None}
    return v


def read_sse(resp: Any) -> Iterator[Tuple[str, str]]:
    """Yields (event, data) of a text/event-stream body as events arrive.
    Comments are skipped; one event holds at most MAX_EVENT_BYTES."""
    event = ""
    data: List[str] = []
    size = 0
    while True:
        line = resp.readline(MAX_EVENT_BYTES + 1)
        if not line:
            return  # a last event without its blank line is dropped, as the standard says
        if len(line) > MAX_EVENT_BYTES:
            raise error_from_code("EVENT_TOO_LARGE", f"a line is longer than {MAX_EVENT_BYTES} bytes")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        # The daemon ends lines with LF; a lone CR inside a line is not a line end here.
        if text == "":
            if data:
                yield (event or "message", "\n".join(data))
            event, data, size = "", [], 0
            continue
        if text.startswith(":"):
            continue
        field, _, value = text.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            size += len(value) + 1
            if size > MAX_EVENT_BYTES:
                raise error_from_code("EVENT_TOO_LARGE", f"an event is larger than {MAX_EVENT_BYTES} bytes")
            data.append(value)


T = TypeVar("T")


def is_terminal(event_name: str) -> bool:
    """The one end-of-stream rule of every stream of the API: an event named
    ``complete``, ``exit`` or ``error`` ends its stream, whatever it carries,
    and nothing follows it. Events that report a failure without ending the
    stream have other names (a code run's ``execution_error``)."""
    return event_name in ("complete", "exit", "error")


class EventStream(Generic[T]):
    """A live stream of the daemon's events (dicts with a ``type``), yielded
    as they arrive. Iteration ends after the stream's terminal event
    (is_terminal); a
    stream cut before it raises UnavailableError, never a made-up completion.
    ``close()`` (or leaving a ``with`` block) closes the connection, and the
    daemon then stops what the stream follows (a command is killed, a code
    run interrupted). close() may be called from another thread."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, what: str, must_end: bool = True) -> None:
        self._conn = conn
        self._resp = resp
        self._what = what
        # must_end: a stream that stops before its terminal event is an
        # error (the lifecycle stream has none).
        self._must_end = must_end
        self._closed = False
        self._done = False
        self._it = read_sse(resp)

    def __iter__(self) -> "EventStream[T]":
        return self

    def __next__(self) -> Dict[str, Any]:
        if self._done or self._closed:
            raise StopIteration
        try:
            while True:
                try:
                    name, data = next(self._it)
                except StopIteration:
                    self._finish()
                    if self._closed:
                        raise
                    if self._must_end:
                        raise UnavailableError("", f"{self._what} ended before its terminal event") from None
                    raise
                try:
                    ev = json.loads(data)
                except ValueError as e:
                    raise UnavailableError("", f"{self._what}: an event is not JSON") from e
                if not isinstance(ev, dict):
                    continue
                ev.setdefault("type", name)
                if is_terminal(name):
                    self._finish()
                return ev
        except SandboxError:
            self._finish()
            if self._closed:
                raise StopIteration from None
            raise
        except Exception as e:
            # A close() from another thread makes http.client fail in
            # several ways (OSError, ValueError, even AttributeError):
            # after close, all of them mean the stream ended.
            self._finish()
            if self._closed:
                raise StopIteration from None
            if isinstance(e, (OSError, http.client.HTTPException, ValueError)):
                raise UnavailableError("", f"{self._what} broke: {e}") from e
            raise

    def _finish(self) -> None:
        self._done = True
        self._conn.close()

    def close(self) -> None:
        """Ends the stream and closes its connection. Idempotent."""
        self._closed = True
        _cut(self._conn)

    def __enter__(self) -> "EventStream[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def chunk_text(data: Optional[str], encoding: Optional[str]) -> str:
    """The text of a wire chunk; base64 chunks are decoded (invalid UTF-8 becomes U+FFFD)."""
    if not data:
        return ""
    if encoding == "base64":
        return base64.b64decode(data).decode("utf-8", "replace")
    return data
