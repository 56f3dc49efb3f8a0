"""The synchronous client against a real daemon: what a user checks."""

import http.client
import os
import re
import threading
import time
import urllib.parse

import pytest

import sandboxd
from conftest import eventually, running


def test_exec_output_and_exit_codes(sb):
    r = sb.exec("python3 -c 'print(2+2)'; echo oops >&2")
    assert (r.stdout, r.stderr, r.exit_code, r.success) == ("4\n", "oops\n", 0, True)
    bad = sb.exec("bash -c 'exit 3'")
    assert (bad.exit_code, bad.success) == (3, False)
    assert sb.exec("no-such-command-xyz").exit_code == 127


def test_exec_env_cwd_stdin_and_session_state(sb):
    r = sb.exec('echo "$GREETING $(pwd)"; cat', env={"GREETING": "hi"}, cwd="/tmp", stdin="from stdin\n")
    assert r.stdout == "hi /tmp\nfrom stdin\n"
    assert sb.exec('echo "[$GREETING]"').stdout == "[]\n"
    sb.exec("export KEPT=yes; cd /usr")
    assert sb.exec('echo "$KEPT $(pwd)"').stdout == "yes /usr\n"
    sb.exec("cd /workspace")
    assert sb.exec("od -An -tx1", stdin=b"\x00\xff\x01").stdout.split() == ["00", "ff", "01"]


def test_exec_stream_order_and_callbacks(sb):
    with sb.exec_stream("echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c; bash -c 'exit 7'") as st:
        evs = list(st)
    assert [e["type"] for e in evs] == ["start", "stdout", "stderr", "stdout", "complete"]
    assert [e["data"] for e in evs[1:4]] == ["a\n", "b\n", "c\n"]
    assert evs[-1]["exitCode"] == 7

    seen = []
    r = sb.exec("for i in 1 2 3; do echo out$i; sleep 0.1; done", on_output=lambda s, d: seen.append((s, d)))
    assert r.stdout == "out1\nout2\nout3\n"
    assert "".join(d for s, d in seen if s == "stdout") == "out1\nout2\nout3\n"


def test_errors_carry_stable_codes(client, sb):
    ghost = client.sandbox(f"py-ghost-{os.getpid()}")
    with pytest.raises(sandboxd.NotFoundError) as e:
        ghost.info()
    assert (e.value.code, e.value.status) == ("SANDBOX_NOT_FOUND", 404)
    with pytest.raises(sandboxd.InvalidRequestError) as e:
        client.sandbox("Not_A_Label")
    assert e.value.code == "INVALID_SANDBOX_ID"
    with pytest.raises(sandboxd.NotFoundError) as e:
        sb.files.read("/workspace/does-not-exist.txt")
    assert e.value.code == "FILE_NOT_FOUND"
    with pytest.raises(sandboxd.NotFoundError) as e:
        sb.get_session("no-such-session")
    assert e.value.code == "SESSION_NOT_FOUND"
    with pytest.raises(sandboxd.UnauthorizedError) as e:
        sandboxd.Client(os.environ["SANDBOX_URL"], "wrong").list()
    assert e.value.code == "UNAUTHORIZED"
    with pytest.raises(sandboxd.InvalidRequestError) as e:
        sb.expose_port(80)
    assert e.value.code == "INVALID_PORT"
    with pytest.raises(sandboxd.UnavailableError):
        sandboxd.Client("http://127.0.0.1:1", "x").health()
    ctx = sb.create_code_context("python")
    with pytest.raises(sandboxd.ContextTerminatedError) as e:
        sb.run_code("import os; os._exit(1)", context=ctx)
    assert e.value.code == "CONTEXT_TERMINATED"
    with pytest.raises(sandboxd.ContextTerminatedError):
        sb.run_code("1", context=ctx, on_stdout=print)
    sb.delete_code_context(ctx)
    with pytest.raises(sandboxd.InvalidRequestError) as e:
        sb.files.git_checkout("file:///etc")
    assert e.value.code == "INVALID_GIT_URL"


def test_timeout_kills_and_keeps_the_output(sb):
    t0 = time.monotonic()
    with pytest.raises(sandboxd.TimeoutError) as e:
        sb.exec("echo before; sleep 60", timeout=1.5)
    assert e.value.code == "COMMAND_TIMEOUT"
    assert isinstance(e.value, TimeoutError)  # the builtin too
    assert e.value.result.stdout.startswith("before\n")
    assert time.monotonic() - t0 < 30
    assert sb.exec("echo still here").stdout == "still here\n"


