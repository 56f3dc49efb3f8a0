// @sandboxd/sdk against a real daemon: SANDBOX_URL and SANDBOX_TOKEN name
// it (e2e/sdk_test.go starts one with the project's binaries). Every test
// asserts what a user checks: output, exit codes, event order, error codes,
// bytes that come back, previews that answer, commands that die when
// aborted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {
  SandboxClient,
  getSandbox,
  parseSSEStream,
  base64ToBytes,
  SandboxError,
  NotFoundError,
  InvalidRequestError,
  UnauthorizedError,
  ConflictError,
  TimeoutError,
  SessionTerminatedError,
  ContextTerminatedError,
  UnavailableError,
} from "../dist/index.js";

if (!process.env.SANDBOX_URL || !process.env.SANDBOX_TOKEN) {
  throw new Error("SANDBOX_URL and SANDBOX_TOKEN must name a running sandboxd (see e2e/sdk_test.go)");
}

const client = SandboxClient.fromEnv();
const suffix = `${process.pid}`;
let sb;
let probe; // a second session: the default one is busy while a command runs in it

/** Whether a process whose command line matches pattern runs in the sandbox. */
async function isRunning(pattern) {
  return (await probe.exec(`pgrep -f '${pattern}' || true`)).stdout.trim() !== "";
}

before(async () => {
  sb = getSandbox(client, `ts-main-${suffix}`);
  await sb.ensure();
  probe = await sb.createSession({ id: "probe" });
});

after(async () => {
  for (const s of await client.listSandboxes({ labels: { sdk: "ts" } })) await client.sandbox(s.id).destroy().catch(() => {});
  await sb.destroy().catch(() => {});
});

