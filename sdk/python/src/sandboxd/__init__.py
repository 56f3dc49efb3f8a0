"""sandboxd: the Python client of sandboxd, which runs untrusted code in real
OCI containers on your own Linux hosts. Standard library only.

    from sandboxd import Client
    client = Client.from_env()                 # SANDBOX_URL, SANDBOX_TOKEN
    sb = client.sandbox("user-123")            # no I/O; the first call creates it
    res = sb.exec("python3 -c 'print(2+2)'")
    print(res.stdout, res.exit_code)           # "4\\n" 0

``AsyncClient`` offers the same surface for asyncio.
"""

from ._http import EventStream
from .aio import AsyncClient, AsyncEventStream, AsyncSandbox
from .client import (
    DEFAULT_URL,
    Client,
    ExecResult,
    Execution,
    ExecutionError,
    ExposedPort,
    FileContent,
    Files,
    Process,
    Processes,
    Result,
    Sandbox,
)
from .errors import (
    ConflictError,
    ContextTerminatedError,
    ExitedBeforeReadyError,
    InvalidRequestError,
    NotAvailableError,
    NotFoundError,
    ResourceExhaustedError,
    SandboxError,
    SessionTerminatedError,
    TimeoutError,
    UnauthorizedError,
    UnavailableError,
)

__all__ = [
    "DEFAULT_URL", "Client", "AsyncClient", "Sandbox", "AsyncSandbox", "Files", "Processes", "Process",
    "ExecResult", "Execution", "ExecutionError", "ExposedPort", "FileContent", "Result",
    "EventStream", "AsyncEventStream",
    "SandboxError", "NotFoundError", "InvalidRequestError", "UnauthorizedError", "ConflictError", "TimeoutError",
    "SessionTerminatedError", "ContextTerminatedError", "ExitedBeforeReadyError", "ResourceExhaustedError",
    "NotAvailableError", "UnavailableError",
]
__version__ = "0.1.0"
