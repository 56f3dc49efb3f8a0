"""Fixtures: the daemon named by SANDBOX_URL and SANDBOX_TOKEN (e2e/sdk_test.go
starts one with the project's binaries), the SDK from this checkout's src/,
and one sandbox shared by the tests of a module."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

import sandboxd  # noqa: E402


@pytest.fixture(scope="session")
def client() -> sandboxd.Client:
    if not os.environ.get("SANDBOX_URL") or not os.environ.get("SANDBOX_TOKEN"):
        pytest.fail("SANDBOX_URL and SANDBOX_TOKEN must name a running sandboxd (see e2e/sdk_test.go)")
    return sandboxd.Client.from_env()


@pytest.fixture(scope="module")
def sb(client, request):
    name = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    s = client.sandbox(f"py-{name}-{os.getpid()}")
    s.ensure()
    yield s
    s.destroy()


@pytest.fixture(scope="module")
def probe(sb):
    """A second session: the default one is busy while a command runs in it."""
    return sb.create_session("probe")


def eventually(what, check, limit=30.0):
    """Polls until check() is true; bounds are generous for busy CI machines."""
    end = time.monotonic() + limit
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not after {limit} s")
        time.sleep(0.2)


def running(probe, pattern: str) -> bool:
    """Whether a process whose command line matches pattern runs in the sandbox."""
    return probe.exec(f"pgrep -f '{pattern}' || true").stdout.strip() != ""