/** Polls until check() is true (bounds are generous: CI machines are busy). */
async function eventually(what, check, limitMs = 30000) {
  const end = Date.now() + limitMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) assert.fail(`${what}: not after ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test("exec resolves to stdout, stderr, exitCode and success", async () => {
  const r = await sb.exec("python3 -c 'print(2+2)'; echo oops >&2");
  assert.equal(r.stdout, "4\n");
  assert.equal(r.stderr, "oops\n");
  assert.equal(r.exitCode, 0);
  assert.equal(r.success, true);

  const bad = await sb.exec("bash -c 'exit 3'");
  assert.equal(bad.exitCode, 3);
  assert.equal(bad.success, false);
  assert.equal((await sb.exec("no-such-command-xyz")).exitCode, 127);
});

test("exec takes env, cwd and stdin for one command; the session keeps its state", async () => {
  const r = await sb.exec('echo "$GREETING $(pwd)"; cat', { env: { GREETING: "hi" }, cwd: "/tmp", stdin: "from stdin\n" });
  assert.equal(r.stdout, "hi /tmp\nfrom stdin\n");
  assert.equal((await sb.exec('echo "[$GREETING]"')).stdout, "[]\n");
  await sb.exec("export KEPT=yes; cd /usr");
  assert.equal((await sb.exec('echo "$KEPT $(pwd)"')).stdout, "yes /usr\n");
  await sb.exec("cd /workspace");
  const bin = await sb.exec("head -c 4 | od -An -tx1", { stdin: new Uint8Array([0, 255, 1, 128]) });
  assert.equal(bin.stdout.trim(), "00 ff 01 80");
});

test("exec with stream and onOutput calls back in order as output arrives", async () => {
  const seen = [];
  const r = await sb.exec("for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.1; done", {
    stream: true,
    onOutput: (stream, data) => seen.push([stream, data]),
  });
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdout, "out1\nout2\nout3\n");
  assert.equal(r.stderr, "err1\nerr2\nerr3\n");
  assert.deepEqual(seen.filter(([s]) => s === "stdout").map(([, d]) => d).join(""), "out1\nout2\nout3\n");
  // out1 was delivered before err2 was written.
  const flat = seen.map(([s, d]) => `${s}:${d}`).join("");
  assert.ok(flat.indexOf("out1") < flat.indexOf("err2"), flat);
});

test("execStream yields start, output in order, then exactly one complete", async () => {
  const st = await sb.execStream("echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c; bash -c 'exit 7'");
  const evs = [];
  for await (const ev of st) evs.push(ev);
  assert.deepEqual(evs.map((e) => e.type), ["start", "stdout", "stderr", "stdout", "complete"]);
  assert.deepEqual(evs.slice(1, 4).map((e) => e.data), ["a\n", "b\n", "c\n"]);
  assert.equal(evs.at(-1).exitCode, 7);

  // The reference's parseSSEStream works on what execStream returns.
  const types = [];
  for await (const ev of parseSSEStream(await sb.execStream("echo x"))) types.push(ev.type);
  assert.deepEqual(types, ["start", "stdout", "complete"]);
});

test("errors are classes carrying the daemon's stable codes", async () => {
  const ghost = client.sandbox(`ts-ghost-${suffix}`);
  await assert.rejects(ghost.info(), (e) => e instanceof NotFoundError && e.code === "SANDBOX_NOT_FOUND" && e.status === 404);
  await assert.rejects(ghost.destroy(), (e) => e instanceof NotFoundError && e.code === "SANDBOX_NOT_FOUND");
  assert.throws(() => client.sandbox("Not_A_Label"), (e) => e instanceof InvalidRequestError && e.code === "INVALID_SANDBOX_ID");
  await assert.rejects(sb.readFile("/workspace/does-not-exist.txt"), (e) => e instanceof NotFoundError && e.code === "FILE_NOT_FOUND");
  await assert.rejects(sb.getSession("no-such-session"), (e) => e instanceof NotFoundError && e.code === "SESSION_NOT_FOUND");
  await assert.rejects(sb.exec(""), (e) => e instanceof InvalidRequestError && e.code === "VALIDATION_FAILED");
  const stranger = new SandboxClient({ url: process.env.SANDBOX_URL, token: "wrong" });
  await assert.rejects(stranger.listSandboxes(), (e) => e instanceof UnauthorizedError && e.code === "UNAUTHORIZED");
  await assert.rejects(sb.exposePort(80), (e) => e instanceof InvalidRequestError && e.code === "INVALID_PORT");
  await assert.rejects(new SandboxClient({ url: "http://127.0.0.1:1" }).health(), (e) => e instanceof UnavailableError);
  // An interpreter that dies ends its run with CONTEXT_TERMINATED, buffered or streamed.
  const ctx = await sb.createCodeContext({ language: "python" });
  await assert.rejects(sb.runCode("import os; os._exit(1)", { context: ctx }), (e) => e instanceof ContextTerminatedError && e.code === "CONTEXT_TERMINATED");
  await assert.rejects(sb.runCode("1", { context: ctx, onStdout: () => {} }), (e) => e instanceof ContextTerminatedError);
  await sb.deleteCodeContext(ctx.id);
  await assert.rejects(sb.gitCheckout("file:///etc"), (e) => e instanceof InvalidRequestError && e.code === "INVALID_GIT_URL");
});

test("a timeout kills the command and throws TimeoutError with the output so far", async () => {
  const t0 = Date.now();
  const err = await sb.exec("echo before; sleep 60; echo after", { timeout: 1500 }).then(
    () => assert.fail("exec past its timeout resolved"),
    (e) => e,
  );
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.code, "COMMAND_TIMEOUT");
  assert.ok(err.result.stdout.startsWith("before\n"), err.result.stdout);
  assert.ok(Date.now() - t0 < 30000);
  // The session lives on.
  assert.equal((await sb.exec("echo still here")).stdout, "still here\n");
});

test("exit in the session throws SessionTerminatedError; the next call gets a fresh shell", async () => {
  const s = await sb.createSession({ id: `quit-${suffix}` });
  await assert.rejects(s.exec("echo bye; exit 4"), (e) => e instanceof SessionTerminatedError && e.code === "SESSION_TERMINATED" && e.result.stdout === "bye\n");
  assert.equal((await s.exec("echo again")).stdout, "again\n");
  await sb.deleteSession(s.sessionId);
});

test("files round trip: text, base64, bytes, streams, directories", async () => {
  await sb.mkdir("/workspace/rt/sub", { recursive: true });
  await sb.writeFile("/workspace/rt/hello.txt", "héllo wörld\n");
  const f = await sb.readFile("/workspace/rt/hello.txt");
  assert.equal(f.content, "héllo wörld\n");
  assert.equal(f.encoding, "utf-8");
  assert.equal((await sb.exec("cat /workspace/rt/hello.txt")).stdout, "héllo wörld\n");

  const bytes = new Uint8Array(300000).map((_, i) => (i * 7 + 3) % 256);
  await sb.writeFile("/workspace/rt/blob.bin", bytes);
  assert.deepEqual(await sb.readFileBytes("/workspace/rt/blob.bin"), bytes);
  const b64 = await sb.readFile("/workspace/rt/blob.bin");
  assert.equal(b64.encoding, "base64");
  assert.equal(b64.isBinary, true);
  assert.deepEqual(base64ToBytes(b64.content), bytes);

  await sb.writeFile("/workspace/rt/small.bin", "AAEC/w==", { encoding: "base64" });
  assert.equal((await sb.exec("od -An -tx1 /workspace/rt/small.bin")).stdout.trim(), "00 01 02 ff");

  // A web stream in, of unknown length.
  const enc = new TextEncoder();
  let n = 0;
  const body = new ReadableStream({ pull(c) { if (n++ < 100) c.enqueue(enc.encode(`line ${n}\n`)); else c.close(); } });
  const w = await sb.writeFile("/workspace/rt/streamed.txt", body);
  assert.ok(w.bytesWritten > 0);
  assert.equal((await sb.exec("wc -l < /workspace/rt/streamed.txt")).stdout.trim(), "100");

  // A file as events.
  const evs = [];
  for await (const ev of await sb.readFileStream("/workspace/rt/hello.txt")) evs.push(ev);
  assert.equal(evs[0].type, "metadata");
  assert.equal(evs.at(-1).type, "complete");
  assert.equal(evs.filter((e) => e.type === "chunk").map((e) => e.data).join(""), "héllo wörld\n");

  assert.deepEqual((await sb.exists("/workspace/rt/hello.txt")).exists, true);
  await sb.renameFile("/workspace/rt/hello.txt", "/workspace/rt/renamed.txt");
  assert.equal((await sb.exists("/workspace/rt/hello.txt")).exists, false);
  assert.equal(await sb.moveFile("/workspace/rt/renamed.txt", "/workspace/rt/sub"), "/workspace/rt/sub/renamed.txt");
  const list = await sb.listFiles("/workspace/rt", { recursive: true });
  assert.deepEqual(list.files.map((e) => e.relativePath).sort(), ["blob.bin", "small.bin", "streamed.txt", "sub", "sub/renamed.txt"]);
  assert.equal(list.files.find((e) => e.name === "sub").type, "directory");
  await assert.rejects(sb.deleteFile("/workspace/rt/sub"), (e) => e.code === "IS_DIRECTORY");
  await sb.deleteFile("/workspace/rt", { recursive: true });
  assert.equal((await sb.exists("/workspace/rt")).exists, false);
  await assert.rejects(sb.mkdir("/workspace/a/b/c"), (e) => e instanceof NotFoundError && e.code === "FILE_NOT_FOUND");
});

test("watch reports a change made after it is in place", async () => {
  await sb.mkdir("/workspace/watched", { recursive: true });
  const ac = new AbortController();
  const st = await sb.watch("/workspace/watched", { recursive: true, signal: ac.signal });
  const seen = [];
  for await (const ev of st) {
    seen.push(ev);
    if (ev.type === "watching") await sb.writeFile("/workspace/watched/new.txt", "x");
    if (ev.type === "event" && ev.path === "/workspace/watched/new.txt") break;
  }
  assert.equal(seen[0].type, "watching");
  assert.ok(seen.some((e) => e.eventType === "create" && e.path === "/workspace/watched/new.txt"), JSON.stringify(seen));
});

test("background processes: start, wait for a log line, logs, live log stream, kill", async () => {
  const p = await sb.startProcess("echo starting; sleep 0.3; echo ready; exec sleep 600", { processId: `srv-${suffix}` });
  assert.equal(p.id, `srv-${suffix}`);
  assert.ok(p.pid > 0);
  const hit = await p.waitForLog("ready", { timeout: 30000 });
  assert.equal(hit.line, "ready");
  const logs = await sb.getProcessLogs(p.id);
  assert.equal(logs.stdout, "starting\nready\n");
  assert.ok((await sb.listProcesses()).some((q) => q.id === p.id && q.status === "running"));
  await assert.rejects(sb.startProcess("true", { processId: `srv-${suffix}` }), (e) => e instanceof ConflictError && e.code === "PROCESS_EXISTS");

  const st = await sb.streamProcessLogs(p.id);
  const types = [];
  let out = "";
  const reading = (async () => {
    for await (const ev of st) {
      types.push(ev.type);
      if (ev.type === "stdout") out += ev.data;
      if (ev.type === "exit") return ev;
    }
  })();
  await eventually("replayed output", () => out === "starting\nready\n");
  await sb.killProcess(p.id, "SIGKILL");
  const exit = await reading;
  assert.equal(types[0], "process_info");
  assert.equal(types.at(-1), "exit");
  assert.equal(exit.status, "killed");
  assert.equal((await sb.getProcess(p.id)).status, "killed");
  assert.equal(await sb.getProcess("no-such-proc"), null);

  const q = await sb.startProcess("sleep 600");
  assert.ok((await sb.killAllProcesses()) >= 1);
  assert.equal(await q.getStatus(), "killed");
  const cat = await sb.startProcess("cat");
  await cat.writeStdin("hello ");
  await cat.writeStdin(new Uint8Array([0x77, 0x6f, 0x72, 0x6c, 0x64, 0x0a]), { close: true });
  assert.equal((await cat.waitForExit({ timeout: 30000 })).exitCode, 0);
  assert.equal((await cat.getLogs()).stdout, "hello world\n");
  const done = await sb.startProcess("exit 5");
  const end = await done.waitForExit({ timeout: 30000 });
  assert.equal(end.exitCode, 5);
  assert.equal(end.status, "failed");
});

test("code interpreter: state in a context, a matplotlib PNG, errors, events", async () => {
  const ctx = await sb.createCodeContext({ language: "python" });
  await sb.runCode("import math\nradius = 5", { context: ctx });
  const r = await sb.runCode("print('Sum:', 7 + 8)\nmath.pi * radius ** 2", { context: ctx });
  assert.deepEqual(r.logs.stdout, ["Sum: 15"]);
  assert.equal(r.results.find((x) => x.isMainResult).text, "78.53981633974483");

  const chart = await sb.runCode("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()", { context: ctx.id, timeout: 120000 });
  const png = chart.results.find((x) => x.png);
  assert.ok(png, JSON.stringify(chart));
  assert.deepEqual([...base64ToBytes(png.png).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

  const bad = await sb.runCode("1 / 0", { context: ctx });
  assert.equal(bad.error.name, "ZeroDivisionError");

  const got = { out: "", results: [] };
  const cb = await sb.runCode("print('live')\n40 + 2", {
    context: ctx,
    onStdout: (m) => (got.out += m.text),
    onResult: (res) => got.results.push(res),
  });
  assert.equal(got.out, "live\n");
  assert.equal(got.results[0].text, "42");
  assert.equal(cb.results[0].text, "42");

  const evs = [];
  for await (const ev of await sb.runCodeStream("console.log('js'); 6 * 7", { language: "javascript" })) evs.push(ev);
  assert.deepEqual(evs.map((e) => e.type), ["start", "stdout", "result", "complete"]);
  assert.equal(evs[2].result.text, "42");

  assert.ok((await sb.listCodeContexts()).some((c) => c.id === ctx.id));
  await sb.deleteCodeContext(ctx.id);
  await assert.rejects(sb.runCode("1", { context: ctx }), (e) => e instanceof NotFoundError && e.code === "CONTEXT_NOT_FOUND");
});

test("ports: a server in the sandbox answers at its preview URL", async () => {
  await sb.writeFile("/workspace/site/index.html", "hello from the sandbox\n", { createParents: true });
  const p = await sb.startProcess("python3 -m http.server 8080 --bind 127.0.0.1", { cwd: "/workspace/site" });
  await p.waitForPort(8080, { mode: "http", timeout: 60000 });
  const exposed = await sb.exposePort(8080, { name: "web" });
  assert.equal(exposed.port, 8080);
  assert.equal(exposed.exposedAt, exposed.url);
  const u = new URL(exposed.url);
  assert.ok(u.hostname.startsWith(`8080-${sb.id}-`), exposed.url);
  const { ports } = await sb.getExposedPorts();
  assert.deepEqual(ports.map((x) => [x.port, x.name]), [[8080, "web"]]);

  // Browsers send *.localhost to loopback; here the Host header says it.
  const daemon = new URL(process.env.SANDBOX_URL);
  const get = () => new Promise((resolve, reject) => {
    http.get({ host: daemon.hostname, port: daemon.port, path: "/index.html", headers: { Host: u.host } }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    }).on("error", reject);
  });
  assert.deepEqual(await get(), { status: 200, body: "hello from the sandbox\n" });
  // A private port: the URL alone is refused; a signed link opens it.
  const priv = await sb.exposePort(8081, { public: false });
  assert.equal(priv.public, false);
  const link = await sb.getPreviewLink(8081, { expiresIn: 60000 });
  assert.ok(link.url.includes("sandboxd_link=") && Date.parse(link.expiresAt) > Date.now(), JSON.stringify(link));
  await sb.unexposePort(8081);
  await sb.unexposePort(8080);
  assert.equal((await get()).status, 404);
  await p.kill();
});

test("sessions isolate env and cwd; setEnvVars reaches the sandbox", async () => {
  await sb.mkdir("/workspace/prod", { recursive: true });
  const s = await sb.createSession({ id: `prod-${suffix}`, env: { NODE_ENV: "production" }, cwd: "/workspace/prod" });
  assert.equal((await s.exec('echo "$NODE_ENV $(pwd)"')).stdout, "production /workspace/prod\n");
  assert.equal((await sb.exec('echo "[$NODE_ENV]"')).stdout, "[]\n");
  await s.writeFile("rel.txt", "relative to the session's cwd");
  assert.equal((await sb.readFile("/workspace/prod/rel.txt")).content, "relative to the session's cwd");
  const again = await sb.getSession(`prod-${suffix}`);
  assert.equal((await again.exec("pwd")).stdout, "/workspace/prod\n");
  await s.setEnvVars({ ONLY_HERE: "1" });
  assert.equal((await s.exec('echo "$ONLY_HERE"')).stdout, "1\n");
  // A process started from the session handle runs in the session.
  const p = await s.startProcess('echo "$NODE_ENV $ONLY_HERE $(pwd)"');
  assert.equal(p.sessionId, `prod-${suffix}`);
  await p.waitForExit({ timeout: 30000 });
  assert.equal((await p.getLogs()).stdout, "production 1 /workspace/prod\n");
  assert.ok((await sb.listSessions()).some((x) => x.id === `prod-${suffix}`));
  await sb.deleteSession(`prod-${suffix}`);
  await assert.rejects(sb.getSession(`prod-${suffix}`), NotFoundError);
  await assert.rejects(sb.createSession({ id: "default" }), (e) => e instanceof ConflictError && e.code === "SESSION_ALREADY_EXISTS");

  await sb.setEnvVars({ SDK_SECRET: "s3cret" });
  assert.equal((await sb.exec('echo "$SDK_SECRET"')).stdout, "s3cret\n");
  await sb.setEnvVars({ SDK_SECRET: null });
  assert.equal((await sb.exec('echo "[$SDK_SECRET]"')).stdout, "[]\n");
});

test("an AbortSignal cancels a call, and the daemon kills the command", async () => {
  const ac = new AbortController();
  const t0 = Date.now();
  const running = sb.exec("sleep 301", { signal: ac.signal });
  await eventually("sleep 301 started", () => isRunning("sleep 30[1]"));
  ac.abort();
  await assert.rejects(running, (e) => e.name === "AbortError");
  assert.ok(Date.now() - t0 < 60000);
  await eventually("sleep 301 killed", async () => !(await isRunning("sleep 30[1]")));

  // Leaving a stream early closes it; the command dies too.
  const st = await sb.execStream("echo started; exec sleep 302");
  for await (const ev of st) if (ev.type === "stdout") break;
  await eventually("sleep 302 killed", async () => !(await isRunning("sleep 30[2]")));

  // A signal aborted mid-stream ends the iteration with its reason.
  const ac2 = new AbortController();
  const st2 = await sb.execStream("echo go; exec sleep 303", { signal: ac2.signal });
  await assert.rejects(async () => {
    for await (const ev of st2) if (ev.type === "stdout") ac2.abort();
  }, (e) => e.name === "AbortError");
  await eventually("sleep 303 killed", async () => !(await isRunning("sleep 30[3]")));

  const dead = AbortSignal.abort();
  await assert.rejects(sb.readFile("/etc/hostname", { signal: dead }), (e) => e.name === "AbortError");
});

test("getSandbox with options creates it with them; list filters by label; destroy", async () => {
  const id = `ts-opts-${suffix}`;
  const s = getSandbox(client, id, { labels: { sdk: "ts", team: "ml" }, env: { FROM_OPTIONS: "yes" }, limits: { memoryBytes: 256 << 20 } });
  assert.equal((await s.exec('echo "$FROM_OPTIONS"')).stdout, "yes\n");
  const info = await s.info();
  assert.equal(info.labels.team, "ml");
  assert.equal(info.limits.memoryBytes, 256 << 20);
  const listed = await client.listSandboxes({ labels: { team: "ml" } });
  assert.deepEqual(listed.map((x) => x.id), [id]);
  assert.equal((await s.setKeepAlive(true)).keepAlive, true);
  assert.equal((await client.health()).status, "ok");
  assert.ok((await client.listImages()).some((im) => im.names.includes("host")));
  await s.destroy();
  await assert.rejects(client.sandbox(id).info(), (e) => e instanceof NotFoundError);
  assert.ok(!(await client.listSandboxes()).some((x) => x.id === id));
  assert.ok(SandboxError.prototype.isPrototypeOf(new NotFoundError("X_NOT_FOUND", "m")));
});

test("snapshots: a fork starts with the parent's files; in use, unknown and memory answer their codes", async () => {
  const name = `ts-snap-${suffix}`;
  await sb.writeFile("/workspace/snap.txt", "from-parent");
  const snap = await sb.createSnapshot(name);
  assert.equal(snap.name, name);
  assert.match(snap.layer, /^sha256-/);
  assert.ok((await client.listSnapshots()).some((s) => s.name === name));
  const fork = getSandbox(client, `ts-fork-${suffix}`, { fromSnapshot: name, labels: { sdk: "ts" } });
  assert.equal((await fork.exec("cat /workspace/snap.txt")).stdout, "from-parent");
  assert.equal((await fork.info()).fromSnapshot, name);
  await assert.rejects(client.deleteSnapshot(name), (e) => e instanceof ConflictError && e.code === "SNAPSHOT_IN_USE");
  await assert.rejects(sb.createSnapshot(`${name}-m`, { memory: true }), (e) => e.code === "MEMORY_SNAPSHOT_UNSUPPORTED");
  await assert.rejects(client.getSnapshot("no-such-snapshot"), (e) => e instanceof NotFoundError && e.code === "SNAPSHOT_NOT_FOUND");
  await fork.destroy();
  await client.deleteSnapshot(name);
});

test("keys: a tenant's client, list filters and pages, rotate and remove", async () => {
  const name = `ts-key-${suffix}`;
  const created = await client.createKey(name, { maxSandboxes: 5 });
  assert.ok(created.key.startsWith("sbx_"));
  assert.equal(created.quotas.maxSandboxes, 5);
  const tenant = new SandboxClient({ url: client.url, token: created.key });
  let rotated;
  try {
    for (const id of ["p1", "p2", "p3"]) await tenant.sandbox(id, { labels: { suite: "ts-page" } }).exec("true");
    const first = await tenant.listSandboxesPage({ labels: { suite: "ts-page" }, limit: 2 });
    assert.deepEqual(first.sandboxes.map((s) => s.id), ["p1", "p2"]);
    assert.ok(first.nextPageToken);
    const next = await tenant.listSandboxesPage({ labels: { suite: "ts-page" }, limit: 2, pageToken: first.nextPageToken });
    assert.deepEqual(next.sandboxes.map((s) => s.id), ["p3"]);
    assert.equal(next.nextPageToken, undefined);
    assert.deepEqual((await tenant.listSandboxes({ status: "running" })).map((s) => s.id), ["p1", "p2", "p3"]);
    assert.deepEqual(await tenant.listSandboxes({ labels: { suite: "none" } }), []);
    // The admin sees the tenant's usage; the tenant cannot manage keys.
    const mine = (await client.listKeys()).find((k) => k.name === name);
    assert.equal(mine.usage.sandboxes, 3);
    assert.equal(mine.quotas.maxSandboxes, 5);
    await assert.rejects(tenant.listKeys(), (e) => e.code === "FORBIDDEN");
    rotated = await client.rotateKey(name);
    await assert.rejects(tenant.listSandboxes(), UnauthorizedError);
    const again = new SandboxClient({ url: client.url, token: rotated.key });
    for (const id of ["p1", "p2", "p3"]) await again.sandbox(id).destroy();
  } finally {
    await client.deleteKey(name);
  }
  await assert.rejects(new SandboxClient({ url: client.url, token: rotated.key }).listSandboxes(), UnauthorizedError);
});
