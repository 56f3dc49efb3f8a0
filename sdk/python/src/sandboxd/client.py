"""The synchronous client: ``Client`` (one daemon) and ``Sandbox`` (a handle
to one sandbox) with ``sb.files``, ``sb.processes``, sessions, ports and the
code interpreter. A handle does no I/O until its first call, which creates
the sandbox (with the handle's options, if any)."""

from __future__ import annotations

import base64
import math
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Mapping, Optional, Union

from ._http import EventStream, Transport, b64, chunk_text
from .errors import NotFoundError, SandboxError, UnavailableError, error_from_code

DEFAULT_URL = "http://127.0.0.1:7070"

_SANDBOX_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_COMMAND = 1 << 20
_MAX_STDIN = 8 << 20
_MAX_TIMEOUT_S = 24 * 3600
_MAX_BUFFERED = 16 << 20

Event = Dict[str, Any]
OutputCallback = Callable[[str, str], None]


def _ms(seconds: Optional[float], name: str = "timeout") -> Optional[int]:
    """Seconds (the Python convention) to the API's whole milliseconds, rounded up."""
    if seconds is None:
        return None
    if not (0 <= seconds <= _MAX_TIMEOUT_S):
        raise error_from_code("VALIDATION_FAILED", f"{name} must be 0 to {_MAX_TIMEOUT_S} seconds")
    return int(math.ceil(seconds * 1000))


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


@dataclass
class ExecResult:
    """The result of ``exec``. A non-zero exit code is not an error."""

    stdout: str
    stderr: str
    exit_code: int
    success: bool
    command: str = ""
    session_id: str = "default"
    duration: float = 0.0
    """Run time in seconds."""
    truncated: bool = False

    @classmethod
    def _from_wire(cls, w: Mapping[str, Any], command: str = "", session: str = "default") -> "ExecResult":
        enc = w.get("encoding")
        code = w.get("exitCode")
        exit_code = code if isinstance(code, int) else -1
        return cls(
            stdout=chunk_text(w.get("stdout", ""), enc),
            stderr=chunk_text(w.get("stderr", ""), enc),
            exit_code=exit_code,
            success=bool(w.get("success", exit_code == 0)),
            command=w.get("command", command),
            session_id=w.get("sessionId", session),
            duration=w.get("duration", 0) / 1000,
            truncated=bool(w.get("truncated", False)),
        )


@dataclass
class Result:
    """One rich output of run_code: every representation the value offers.
    ``png`` and ``jpeg`` are base64 (``png_bytes()`` decodes)."""

    text: Optional[str] = None
    html: Optional[str] = None
    markdown: Optional[str] = None
    latex: Optional[str] = None
    json: Any = None
    javascript: Optional[str] = None
    svg: Optional[str] = None
    png: Optional[str] = None
    jpeg: Optional[str] = None
    is_main_result: bool = False

    @classmethod
    def _from_wire(cls, w: Mapping[str, Any]) -> "Result":
        return cls(
            text=w.get("text"), html=w.get("html"), markdown=w.get("markdown"), latex=w.get("latex"), json=w.get("json"),
            javascript=w.get("javascript"), svg=w.get("svg"), png=w.get("png"), jpeg=w.get("jpeg"),
            is_main_result=bool(w.get("isMainResult", False)),
        )

    def png_bytes(self) -> Optional[bytes]:
        return base64.b64decode(self.png) if self.png else None


@dataclass
class ExecutionError:
    """The code's own error (ZeroDivisionError ...)."""

    name: str
    value: str
    traceback: List[str] = field(default_factory=list)


@dataclass
class Execution:
    """The result of run_code: logs, rich results, and the code's own error."""

    code: str
    context_id: str
    language: str
    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)
    results: List[Result] = field(default_factory=list)
    error: Optional[ExecutionError] = None
    execution_count: int = 0
    duration: float = 0.0
    truncated: bool = False

    @property
    def text(self) -> Optional[str]:
        """The text of the main result (the value of the last expression), if any."""
        for r in self.results:
            if r.is_main_result:
                return r.text
        return None

    @classmethod
    def _from_wire(cls, w: Mapping[str, Any]) -> "Execution":
        err = w.get("error")
        logs = w.get("logs") or {}
        return cls(
            code=w.get("code", ""), context_id=w.get("contextId", ""), language=w.get("language", ""),
            stdout=list(logs.get("stdout") or []), stderr=list(logs.get("stderr") or []),
            results=[Result._from_wire(r) for r in w.get("results") or []],
            error=ExecutionError(err["name"], err.get("value", ""), list(err.get("traceback") or [])) if err else None,
            execution_count=w.get("executionCount", 0), duration=w.get("duration", 0) / 1000, truncated=bool(w.get("truncated")),
        )


@dataclass
class FileContent:
    """A file read through the JSON route: ``content`` as text, or base64 when ``encoding`` is base64."""

    path: str
    content: str
    encoding: str
    mime_type: str
    size: int
    is_binary: bool

    @property
    def data(self) -> bytes:
        """The file's bytes."""
        return base64.b64decode(self.content) if self.encoding == "base64" else self.content.encode()


