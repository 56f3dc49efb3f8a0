"""The asyncio client against a real daemon: the same calls awaited, streams
read with ``async for``, and cancellation that reaches the sandbox."""

import asyncio
import os

import pytest

import sandboxd
from conftest import eventually, running


@pytest.fixture(scope="module")
def asb(sb):
    """The module's sandbox through the asyncio client."""
    return sandboxd.AsyncClient.from_env().sandbox(sb.id)


def test_async_exec_files_code(asb):
    async def main():
        r = await asb.exec("echo hi; echo err >&2; bash -c 'exit 2'")
        assert (r.stdout, r.stderr, r.exit_code) == ("hi\n", "err\n", 2)
        await asb.files.write("/workspace/a.txt", "async text")
        assert (await asb.files.read("/workspace/a.txt")).content == "async text"
        assert await asb.files.exists("/workspace/a.txt")
        res = await asb.run_code("21 * 2")
        assert res.text == "42"
        # Calls run in parallel, each on its own connection and session.
        s1 = await asb.create_session("a1")
        s2 = await asb.create_session("a2")
        out = await asyncio.gather(s1.exec("sleep 1; echo one"), s2.exec("sleep 1; echo two"))
        assert [o.stdout for o in out] == ["one\n", "two\n"]
        with pytest.raises(sandboxd.NotFoundError) as e:
            await asb.files.read("/workspace/missing")
        assert e.value.code == "FILE_NOT_FOUND"

    asyncio.run(main())


def test_async_streams_and_processes(asb):
    async def main():
        types = []
        async with await asb.exec_stream("echo a; sleep 0.2; echo b") as st:
            async for ev in st:
                types.append(ev["type"])
        assert types == ["start", "stdout", "stdout", "complete"]
        p = await asb.processes.start("echo up; exec sleep 600")
        assert (await p.wait_for_log("up", timeout=30))["line"] == "up"
        await p.kill("SIGKILL")
        assert p.status == "killed"

    asyncio.run(main())


def test_async_cancellation_kills_the_command(asb, probe):
    async def main():
        task = asyncio.ensure_future(asb.exec("exec sleep 321"))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, eventually, "sleep 321 started", lambda: running(probe, "sleep 32[1]"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def follow():
            async for _ in await asb.exec_stream("echo go; exec sleep 322"):
                pass

        t2 = asyncio.ensure_future(follow())
        await asyncio.get_running_loop().run_in_executor(None, eventually, "sleep 322 started", lambda: running(probe, "sleep 32[2]"))
        t2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t2

        # wait_for's timeout cancels the same way.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asb.exec("exec sleep 323"), timeout=3)

    asyncio.run(main())
    for n in "123":
        eventually(f"sleep 32{n} killed", lambda: not running(probe, f"sleep 32[{n}]"))


def test_async_client_lists(client):
    async def main():
        c = sandboxd.AsyncClient(os.environ["SANDBOX_URL"], os.environ["SANDBOX_TOKEN"])
        assert (await c.health())["status"] == "ok"
        assert isinstance(await c.list(), list)

    asyncio.run(main())