def test_files_round_trip(sb):
    f = sb.files
    f.mkdir("/workspace/rt/sub", recursive=True)
    f.write("/workspace/rt/hello.txt", "héllo wörld\n")
    got = f.read("/workspace/rt/hello.txt")
    assert (got.content, got.encoding) == ("héllo wörld\n", "utf-8")
    blob = bytes((i * 7 + 3) % 256 for i in range(300000))
    f.write("/workspace/rt/blob.bin", blob)
    assert f.read_bytes("/workspace/rt/blob.bin") == blob
    b = f.read("/workspace/rt/blob.bin")
    assert b.is_binary and b.encoding == "base64" and b.data == blob
    f.write("/workspace/rt/gen.txt", (f"line {i}\n".encode() for i in range(100)))
    assert sb.exec("wc -l < /workspace/rt/gen.txt").stdout.strip() == "100"
    with f.read_stream("/workspace/rt/hello.txt") as st:
        evs = list(st)
    assert evs[0]["type"] == "metadata" and evs[-1]["type"] == "complete"
    assert "".join(e["data"] for e in evs if e["type"] == "chunk") == "héllo wörld\n"
    assert f.exists("/workspace/rt/hello.txt")
    f.rename("/workspace/rt/hello.txt", "/workspace/rt/renamed.txt")
    assert not f.exists("/workspace/rt/hello.txt")
    assert f.move("/workspace/rt/renamed.txt", "/workspace/rt/sub") == "/workspace/rt/sub/renamed.txt"
    names = sorted(e["relativePath"] for e in f.list("/workspace/rt", recursive=True))
    assert names == ["blob.bin", "gen.txt", "sub", "sub/renamed.txt"]
    with pytest.raises(sandboxd.SandboxError) as e:
        f.delete("/workspace/rt/sub")
    assert e.value.code == "IS_DIRECTORY"
    f.delete("/workspace/rt", recursive=True)
    assert not f.exists("/workspace/rt")


def test_watch_sees_a_change(sb):
    sb.files.mkdir("/workspace/watched", recursive=True)
    with sb.files.watch("/workspace/watched", recursive=True) as st:
        for ev in st:
            if ev["type"] == "watching":
                sb.files.write("/workspace/watched/new.txt", "x")
            if ev["type"] == "event" and ev["path"] == "/workspace/watched/new.txt":
                assert ev["eventType"] in ("create", "modify")
                break


def test_processes(sb):
    p = sb.processes.start("echo starting; sleep 0.3; echo ready; exec sleep 600", process_id="srv")
    assert p.id == "srv" and p.pid > 0
    assert p.wait_for_log("ready", timeout=30)["line"] == "ready"
    assert p.wait_for_log(re.compile(r"^sta.t"), timeout=30)["line"] == "starting"
    assert p.logs()["stdout"] == "starting\nready\n"
    assert any(q.id == "srv" and q.status == "running" for q in sb.processes.list())
    with pytest.raises(sandboxd.ConflictError) as e:
        sb.processes.start("true", process_id="srv")
    assert e.value.code == "PROCESS_EXISTS"
    with p.stream_logs() as st:
        types, out = [], ""
        for ev in st:
            types.append(ev["type"])
            if ev["type"] == "stdout":
                out += ev["data"]
                if out == "starting\nready\n":
                    p.kill("SIGKILL")
    assert types[0] == "process_info" and types[-1] == "exit"
    assert sb.processes.get("srv").status == "killed"
    assert sb.processes.get("no-such-proc") is None
    cat = sb.processes.start("cat")
    cat.write_stdin("hello ")
    cat.write_stdin(b"world\n", close=True)
    assert cat.wait(timeout=30).exit_code == 0
    assert cat.logs()["stdout"] == "hello world\n"
    done = sb.processes.start("exit 5").wait(timeout=30)
    assert (done.status, done.exit_code) == ("failed", 5)
    sb.processes.start("sleep 600")
    assert sb.processes.kill_all() >= 1