@dataclass
class ExposedPort:
    port: int
    url: str
    """The preview URL."""
    token: str
    public: bool
    name: Optional[str] = None

    @classmethod
    def _from_wire(cls, w: Mapping[str, Any]) -> "ExposedPort":
        return cls(port=w["port"], url=w["url"], token=w.get("token", ""), public=bool(w.get("public")), name=w.get("name"))


class Client:
    """One sandboxd daemon. ``Client(url=..., token=...)`` or ``Client.from_env()``."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, timeout: Optional[float] = None) -> None:
        """``timeout`` bounds each socket operation in seconds (default none:
        streams last as long as their command)."""
        self._t = Transport(url or DEFAULT_URL, token, timeout)

    @classmethod
    def from_env(cls, **kw: Any) -> "Client":
        """A client of ``$SANDBOX_URL`` (default http://127.0.0.1:7070) with ``$SANDBOX_TOKEN``."""
        return cls(kw.pop("url", None) or os.environ.get("SANDBOX_URL"), kw.pop("token", None) or os.environ.get("SANDBOX_TOKEN"), **kw)

    @property
    def url(self) -> str:
        return self._t.url

    def sandbox(self, sandbox_id: str, **options: Any) -> "Sandbox":
        """A handle to sandbox ``sandbox_id``; no I/O. ``options`` (image, env,
        labels, limits, network, instance_type, sleep_after, keep_alive,
        runtime, from_snapshot) apply
        when the first call creates it."""
        return Sandbox(self._t, sandbox_id, options or None)

    def health(self) -> Dict[str, Any]:
        return self._t.request("GET", "/v1/health")

    def list(self, *, labels: Optional[Mapping[str, str]] = None, status: Optional[Union[str, Iterable[str]]] = None) -> List[Dict[str, Any]]:
        """Every sandbox the key sees, ordered by ID, every page; ``labels``
        (all must match) and ``status`` (one, by the daemon; several, in the
        client) filter them."""
        one = status if isinstance(status, str) else None
        many = None if status is None or one is not None else set(status)
        out: List[Dict[str, Any]] = []
        token: Optional[str] = None
        while True:
            page = self.list_page(labels=labels, status=one, page_token=token)
            out.extend(s for s in page["sandboxes"] if many is None or s.get("status") in many)
            token = page.get("nextPageToken")
            if not token:
                return out

    def list_page(
        self,
        *,
        labels: Optional[Mapping[str, str]] = None,
        status: Optional[str] = None,
        limit: Optional[int] = None,
        page_token: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> Dict[str, Any]:
        """One page of sandboxes: ``{"sandboxes": [...], "nextPageToken": ...}``
        (docs/tenants.md); ``limit`` 1 to 1000; pass ``nextPageToken`` as
        ``page_token`` for the next page; ``tenant`` (admins) one tenant's."""
        q = {"label": [f"{k}={v}" for k, v in (labels or {}).items()], "status": status, "limit": limit, "pageToken": page_token, "tenant": tenant}
        page = self._t.request("GET", "/v1/sandboxes", query=q)
        page["sandboxes"] = page.get("sandboxes") or []
        return page

    def create_key(
        self,
        name: str,
        *,
        max_sandboxes: Optional[int] = None,
        max_running: Optional[int] = None,
        max_memory: Optional[int] = None,
        admin: bool = False,
    ) -> Dict[str, Any]:
        """Creates API key ``name`` (admin keys only): ``{"name", "key", "quotas"}``,
        the key shown once (docs/tenants.md). ``max_memory`` in bytes."""
        quotas = {k: v for k, v in (("maxSandboxes", max_sandboxes), ("maxRunning", max_running), ("maxMemory", max_memory)) if v}
        body: Dict[str, Any] = {"name": name, "quotas": quotas}
        if admin:
            body["admin"] = True
        return self._t.request("POST", "/v1/keys", json_body=body)

    def list_keys(self) -> List[Dict[str, Any]]:
        """The API keys with quotas and usage, never secrets (admin keys only)."""
        return self._t.request("GET", "/v1/keys").get("keys") or []

    def delete_key(self, name: str) -> None:
        """Removes a key: it fails from the next request on; its sandboxes stay."""
        self._t.request("DELETE", "/v1/keys/" + _q(name))

    def rotate_key(self, name: str) -> Dict[str, Any]:
        """A new secret for key ``name``; the old one fails from the next request on."""
        return self._t.request("POST", f"/v1/keys/{_q(name)}/rotate")

    def list_backups(self) -> List[Dict[str, Any]]:
        """The caller's backups that have not expired, oldest first."""
        return self._t.request("GET", "/v1/backups").get("backups") or []

    def get_backup(self, backup_id: str) -> Dict[str, Any]:
        """One backup; NotFoundError (BACKUP_NOT_FOUND) if absent."""
        return self._t.request("GET", "/v1/backups/" + _q(backup_id))

    def delete_backup(self, backup_id: str) -> None:
        """Removes a backup; sandboxes it was restored into keep their copy."""
        self._t.request("DELETE", "/v1/backups/" + _q(backup_id))

    def list_snapshots(self) -> List[Dict[str, Any]]:
        """Every snapshot, by name (docs/snapshots.md)."""
        return self._t.request("GET", "/v1/snapshots").get("snapshots") or []

    def get_snapshot(self, name: str) -> Dict[str, Any]:
        """One snapshot; NotFoundError (SNAPSHOT_NOT_FOUND) if absent."""
        return self._t.request("GET", "/v1/snapshots/" + _q(name))

    def delete_snapshot(self, name: str) -> None:
        """Removes a snapshot; ConflictError (SNAPSHOT_IN_USE) while a sandbox was created from it."""
        self._t.request("DELETE", "/v1/snapshots/" + _q(name))

    def list_images(self) -> List[Dict[str, Any]]:
        return self._t.request("GET", "/v1/images").get("images") or []

    def events(self, sandbox: Optional[str] = None) -> EventStream:
        """Lifecycle events (open-ended: close the stream when done)."""
        return self._t.stream("GET", "/v1/events", "lifecycle events", False, query={"sandbox": sandbox})


_OPTION_NAMES = {"instance_type": "instanceType", "sleep_after": "sleepAfter", "keep_alive": "keepAlive", "from_snapshot": "fromSnapshot"}


def _sandbox_options(o: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in o.items():
        if k == "sleep_after" and v is not None:
            v = _ms(v, "sleep_after")
        if k == "limits" and isinstance(v, Mapping):
            v = {{"memory_bytes": "memoryBytes", "milli_cpu": "milliCpu", "disk_bytes": "diskBytes"}.get(a, a): b for a, b in v.items()}
        if k == "network" and isinstance(v, Mapping):
            v = {{"allow_cidrs": "allowCidrs", "allow_host_cidrs": "allowHostCidrs"}.get(a, a): b for a, b in v.items()}
        out[_OPTION_NAMES.get(k, k)] = v
    return out


class Sandbox:
    """A sandbox. Get one with ``client.sandbox(id)``. Thread-safe."""

    def __init__(self, t: Transport, sandbox_id: str, options: Optional[Mapping[str, Any]], session: Optional[str] = None, shared: Optional[Dict[str, Any]] = None) -> None:
        if not isinstance(sandbox_id, str) or not _SANDBOX_ID.match(sandbox_id):
            raise error_from_code("INVALID_SANDBOX_ID", f"sandbox ID {sandbox_id!r}: want 1-63 of a-z, 0-9 and -, not starting or ending with -")
        self._t = t
        self.id = sandbox_id
        self.session_id = session
        self._shared = shared if shared is not None else {"options": _sandbox_options(options) if options else None, "ready": False, "mu": threading.Lock()}
        self.files = Files(self)
        self.processes = Processes(self)

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r}" + (f", session={self.session_id!r})" if self.session_id else ")")

    # ---- plumbing

    def _path(self, suffix: str) -> str:
        return f"/v1/sandboxes/{self.id}{suffix}"

    def _prepare(self) -> None:
        sh = self._shared
        if not sh["options"] or sh["ready"]:
            return
        with sh["mu"]:
            if not sh["ready"]:
                self._t.request("PUT", self._path(""), json_body=sh["options"])
                sh["ready"] = True

    def _call(self, method: str, suffix: str, **kw: Any) -> Any:
        self._prepare()
        return self._t.request(method, self._path(suffix), **kw)

    def _stream(self, method: str, suffix: str, what: str, **kw: Any) -> EventStream:
        self._prepare()
        return self._t.stream(method, self._path(suffix), what, **kw)

    def _session(self, explicit: Optional[str]) -> Optional[str]:
        return explicit if explicit is not None else self.session_id

    # ---- lifecycle

    def ensure(self) -> Dict[str, Any]:
        """Creates the sandbox with the handle's options if absent; ``created`` says whether this call did."""
        info = self._t.request("PUT", self._path(""), json_body=self._shared["options"] or {})
        self._shared["ready"] = True
        return info

    def info(self) -> Dict[str, Any]:
        """The sandbox's record; NotFoundError for an unknown ID on a handle without options."""
        return self._call("GET", "")

    def destroy(self) -> None:
        """Deletes the sandbox, disk included. A later call on the handle creates a fresh one."""
        self._t.request("DELETE", self._path(""))
        self._shared["ready"] = False

    def set_keep_alive(self, keep_alive: bool) -> Dict[str, Any]:
        return self._call("PATCH", "", json_body={"keepAlive": keep_alive})

    def update(self, *, sleep_after: Optional[float] = None, keep_alive: Optional[bool] = None) -> Dict[str, Any]:
        return self._call("PATCH", "", json_body={"sleepAfter": _ms(sleep_after, "sleep_after"), "keepAlive": keep_alive})

    def stop(self) -> Dict[str, Any]:
        return self._call("POST", "/stop")

    def start(self) -> Dict[str, Any]:
        return self._call("POST", "/start")

    def restart(self) -> Dict[str, Any]:
        return self._call("POST", "/restart")

    def renew(self) -> Dict[str, Any]:
        return self._call("POST", "/renew")

    def network(self) -> Dict[str, Any]:
        """The sandbox's egress policy and what it refused (docs/network.md):
        ``{"policy": {...}, "denied": N, "lastDenied": [...]}``."""
        return self._call("GET", "/network")

    def set_network(
        self,
        *,
        allow_domains: Optional[List[str]] = None,
        deny_domains: Optional[List[str]] = None,
        allow_cidrs: Optional[List[str]] = None,
        deny_cidrs: Optional[List[str]] = None,
        default: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Replaces the whole egress policy (absent lists are empty), at once
        if the sandbox runs; INVALID_NETWORK_POLICY names the entry in
        ``details["entry"]``."""
        policy = {
            "allowDomains": allow_domains or [],
            "denyDomains": deny_domains or [],
            "allowCidrs": allow_cidrs or [],
            "denyCidrs": deny_cidrs or [],
        }
        if default is not None:
            policy["default"] = default
        return self._call("PUT", "/network", json_body=policy)

    def create_backup(self, dir: str, *, name: Optional[str] = None, ttl: Optional[str] = None) -> Dict[str, Any]:
        """Backs up the directory ``dir`` (absolute); ``ttl`` is a duration
        such as "1h" (default 72h)."""
        return self._call("POST", "/backups", json_body={"dir": dir, "name": name, "ttl": ttl})

    def restore_backup(self, backup: str, dir: Optional[str] = None) -> Dict[str, Any]:
        """Mounts the backup copy-on-write at ``dir`` (default: its own
        directory); NotFoundError (BACKUP_NOT_FOUND) if absent."""
        return self._call("POST", "/backups/restore", json_body={"backup": backup, "dir": dir})

    def create_snapshot(self, name: str, *, memory: bool = False, filesystem_only: bool = False) -> Dict[str, Any]:
        """Snapshots the sandbox as ``name``: its files, and on gVisor its
        memory and processes too. ``memory=True`` requires memory
        (MEMORY_SNAPSHOT_UNSUPPORTED where the runtime cannot keep it);
        ``filesystem_only=True`` keeps the files alone."""
        return self._call("POST", "/snapshots", json_body={"name": name, "memory": memory or None,
                                                           "filesystemOnly": filesystem_only or None})

    def pause(self, *, filesystem_only: bool = False) -> Dict[str, Any]:
        """Pauses the sandbox: MEMORY_SNAPSHOT_UNSUPPORTED where memory cannot
        be kept; with ``filesystem_only``, as stop."""
        return self._call("POST", "/pause", json_body={"filesystemOnly": filesystem_only or None})

    def resume(self) -> Dict[str, Any]:
        return self._call("POST", "/resume")

    # ---- commands

    def _exec_body(self, command: str, env: Optional[Mapping[str, str]], cwd: Optional[str], timeout: Optional[float], stdin: Optional[Union[str, bytes]], session: Optional[str]) -> Dict[str, Any]:
        if not isinstance(command, str) or not command.strip():
            raise error_from_code("VALIDATION_FAILED", "command is empty")
        if len(command.encode()) > _MAX_COMMAND:
            raise error_from_code("REQUEST_TOO_LARGE", "command is over 1 MiB")
        body: Dict[str, Any] = {"command": command, "sessionId": self._session(session), "env": dict(env) if env else None, "cwd": cwd, "timeout": _ms(timeout)}
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
            if len(data) > _MAX_STDIN:
                raise error_from_code("REQUEST_TOO_LARGE", "stdin is over 8 MiB")
            body["stdin"], body["stdinEncoding"] = b64(data), "base64"
        return body

    def exec(
        self,
        command: str,
        *,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Optional[Union[str, bytes]] = None,
        session: Optional[str] = None,
        on_output: Optional[OutputCallback] = None,
    ) -> ExecResult:
        """Runs one shell command line in the session's persistent bash and
        waits. ``timeout`` is in seconds; past it the command's process tree
        is killed and TimeoutError (``COMMAND_TIMEOUT``) is raised, with the
        output so far in ``err.result``. ``on_output(stream, text)`` streams
        the output as it arrives."""
        body = self._exec_body(command, env, cwd, timeout, stdin, session)
        sid = body.get("sessionId") or "default"
        try:
            if on_output is not None:
                with self._stream("POST", "/exec/stream", "exec stream", json_body=body) as st:
                    return _collect_exec(st, command, sid, on_output)
            return ExecResult._from_wire(self._call("POST", "/exec", json_body=body), command, sid)
        except SandboxError as e:
            if e.result is None and isinstance(e.details.get("stdout"), str):
                e.result = ExecResult._from_wire({"success": False, "exitCode": e.details.get("exitCode", -1), **e.details}, command, sid)
            raise

    def exec_stream(self, command: str, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None, timeout: Optional[float] = None, stdin: Optional[Union[str, bytes]] = None, session: Optional[str] = None) -> EventStream:
        """Runs a command and streams its events: ``start``, ``stdout``/``stderr``
        (``data``), then exactly one ``complete`` (``exitCode``) or ``error``
        (``code``, ``message``). Closing the stream kills the command."""
        return self._stream("POST", "/exec/stream", "exec stream", json_body=self._exec_body(command, env, cwd, timeout, stdin, session))

    # ---- sessions and environment

    def create_session(self, id: Optional[str] = None, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None, command_timeout: Optional[float] = None, user: Optional[str] = None) -> "Sandbox":
        """Creates a session; returns a handle whose calls run in it."""
        info = self._call("POST", "/sessions", json_body={"id": id, "env": dict(env) if env else None, "cwd": cwd, "commandTimeout": _ms(command_timeout, "command_timeout"), "user": user})
        return self._in_session(info["id"])

    def get_session(self, id: str) -> "Sandbox":
        """A handle to an existing session; NotFoundError (SESSION_NOT_FOUND) if there is none."""
        info = self._call("GET", f"/sessions/{_q(id)}")
        return self._in_session(info["id"])

    def session(self, id: str) -> "Sandbox":
        """A handle to session ``id`` without I/O."""
        return self._in_session(id)

    def _in_session(self, sid: str) -> "Sandbox":
        return Sandbox(self._t, self.id, None, sid, self._shared)

    def list_sessions(self) -> List[Dict[str, Any]]:
        return self._call("GET", "/sessions").get("sessions") or []

    def delete_session(self, id: str) -> None:
        self._call("DELETE", f"/sessions/{_q(id)}")

    def set_env_vars(self, env: Mapping[str, Optional[str]]) -> None:
        """Sets variables (None unsets): sandbox-level, or session-level on a session handle."""
        suffix = f"/sessions/{_q(self.session_id)}/env" if self.session_id else "/env"
        self._call("POST", suffix, json_body={"env": dict(env)})

    # ---- ports

    def expose_port(self, port: int, *, name: Optional[str] = None, token: Optional[str] = None, public: Optional[bool] = None) -> ExposedPort:
        """Exposes a port; ``.url`` is its preview URL."""
        return ExposedPort._from_wire(self._call("POST", "/ports", json_body={"port": port, "name": name, "token": token, "public": public}))

    def unexpose_port(self, port: int) -> None:
        self._call("DELETE", f"/ports/{int(port)}")

    def exposed_ports(self) -> List[ExposedPort]:
        return [ExposedPort._from_wire(p) for p in self._call("GET", "/ports").get("ports") or []]

    def preview_link(self, port: int, expires_in: Optional[float] = None) -> Dict[str, Any]:
        """A signed, expiring link to an exposed (private) port; ``expires_in`` in seconds."""
        return self._call("POST", f"/ports/{int(port)}/links", json_body={"expiresIn": _ms(expires_in, "expires_in")})

    # ---- code interpreter

    def create_code_context(self, language: str = "python", *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        return self._call("POST", "/code/contexts", json_body={"language": language, "cwd": cwd, "env": dict(env) if env else None})

    def list_code_contexts(self) -> List[Dict[str, Any]]:
        return self._call("GET", "/code/contexts").get("contexts") or []

    def delete_code_context(self, context: Union[str, Mapping[str, Any]]) -> None:
        cid = context if isinstance(context, str) else context["id"]
        self._call("DELETE", f"/code/contexts/{_q(cid)}")

    def _run_body(self, code: str, language: Optional[str], context: Optional[Union[str, Mapping[str, Any]]], timeout: Optional[float]) -> Dict[str, Any]:
        if not isinstance(code, str) or not code.strip():
            raise error_from_code("VALIDATION_FAILED", "code is empty")
        cid = context if isinstance(context, str) or context is None else context["id"]
        return {"code": code, "contextId": cid, "language": language, "timeout": _ms(timeout)}

    def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        *,
        context: Optional[Union[str, Mapping[str, Any]]] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        on_result: Optional[Callable[[Result], None]] = None,
        on_error: Optional[Callable[[ExecutionError], None]] = None,
    ) -> Execution:
        """Runs code in a persistent interpreter (``python`` by default,
        ``javascript``, ``typescript``); ``context`` is a context or its ID
        (default: the language's default context). Results carry ``png``,
        ``html``, ``text`` ...; the code's own exception is ``.error``. With
        callbacks the run is streamed to them as it happens."""
        body = self._run_body(code, language, context, timeout)
        if not (on_stdout or on_stderr or on_result or on_error):
            return Execution._from_wire(self._call("POST", "/code/run", json_body=body))
        with self._stream("POST", "/code/run/stream", "code stream", json_body=body) as st:
            return _collect_code(st, code, language or "python", on_stdout, on_stderr, on_result, on_error)

    def run_code_stream(self, code: str, language: Optional[str] = None, *, context: Optional[Union[str, Mapping[str, Any]]] = None, timeout: Optional[float] = None) -> EventStream:
        """Runs code and streams its events: ``start``, ``stdout``, ``stderr``, ``result``, ``execution_error`` (the code's own error), then exactly one ``complete`` or ``error`` (an API error with its ``code``)."""
        return self._stream("POST", "/code/run/stream", "code stream", json_body=self._run_body(code, language, context, timeout))

    # ---- terminals

    def list_terminals(self) -> List[Dict[str, Any]]:
        return self._call("GET", "/terminals").get("terminals") or []

    def close_terminal(self, terminal_id: str) -> None:
        self._call("DELETE", f"/terminals/{_q(terminal_id)}")


class Files:
    """``sb.files``: read, write and manage files in the sandbox. Relative
    paths resolve against the session's working directory."""

    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb

    def _body(self, **kw: Any) -> Dict[str, Any]:
        kw["sessionId"] = self._sb._session(kw.pop("session", None))
        return kw

    def _raw_headers(self, session: Optional[str]) -> Dict[str, str]:
        sid = self._sb._session(session)
        return {"X-Sandbox-Session": sid} if sid else {}

    def write(self, path: str, content: Union[str, bytes, BinaryIO, Iterable[bytes]], *, create_parents: bool = False, mode: Optional[str] = None, encoding: Optional[str] = None, session: Optional[str] = None) -> Dict[str, Any]:
        """Writes a file. A str goes through the JSON route (≤ 16 MiB;
        ``encoding="base64"`` for base64 text); bytes, files and iterables of
        bytes are streamed through the raw route (no cap but the disk)."""
        if isinstance(content, str):
            return self._sb._call("POST", "/files/write", json_body=self._body(path=path, content=content, encoding=encoding, createParents=create_parents or None, mode=mode, session=session))
        return self._sb._call(
            "PUT", "/files/raw", body=bytes(content) if isinstance(content, (bytes, bytearray, memoryview)) else content,
            query={"path": path, "createParents": create_parents, "mode": mode}, headers=self._raw_headers(session),
        )

    def read(self, path: str, *, encoding: Optional[str] = None, session: Optional[str] = None) -> FileContent:
        """Reads a whole file (≤ 16 MiB); binary files come base64 (``.data`` gives the bytes)."""
        w = self._sb._call("POST", "/files/read", json_body=self._body(path=path, encoding=encoding, session=session))
        return FileContent(w["path"], w["content"], w["encoding"], w.get("mimeType", ""), w.get("size", 0), bool(w.get("isBinary")))

    def read_bytes(self, path: str, *, session: Optional[str] = None) -> bytes:
        """A file's bytes through the raw route (any size)."""
        with self.open(path, session=session) as f:
            return f.read()

    def open(self, path: str, *, session: Optional[str] = None) -> "RawFile":
        """A file-like object reading the file's bytes as they stream (close it)."""
        self._sb._prepare()
        conn, resp = self._sb._t.send("GET", self._sb._path("/files/raw"), query={"path": path}, headers=self._raw_headers(session), accept="*/*")
        return RawFile(conn, resp)

    def read_stream(self, path: str, *, session: Optional[str] = None) -> EventStream:
        """A file as events: ``metadata``, ``chunk``s, then ``complete`` or ``error``."""
        return self._sb._stream("POST", "/files/read/stream", "file stream", json_body=self._body(path=path, session=session))

    def mkdir(self, path: str, *, recursive: bool = False, mode: Optional[str] = None, session: Optional[str] = None) -> None:
        self._sb._call("POST", "/files/mkdir", json_body=self._body(path=path, recursive=recursive or None, mode=mode, session=session))

    def delete(self, path: str, *, recursive: bool = False, session: Optional[str] = None) -> None:
        self._sb._call("POST", "/files/delete", json_body=self._body(path=path, recursive=recursive or None, session=session))

    def rename(self, old_path: str, new_path: str, *, overwrite: bool = False, session: Optional[str] = None) -> None:
        self._sb._call("POST", "/files/rename", json_body=self._body(oldPath=old_path, newPath=new_path, overwrite=overwrite or None, session=session))

    def move(self, source: str, destination: str, *, overwrite: bool = False, session: Optional[str] = None) -> str:
        """Moves into ``destination`` when it is a directory, like mv; returns the final path."""
        return self._sb._call("POST", "/files/move", json_body=self._body(sourcePath=source, destinationPath=destination, overwrite=overwrite or None, session=session))["path"]

    def list(self, path: str, *, recursive: bool = False, include_hidden: bool = False, session: Optional[str] = None) -> List[Dict[str, Any]]:
        """The entries (name, absolutePath, relativePath, type, size, mode ...)."""
        return self._sb._call("POST", "/files/list", json_body=self._body(path=path, recursive=recursive or None, includeHidden=include_hidden or None, session=session)).get("files") or []

    def exists(self, path: str, *, session: Optional[str] = None) -> bool:
        return bool(self._sb._call("POST", "/files/exists", json_body=self._body(path=path, session=session)).get("exists"))

    def stat(self, path: str, *, session: Optional[str] = None) -> Dict[str, Any]:
        return self._sb._call("POST", "/files/stat", json_body=self._body(path=path, session=session))

    def watch(self, path: str, *, recursive: bool = False, include: Optional[List[str]] = None, exclude: Optional[List[str]] = None, session: Optional[str] = None) -> EventStream:
        """``watching`` once the watch is in place, then one ``event`` per change, until closed."""
        return self._sb._stream("POST", "/files/watch", "watch", json_body=self._body(path=path, recursive=recursive or None, include=include, exclude=exclude, session=session))

    def git_checkout(self, repo_url: str, *, branch: Optional[str] = None, target_dir: Optional[str] = None, depth: Optional[int] = None, timeout: Optional[float] = None, session: Optional[str] = None) -> Dict[str, Any]:
        return self._sb._call("POST", "/git/checkout", json_body=self._body(repoUrl=repo_url, branch=branch, targetDir=target_dir, depth=depth, timeout=_ms(timeout), session=session))


class RawFile:
    """A file's bytes as they stream from the sandbox; a context manager."""

    def __init__(self, conn: Any, resp: Any) -> None:
        self._conn, self._resp = conn, resp

    def read(self, n: int = -1) -> bytes:
        return self._resp.read() if n < 0 else self._resp.read(n)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "RawFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Process:
    """A background process: its record as of the call that returned it
    (``id``, ``pid``, ``status``, ``exit_code`` ...) and methods bound to it."""

    def __init__(self, sb: Sandbox, w: Mapping[str, Any]) -> None:
        self._sb = sb
        self._set(w)

    def _set(self, w: Mapping[str, Any]) -> None:
        self.record: Dict[str, Any] = dict(w)
        self.id: str = w["id"]
        self.pid: int = w.get("pid", 0)
        self.command: str = w.get("command", "")
        self.status: str = w.get("status", "")
        self.exit_code: Optional[int] = w.get("exitCode")
        self.status_reason: Optional[str] = w.get("statusReason")

    def __repr__(self) -> str:
        return f"Process({self.id!r}, pid={self.pid}, status={self.status!r})"

    def _p(self, suffix: str = "") -> str:
        return f"/processes/{_q(self.id)}{suffix}"

    def refresh(self) -> "Process":
        self._set(self._sb._call("GET", self._p()))
        return self

    def kill(self, signal: Optional[str] = None, *, grace_period: Optional[float] = None) -> "Process":
        """Signals the whole tree (default SIGTERM, SIGKILL after the grace period, in seconds)."""
        self._set(self._sb._call("POST", self._p("/kill"), json_body={"signal": signal, "gracePeriod": _ms(grace_period, "grace_period")}))
        return self

    def logs(self) -> Dict[str, Any]:
        """``{"stdout", "stderr", "truncated"}`` so far."""
        w = self._sb._call("GET", self._p("/logs"))
        return {"stdout": chunk_text(w.get("stdout"), w.get("encoding")), "stderr": chunk_text(w.get("stderr"), w.get("encoding")), "truncated": bool(w.get("truncated"))}

    def stream_logs(self) -> EventStream:
        """``process_info``, the output so far, live output, then ``exit``."""
        return self._sb._stream("GET", self._p("/logs/stream"), "process log stream")

    def wait_for_log(self, pattern: Union[str, "re.Pattern[str]"], *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits until a line of output contains ``pattern`` (a compiled regex: matches it, RE2 syntax)."""
        regex = isinstance(pattern, re.Pattern)
        text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        return self._sb._call("POST", self._p("/wait/log"), json_body={"pattern": text, "regex": regex or None, "timeout": _ms(timeout)})

    def wait_for_port(self, port: int, *, http_path: Optional[str] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits until the port accepts connections (``http_path``: answers HTTP 2xx/3xx there)."""
        body = {"port": port, "mode": "http" if http_path else None, "path": http_path, "timeout": _ms(timeout)}
        return self._sb._call("POST", self._p("/wait/port"), json_body=body)

    def wait(self, timeout: Optional[float] = None) -> "Process":
        """Waits until the process ends; updates and returns self."""
        self._set(self._sb._call("POST", self._p("/wait/exit"), json_body={"timeout": _ms(timeout)}))
        return self

    def write_stdin(self, data: Union[str, bytes], *, close: bool = False) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._sb._call("POST", self._p("/stdin"), json_body={"data": b64(raw), "encoding": "base64", "close": close or None})


class Processes:
    """``sb.processes``: background processes."""

    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb

    def start(self, command: str, *, process_id: Optional[str] = None, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None, timeout: Optional[float] = None, user: Optional[str] = None, auto_cleanup: bool = False, session: Optional[str] = None) -> Process:
        """Starts ``command`` (``bash -c``) in the background; returns at once."""
        if not isinstance(command, str) or not command.strip():
            raise error_from_code("VALIDATION_FAILED", "command is empty")
        body = {"command": command, "processId": process_id, "env": dict(env) if env else None, "cwd": cwd, "timeout": _ms(timeout), "user": user, "autoCleanup": auto_cleanup or None, "sessionId": self._sb._session(session)}
        return Process(self._sb, self._sb._call("POST", "/processes", json_body=body))

    def list(self, status: Optional[str] = None) -> List[Process]:
        return [Process(self._sb, p) for p in self._sb._call("GET", "/processes", query={"status": status}).get("processes") or []]

    def get(self, process_id: str) -> Optional[Process]:
        """The process, or None if there is none."""
        try:
            return Process(self._sb, self._sb._call("GET", f"/processes/{_q(process_id)}"))
        except NotFoundError as e:
            if e.code == "PROCESS_NOT_FOUND":
                return None
            raise

    def kill(self, process_id: str, signal: Optional[str] = None) -> Process:
        return Process(self._sb, {"id": process_id}).kill(signal)

    def kill_all(self, signal: Optional[str] = None) -> int:
        """Kills every running process; returns how many."""
        return self._sb._call("DELETE", "/processes", json_body={"signal": signal})["killed"]

    def logs(self, process_id: str) -> Dict[str, Any]:
        return Process(self._sb, {"id": process_id}).logs()

    def stream_logs(self, process_id: str) -> EventStream:
        return Process(self._sb, {"id": process_id}).stream_logs()


# ---- helpers


class _Capped:
    def __init__(self) -> None:
        self.parts: List[str] = []
        self.size = 0
        self.truncated = False

    def add(self, s: str) -> None:
        room = _MAX_BUFFERED - self.size
        if len(s) > room:
            s, self.truncated = s[: max(room, 0)], True
        if s:
            self.parts.append(s)
            self.size += len(s)

    def text(self) -> str:
        return "".join(self.parts)


def _collect_exec(st: EventStream, command: str, sid: str, on_output: Optional[OutputCallback]) -> ExecResult:
    out, err = _Capped(), _Capped()

    def partial(code: int, duration: float = 0) -> ExecResult:
        return ExecResult(out.text(), err.text(), code, code == 0, command, sid, duration, out.truncated or err.truncated)

    try:
        for ev in st:
            t = ev.get("type")
            if t == "start":
                sid = ev.get("sessionId", sid)
            elif t in ("stdout", "stderr"):
                text = chunk_text(ev.get("data"), ev.get("encoding"))
                (out if t == "stdout" else err).add(text)
                if on_output:
                    on_output(t, text)
            elif t == "complete":
                if not isinstance(ev.get("exitCode"), int):
                    raise UnavailableError("", "exec stream completed without an exit code")
                return partial(ev["exitCode"], ev.get("duration", 0) / 1000)
            elif t == "error":
                raise error_from_code(ev.get("code", ""), ev.get("message", "exec failed"))
    except SandboxError as e:
        e.result = partial(-1)
        raise
    raise UnavailableError("", "exec stream ended before its terminal event")


def _lines(s: str) -> List[str]:
    if not s:
        return []
    lines = s.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _collect_code(st: EventStream, code: str, language: str, on_stdout: Any, on_stderr: Any, on_result: Any, on_error: Any) -> Execution:
    res = Execution(code=code, context_id="", language=language)
    out: List[str] = []
    err: List[str] = []
    for ev in st:
        t = ev.get("type")
        if t == "start":
            res.context_id = ev.get("contextId", "")
            res.language = ev.get("language", language)
        elif t in ("stdout", "stderr"):
            text = chunk_text(ev.get("data"), ev.get("encoding"))
            (out if t == "stdout" else err).append(text)
            cb = on_stdout if t == "stdout" else on_stderr
            if cb:
                cb(text)
        elif t == "result" and ev.get("result"):
            r = Result._from_wire(ev["result"])
            res.results.append(r)
            if on_result:
                on_result(r)
        elif t == "error":
            raise error_from_code(ev.get("code", ""), ev.get("message", "code run failed"))
        elif t == "execution_error":
            e = ev.get("error") or {}
            res.error = ExecutionError(e.get("name", ""), e.get("value", ""), list(e.get("traceback") or []))
            if on_error:
                on_error(res.error)
        elif t == "complete":
            res.execution_count = ev.get("executionCount", 0)
            res.duration = ev.get("duration", 0) / 1000
            res.truncated = bool(ev.get("truncated"))
            res.stdout, res.stderr = _lines("".join(out)), _lines("".join(err))
            return res
    raise UnavailableError("", "code stream ended before its terminal event")
