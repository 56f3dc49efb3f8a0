"""Errors: every error the daemon answers is a SandboxError whose ``code`` is
the daemon's stable code (docs/api.md). The subclass is the class of the
error, chosen from the code first and the HTTP status second, as the Go SDK's
errors.Is does, so patterns such as ``*_NOT_FOUND`` also cover codes added to
the API later."""

from __future__ import annotations

import builtins
import json
from typing import Any, Dict, Optional, Type


class SandboxError(Exception):
    """An error answered by the daemon, or a request the SDK refused to send."""

    code: str
    """The stable code, e.g. ``SANDBOX_NOT_FOUND``; empty when the body was not JSON."""
    status: int
    """The HTTP status; 0 for stream ``error`` events and checks made before sending."""
    message: str
    details: Dict[str, Any]
    """Code-specific data, e.g. the output captured before ``COMMAND_TIMEOUT``."""
    result: Any
    """For exec errors that come with output (timeout, session terminated): the partial ExecResult."""

    def __init__(self, code: str, message: str, status: int = 0, details: Optional[Dict[str, Any]] = None) -> None:
        self.code = code
        self.status = status
        self.message = message
        self.details = details or {}
        self.result = None
        if code:
            text = f"{code}: {message}"
        elif status:
            text = f"HTTP {status}: {message}"
        else:
            text = message
        super().__init__(text)


class NotFoundError(SandboxError):
    """``NOT_FOUND``, ``SANDBOX_NOT_FOUND``, ``FILE_NOT_FOUND``, any ``*_NOT_FOUND``; HTTP 404."""


class InvalidRequestError(SandboxError, ValueError):
    """``INVALID_JSON``, ``VALIDATION_FAILED``, ``REQUEST_TOO_LARGE``, any ``INVALID_*``; HTTP 400, 413, 422."""


class UnauthorizedError(SandboxError):
    """``UNAUTHORIZED``; HTTP 401."""


class ConflictError(SandboxError):
    """Any ``*_EXISTS``, ``*_CONFLICT``, ``*_ALREADY_*``; HTTP 409."""


class TimeoutError(SandboxError, builtins.TimeoutError):
    """``COMMAND_TIMEOUT``, ``PROCESS_READY_TIMEOUT``, any ``*_TIMEOUT``; HTTP 408.
    Also a builtin TimeoutError."""


class SessionTerminatedError(SandboxError):
    """``SESSION_TERMINATED``: the session's shell exited; the next call gets a fresh one."""


class ContextTerminatedError(SandboxError):
    """``CONTEXT_TERMINATED``: the code context's interpreter died."""


class ExitedBeforeReadyError(SandboxError):
    """``PROCESS_EXITED_BEFORE_READY``: a readiness wait on a process that ended first."""


class ResourceExhaustedError(SandboxError):
    """``RESOURCE_EXHAUSTED``, ``CAPACITY_EXCEEDED``, ``SESSION_BUSY``, ``CONTEXT_BUSY``; HTTP 429."""


class NotAvailableError(SandboxError):
    """``PYTHON_NOT_AVAILABLE``, ``JAVASCRIPT_NOT_AVAILABLE``, any ``*_NOT_AVAILABLE``; HTTP 501."""


class UnavailableError(SandboxError, ConnectionError):
    """``SANDBOX_UNAVAILABLE``, any ``*_UNAVAILABLE``; HTTP 502, 503, 504; a daemon that
    cannot be reached; a stream cut before its terminal event. Worth retrying later."""


_BY_CODE: Dict[str, Type[SandboxError]] = {
    "UNAUTHORIZED": UnauthorizedError,
    "SESSION_TERMINATED": SessionTerminatedError,
    "CONTEXT_TERMINATED": ContextTerminatedError,
    "PROCESS_EXITED_BEFORE_READY": ExitedBeforeReadyError,
    "INVALID_JSON": InvalidRequestError,
    "VALIDATION_FAILED": InvalidRequestError,
    "REQUEST_TOO_LARGE": InvalidRequestError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
    "CAPACITY_EXCEEDED": ResourceExhaustedError,
    "SESSION_BUSY": ResourceExhaustedError,
    "CONTEXT_BUSY": ResourceExhaustedError,
}

_BY_STATUS: Dict[int, Type[SandboxError]] = {
    400: InvalidRequestError,
    413: InvalidRequestError,
    422: InvalidRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    408: TimeoutError,
    409: ConflictError,
    429: ResourceExhaustedError,
    501: NotAvailableError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def _class_of_code(code: str) -> Optional[Type[SandboxError]]:
    if not code:
        return None
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code == "NOT_FOUND" or code.endswith("_NOT_FOUND"):
        return NotFoundError
    if code.startswith("INVALID_"):
        return InvalidRequestError
    if code.endswith("_EXISTS") or code.endswith("_CONFLICT") or "_ALREADY_" in code:
        return ConflictError
    if code == "TIMEOUT" or code.endswith("_TIMEOUT"):
        return TimeoutError
    if code.endswith("_NOT_AVAILABLE"):
        return NotAvailableError
    if code.endswith("_UNAVAILABLE"):
        return UnavailableError
    return None


def error_from_code(code: str, message: str, status: int = 0, details: Optional[Dict[str, Any]] = None) -> SandboxError:
    """The SandboxError subclass for a code and an HTTP status."""
    cls = _class_of_code(code) or _BY_STATUS.get(status) or SandboxError
    return cls(code, message, status, details)


def error_from_response(status: int, reason: str, body: bytes) -> SandboxError:
    """The error of a non-2xx answer, from its status and (bounded) body."""
    try:
        w = json.loads(body)
        if isinstance(w, dict) and isinstance(w.get("code"), str) and w["code"]:
            details = w.get("details") if isinstance(w.get("details"), dict) else {}
            return error_from_code(w["code"], str(w.get("message", "")), status, details)
    except ValueError:
        pass  # not JSON: an error page from a proxy; its first line is the message
    first = body.decode("utf-8", "replace").split("\n", 1)[0].strip()[:512] or reason
    return error_from_code("", first, status)