def test_code_interpreter(sb):
    ctx = sb.create_code_context("python")
    sb.run_code("import math\nradius = 5", context=ctx)
    r = sb.run_code("print('Sum:', 7 + 8)\nmath.pi * radius ** 2", context=ctx)
    assert r.stdout == ["Sum: 15"]
    assert r.text == "78.53981633974483"
    chart = sb.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()", context=ctx["id"], timeout=120)
    png = next(x for x in chart.results if x.png)
    assert png.png_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = sb.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})", context=ctx)
    assert "<table" in table.results[0].html
    bad = sb.run_code("1 / 0", context=ctx)
    assert bad.error.name == "ZeroDivisionError"
    live, results = [], []
    sb.run_code("print('live')\n40 + 2", context=ctx, on_stdout=live.append, on_result=results.append)
    assert "".join(live) == "live\n" and results[0].text == "42"
    with sb.run_code_stream("console.log('js'); 6 * 7", "javascript") as st:
        evs = list(st)
    assert [e["type"] for e in evs] == ["start", "stdout", "result", "complete"]
    assert any(c["id"] == ctx["id"] for c in sb.list_code_contexts())
    sb.delete_code_context(ctx)
    with pytest.raises(sandboxd.NotFoundError) as e:
        sb.run_code("1", context=ctx)
    assert e.value.code == "CONTEXT_NOT_FOUND"


