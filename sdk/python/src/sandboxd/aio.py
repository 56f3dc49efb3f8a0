"""The asyncio client: the same surface as the synchronous one, awaited.

    from sandboxd import AsyncClient
    client = AsyncClient.from_env()
    sb = client.sandbox("user-123")
    res = await sb.exec("python3 -c 'print(2+2)'")
    async for ev in await sb.exec_stream("make"):
        ...

The standard library has no asyncio HTTP client, so each call runs the
synchronous client's call in a worker thread (asyncio.to_thread). Cancelling
the awaiting task cuts the call's connection at once (socket shutdown), so
the thread ends and the daemon sees the disconnect: a cancelled exec or
stream has its command killed, as with the synchronous client's close().
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any, AsyncIterator, Callable, Dict, Optional

from . import _http
from ._http import EventStream, _Scope
from .client import Client, Files, Process, Processes, Sandbox


async def _run(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Runs fn in a thread under a scope that a cancellation cuts."""
    scope = _Scope()
    ctx = contextvars.copy_context()
    ctx.run(_http._scope.set, scope)
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, lambda: ctx.run(fn, *args, **kw))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        scope.abort()
        # The thread wakes on the cut connection; wait for it so nothing outlives the call.
        try:
            await fut
        except BaseException:
            pass
        raise


def _wrap(v: Any) -> Any:
    if isinstance(v, EventStream):
        return AsyncEventStream(v)
    if isinstance(v, Sandbox):
        return AsyncSandbox(v)
    if isinstance(v, Process):
        return _Proxy(v)
    if isinstance(v, list) and v and isinstance(v[0], Process):
        return [_Proxy(p) for p in v]
    return v


class _Proxy:
    """Wraps a synchronous object: its methods become coroutines (run in a
    thread, cancellable), its plain attributes are read as they are."""

    _sync: Any

    def __init__(self, sync: Any) -> None:
        object.__setattr__(self, "_sync", sync)

    def __getattr__(self, name: str) -> Any:
        v = getattr(self._sync, name)
        if isinstance(v, (Files, Processes)):
            return _Proxy(v)
        if not callable(v) or name.startswith("_"):
            return v

        @functools.wraps(v)
        async def call(*args: Any, **kw: Any) -> Any:
            return _wrap(await _run(v, *args, **kw))

        return call

    def __repr__(self) -> str:
        return f"async {self._sync!r}"


class AsyncEventStream:
    """An EventStream read with ``async for``; ``await close()`` (or
    ``async with``) ends it and closes its connection."""

    def __init__(self, sync: EventStream) -> None:
        self._sync = sync

    def __aiter__(self) -> AsyncIterator[Dict[str, Any]]:
        return self

    async def __anext__(self) -> Dict[str, Any]:
        sentinel = object()
        try:
            ev: Any = await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, next, self._sync, sentinel))
        except asyncio.CancelledError:
            self._sync.close()
            raise
        if ev is sentinel:
            raise StopAsyncIteration
        return ev  # type: ignore[no-any-return]

    async def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        self._sync.close()

    async def __aenter__(self) -> "AsyncEventStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._sync.close()


class AsyncSandbox(_Proxy):
    """A sandbox handle whose methods are coroutines; ``sb.files`` and
    ``sb.processes`` likewise. ``id`` and ``session_id`` read without I/O."""

    @property
    def id(self) -> str:
        return self._sync.id

    @property
    def files(self) -> Any:
        return _Proxy(self._sync.files)

    @property
    def processes(self) -> Any:
        return _Proxy(self._sync.processes)

    def session(self, id: str) -> "AsyncSandbox":
        return AsyncSandbox(self._sync.session(id))


class AsyncClient(_Proxy):
    """One sandboxd daemon, for asyncio code."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, timeout: Optional[float] = None) -> None:
        super().__init__(Client(url, token, timeout=timeout))

    @classmethod
    def from_env(cls, **kw: Any) -> "AsyncClient":
        c = cls.__new__(cls)
        _Proxy.__init__(c, Client.from_env(**kw))
        return c

    @property
    def url(self) -> str:
        return self._sync.url

    def sandbox(self, sandbox_id: str, **options: Any) -> AsyncSandbox:
        """A handle; no I/O."""
        return AsyncSandbox(self._sync.sandbox(sandbox_id, **options))