def test_preview_url_answers(sb):
    sb.files.write("/workspace/site/index.html", "hello from the sandbox\n", create_parents=True)
    p = sb.processes.start("python3 -m http.server 8080 --bind 127.0.0.1", cwd="/workspace/site")
    p.wait_for_port(8080, http_path="/", timeout=60)
    port = sb.expose_port(8080, name="web")
    host = urllib.parse.urlsplit(port.url).netloc
    assert host.startswith(f"8080-{sb.id}-")
    assert [(x.port, x.name) for x in sb.exposed_ports()] == [(8080, "web")]
    daemon = urllib.parse.urlsplit(os.environ["SANDBOX_URL"])

    def get():
        c = http.client.HTTPConnection(daemon.hostname, daemon.port, timeout=60)
        c.request("GET", "/index.html", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode()

    assert get() == (200, "hello from the sandbox\n")
    priv = sb.expose_port(8081, public=False)
    assert priv.public is False
    link = sb.preview_link(8081, expires_in=60)
    assert "sandboxd_link=" in link["url"]
    sb.unexpose_port(8081)
    sb.unexpose_port(8080)
    assert get()[0] == 404
    p.kill()


def test_sessions_and_env(sb):
    sb.files.mkdir("/workspace/prod", recursive=True)
    s = sb.create_session("prod", env={"APP_ENV": "production"}, cwd="/workspace/prod")
    assert s.exec('echo "$APP_ENV $(pwd)"').stdout == "production /workspace/prod\n"
    assert sb.exec('echo "[$APP_ENV]"').stdout == "[]\n"
    s.files.write("rel.txt", "relative")
    assert sb.files.read("/workspace/prod/rel.txt").content == "relative"
    assert sb.get_session("prod").exec("pwd").stdout == "/workspace/prod\n"
    s.set_env_vars({"ONLY_HERE": "1"})
    assert s.exec('echo "$ONLY_HERE"').stdout == "1\n"
    p = s.processes.start('echo "$APP_ENV $ONLY_HERE $(pwd)"').wait(timeout=30)
    assert p.record["sessionId"] == "prod"
    assert p.logs()["stdout"] == "production 1 /workspace/prod\n"
    with pytest.raises(sandboxd.SessionTerminatedError) as e:
        s.exec("echo bye; exit 4")
    assert e.value.result.stdout == "bye\n"
    sb.delete_session("prod")
    with pytest.raises(sandboxd.NotFoundError):
        sb.get_session("prod")
    with pytest.raises(sandboxd.ConflictError) as e2:
        sb.create_session("default")
    assert e2.value.code == "SESSION_ALREADY_EXISTS"
    sb.set_env_vars({"SDK_SECRET": "s3cret"})
    assert sb.exec('echo "$SDK_SECRET"').stdout == "s3cret\n"
    sb.set_env_vars({"SDK_SECRET": None})
    assert sb.exec('echo "[$SDK_SECRET]"').stdout == "[]\n"


def test_closing_a_stream_kills_the_command(sb, probe):
    st = sb.exec_stream("echo started; exec sleep 311")
    for ev in st:
        if ev["type"] == "stdout":
            break
    st.close()
    eventually("sleep 311 killed", lambda: not running(probe, "sleep 31[1]"))

    # close() from another thread ends a blocked read.
    st = sb.exec_stream("echo go; exec sleep 312")
    types = []
    threading.Timer(2.0, st.close).start()
    for ev in st:
        types.append(ev["type"])
    assert types[:2] == ["start", "stdout"] and "complete" not in types
    eventually("sleep 312 killed", lambda: not running(probe, "sleep 31[2]"))


def test_options_labels_list_destroy(client):
    sid = f"py-opts-{os.getpid()}"
    s = client.sandbox(sid, labels={"sdk": "py", "team": "ml"}, env={"FROM_OPTIONS": "yes"}, limits={"memory_bytes": 256 << 20})
    assert s.exec('echo "$FROM_OPTIONS"').stdout == "yes\n"
    info = s.info()
    assert info["labels"]["team"] == "ml" and info["limits"]["memoryBytes"] == 256 << 20
    assert [x["id"] for x in client.list(labels={"team": "ml", "sdk": "py"})] == [sid]
    assert s.set_keep_alive(True)["keepAlive"] is True
    assert client.health()["status"] == "ok"
    assert any("host" in im["names"] for im in client.list_images())
    s.destroy()
    with pytest.raises(sandboxd.NotFoundError):
        client.sandbox(sid).info()


def test_snapshot_and_fork(client, sb):
    name = f"py-snap-{os.getpid()}"
    sb.exec("echo from-parent > /workspace/snap.txt")
    snap = sb.create_snapshot(name)
    assert snap["name"] == name and snap["layer"].startswith("sha256-")
    assert any(s["name"] == name for s in client.list_snapshots())
    fork = client.sandbox(f"py-fork-{os.getpid()}", from_snapshot=name)
    try:
        assert fork.exec("cat /workspace/snap.txt").stdout == "from-parent\n"
        assert fork.info()["fromSnapshot"] == name
        with pytest.raises(sandboxd.ConflictError) as e:
            client.delete_snapshot(name)
        assert e.value.code == "SNAPSHOT_IN_USE"
        with pytest.raises(sandboxd.SandboxError) as e:
            sb.create_snapshot(name + "-m", memory=True)
        assert e.value.code == "MEMORY_SNAPSHOT_UNSUPPORTED"
        with pytest.raises(sandboxd.NotFoundError):
            client.get_snapshot("no-such-snapshot")
    finally:
        fork.destroy()
    client.delete_snapshot(name)


def test_keys_tenant_client_list_pages_rotate_remove(client):
    name = f"py-key-{os.getpid()}"
    created = client.create_key(name, max_sandboxes=5)
    assert created["key"].startswith("sbx_") and created["quotas"]["maxSandboxes"] == 5
    tenant = sandboxd.Client(client.url, created["key"])
    rotated = None
    try:
        for sid in ("p1", "p2", "p3"):
            tenant.sandbox(sid, labels={"suite": "py-page"}).exec("true")
        first = tenant.list_page(labels={"suite": "py-page"}, limit=2)
        assert [s["id"] for s in first["sandboxes"]] == ["p1", "p2"] and first["nextPageToken"]
        rest = tenant.list_page(labels={"suite": "py-page"}, limit=2, page_token=first["nextPageToken"])
        assert [s["id"] for s in rest["sandboxes"]] == ["p3"] and not rest.get("nextPageToken")
        assert [s["id"] for s in tenant.list(status="running")] == ["p1", "p2", "p3"]
        assert tenant.list(labels={"suite": "none"}) == []
        mine = [k for k in client.list_keys() if k["name"] == name][0]
        assert mine["usage"]["sandboxes"] == 3
        with pytest.raises(sandboxd.SandboxError) as e:
            tenant.list_keys()
        assert e.value.code == "FORBIDDEN"
        rotated = client.rotate_key(name)
        with pytest.raises(sandboxd.UnauthorizedError):
            tenant.list()
        again = sandboxd.Client(client.url, rotated["key"])
        for sid in ("p1", "p2", "p3"):
            again.sandbox(sid).destroy()
    finally:
        client.delete_key(name)
    with pytest.raises(sandboxd.UnauthorizedError):
        sandboxd.Client(client.url, rotated["key"]).list()
