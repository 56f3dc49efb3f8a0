// Drives sandboxd's MCP server with the official TypeScript MCP client,
// over both transports: stdio (`sandbox mcp`, started by the client) and
// the daemon's /mcp (streamable HTTP, with the API token). e2e.TestMCP
// starts a real daemon and runs this file with:
//   SANDBOX_URL, SANDBOX_TOKEN  the daemon
//   SANDBOX_CLI                 the sandbox binary
//   MCP_ID_PREFIX               prefix of the sandbox IDs this file uses
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const URL_ = process.env.SANDBOX_URL;
const TOKEN = process.env.SANDBOX_TOKEN;
const CLI = process.env.SANDBOX_CLI;
const PREFIX = process.env.MCP_ID_PREFIX ?? "mcp";
if (!URL_ || !TOKEN || !CLI) {
  throw new Error("SANDBOX_URL, SANDBOX_TOKEN and SANDBOX_CLI must be set (e2e.TestMCP sets them)");
}

// Generous: the machine running the suite may be loaded.
const CALL = { timeout: 240_000 };

const TOOLS = [
  "create_sandbox", "list_sandboxes", "destroy_sandbox", "exec", "write_file", "read_file",
  "list_files", "run_code", "start_process", "process_logs", "kill_process", "expose_port",
];

const transports = {
  stdio: () => new StdioClientTransport({
    command: CLI, args: ["--url", URL_, "--token", TOKEN, "mcp"], stderr: "inherit",
  }),
  http: () => new StreamableHTTPClientTransport(new URL("/mcp", URL_), {
    requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
  }),
};

function text(res) {
  return res.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

function errorCode(res) {
  assert.equal(res.isError, true, `expected a tool error, got ${JSON.stringify(res).slice(0, 500)}`);
  return res.structuredContent?.error?.code;
}

function ok(res) {
  assert.ok(!res.isError, `tool error: ${JSON.stringify(res).slice(0, 1000)}`);
  return res;
}

for (const [name, makeTransport] of Object.entries(transports)) {
  describe(`MCP over ${name}`, { concurrency: false }, () => {
    const sb = `${PREFIX}-${name}`;
    let client;
    const call = async (tool, args, opts = {}) =>
      client.callTool({ name: tool, arguments: args }, undefined, { ...CALL, ...opts });

    before(async () => {
      client = new Client({ name: "sandboxd-e2e", version: "1.0.0" });
      await client.connect(makeTransport());
    });
    after(async () => {
      await client?.close();
    });

    test("lists exactly the tools, with JSON schemas", async () => {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOLS].sort());
      const exec = tools.find((t) => t.name === "exec");
      assert.deepEqual(Object.keys(exec.inputSchema.properties).sort(),
        ["command", "cwd", "env", "sandbox", "timeout_seconds"]);
      assert.deepEqual(exec.inputSchema.required.sort(), ["command", "sandbox"]);
      assert.ok(exec.inputSchema.properties.sandbox.pattern, "sandbox has a pattern");
      for (const t of tools) {
        assert.equal(t.inputSchema.type, "object", t.name);
        assert.ok(t.description, t.name);
        if (t.name !== "list_sandboxes") assert.ok(t.inputSchema.required.includes("sandbox"), t.name);
      }
      const rc = tools.find((t) => t.name === "run_code");
      assert.deepEqual(rc.inputSchema.properties.language.enum, ["python", "javascript", "typescript"]);
    });

    test("create_sandbox and list_sandboxes", async () => {
      const res = ok(await call("create_sandbox", { sandbox: sb, labels: { via: name } }));
      assert.equal(res.structuredContent.id, sb);
      assert.equal(res.structuredContent.status, "running");
      const list = ok(await call("list_sandboxes", {}));
      const mine = list.structuredContent.sandboxes.find((s) => s.id === sb);
      assert.ok(mine, `${sb} in ${text(list)}`);
      assert.equal(mine.labels.via, name);
      assert.match(text(list), new RegExp(sb));
    });

    test("exec streams output as progress and returns the exit code", async () => {
      const progress = [];
      const res = ok(await call("exec", {
        sandbox: sb,
        command: "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2; sh -c 'exit 3'",
      }, { onprogress: (p) => progress.push(p) }));
      assert.equal(res.structuredContent.exit_code, 3);
      assert.equal(res.structuredContent.stdout, "line1\nline2\nline3\n");
      assert.equal(res.structuredContent.stderr, "oops\n");
      assert.match(text(res), /exit code: 3/);
      const streamed = progress.map((p) => p.message ?? "").join("");
      assert.match(streamed, /line1\n/);
      assert.match(streamed, /line3\n/);
      // Not /oops/: it is printed just before the command ends, and the MCP
      // TypeScript SDK runs progress handlers a microtask late but drops a
      // call's progress handler as soon as its result arrives, so a
      // notification read in the same chunk as the result is lost client-side
      // (the server sent it first). The result above has the stderr.
      assert.ok(progress.length >= 2, `progress notifications: ${progress.length}`);
      for (let i = 1; i < progress.length; i++) assert.ok(progress[i].progress > progress[i - 1].progress);
    });

    test("exec keeps shell state, takes cwd and env", async () => {
      ok(await call("exec", { sandbox: sb, command: "cd /tmp && export GREETING=hi" }));
      let res = ok(await call("exec", { sandbox: sb, command: "echo $GREETING from $(pwd)" }));
      assert.equal(res.structuredContent.stdout, "hi from /tmp\n");
      res = ok(await call("exec", { sandbox: sb, command: "echo $WHO in $(pwd)", cwd: "/", env: { WHO: "me" } }));
      assert.equal(res.structuredContent.stdout, "me in /\n");
    });

    test("cancelling an exec call ends the command in the sandbox", async () => {
      const ac = new AbortController();
      const marker = `mcp-cancel-${name}`;
      const pending = call("exec", {
        sandbox: sb, command: `echo started; bash -c 'exec -a ${marker} sleep 1000'`,
      }, { signal: ac.signal, onprogress: (p) => { if ((p.message ?? "").includes("started")) ac.abort(); } });
      await assert.rejects(pending);
      // The command dies with its stream; give a loaded machine time.
      let left;
      for (let i = 0; i < 200; i++) {
        left = ok(await call("exec", { sandbox: sb, command: `pgrep -f ${marker} || true` })).structuredContent.stdout;
        if (left === "") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(left, "", `the cancelled command still runs: ${left}`);
    });

    test("long output is cut with a note, and the full output is in a file", async () => {
      const res = ok(await call("exec", { sandbox: sb, command: "seq 1 200000" }));
      const out = res.structuredContent;
      assert.equal(out.exit_code, 0);
      assert.ok(out.stdout.length < 64 * 1024, `stdout in result: ${out.stdout.length} bytes`);
      assert.match(out.stdout, /^1\n2\n3\n/);
      assert.match(out.stdout, /199999\n200000\n$/);
      assert.match(out.stdout, /bytes of stdout omitted/);
      assert.ok(out.stdout_file, "stdout_file names the full output");
      assert.match(text(res), new RegExp(`all of it is in ${out.stdout_file}`));
      const wc = ok(await call("exec", { sandbox: sb, command: `wc -l < ${out.stdout_file}; tail -n 1 ${out.stdout_file}` }));
      assert.equal(wc.structuredContent.stdout, "200000\n200000\n");
      const part = ok(await call("read_file", { sandbox: sb, path: out.stdout_file, offset: 0, length: 6 }));
      assert.equal(part.structuredContent.content, "1\n2\n3\n");
      assert.match(part.structuredContent.note, /read on with offset 6/);
    });

    test("a timeout is a tool error with its code and the output so far", async () => {
      const res = await call("exec", { sandbox: sb, command: "echo started; sleep 60", timeout_seconds: 1 });
      assert.equal(errorCode(res), "COMMAND_TIMEOUT");
      assert.match(text(res), /^COMMAND_TIMEOUT: /);
      assert.match(text(res), /started/);
    });

    test("invalid arguments are refused by the schema with VALIDATION_FAILED", async () => {
      let res = await call("exec", { sandbox: "Not_Valid", command: "true" });
      assert.equal(errorCode(res), "VALIDATION_FAILED");
      res = await call("exec", { sandbox: sb });
      assert.equal(errorCode(res), "VALIDATION_FAILED");
      res = await call("exec", { sandbox: sb, command: "true", timeout_seconds: -5 });
      assert.equal(errorCode(res), "VALIDATION_FAILED");
      res = await call("exec", { sandbox: sb, command: "true", surprise: 1 });
      assert.equal(errorCode(res), "VALIDATION_FAILED");
      res = await call("expose_port", { sandbox: sb, port: 80 });
      assert.equal(errorCode(res), "VALIDATION_FAILED");
    });

    test("write_file, read_file and list_files", async () => {
      let res = ok(await call("write_file", { sandbox: sb, path: "/workspace/notes/hello.txt", content: "hello, MCP ✓\n" }));
      assert.equal(res.structuredContent.path, "/workspace/notes/hello.txt");
      res = ok(await call("read_file", { sandbox: sb, path: "/workspace/notes/hello.txt" }));
      assert.equal(res.structuredContent.content, "hello, MCP ✓\n");
      assert.equal(text(res), "hello, MCP ✓\n");
      ok(await call("write_file", { sandbox: sb, path: "/workspace/notes/bin.dat", content: Buffer.from([0, 1, 2, 255]).toString("base64"), encoding: "base64" }));
      res = ok(await call("read_file", { sandbox: sb, path: "/workspace/notes/bin.dat" }));
      assert.equal(res.structuredContent.encoding, "base64");
      assert.equal(res.structuredContent.content, "AAEC/w==");
      res = ok(await call("list_files", { sandbox: sb, path: "/workspace/notes" }));
      assert.deepEqual(res.structuredContent.entries.map((e) => e.path).sort(), ["bin.dat", "hello.txt"]);
      res = await call("read_file", { sandbox: sb, path: "/workspace/missing.txt" });
      assert.match(errorCode(res), /NOT_FOUND$/);
    });

    test("run_code returns a matplotlib chart as an image and a table as text and HTML", async () => {
      const progress = [];
      let res = ok(await call("run_code", {
        sandbox: sb, language: "python",
        code: "import matplotlib.pyplot as plt\nprint('plotting')\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n",
      }, { onprogress: (p) => progress.push(p) }));
      const img = res.content.find((c) => c.type === "image");
      assert.ok(img, `an image block in ${JSON.stringify(res.content.map((c) => c.type))}`);
      assert.equal(img.mimeType, "image/png");
      const png = Buffer.from(img.data, "base64");
      assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      assert.ok(png.length > 1000, `PNG of ${png.length} bytes`);
      assert.match(text(res), /plotting/);
      assert.match(progress.map((p) => p.message ?? "").join(""), /plotting/);

      res = ok(await call("run_code", {
        sandbox: sb,
        code: "import pandas as pd\ndf = pd.DataFrame({'city': ['Oslo', 'Lima'], 'temp': [4, 19]})\ndf\n",
      }));
      assert.match(text(res), /Oslo/);
      const html = res.content.find((c) => c.type === "resource");
      assert.ok(html, `an HTML resource in ${JSON.stringify(res.content.map((c) => c.type))}`);
      assert.equal(html.resource.mimeType, "text/html");
      assert.match(html.resource.text, /<table/);

      res = ok(await call("run_code", { sandbox: sb, language: "javascript", code: "const x = 40; x + 2" }));
      assert.match(text(res), /\b42\b/);
      res = ok(await call("run_code", { sandbox: sb, language: "typescript", code: "const n: number = 6; n * 7" }));
      assert.match(text(res), /\b42\b/);
      res = ok(await call("run_code", { sandbox: sb, code: "1/0" }));
      assert.equal(res.structuredContent.execution_error.name, "ZeroDivisionError");
      assert.match(text(res), /ZeroDivisionError/);
    });

    test("start_process, process_logs, expose_port and kill_process", async () => {
      let res = ok(await call("start_process", {
        sandbox: sb, process_id: "web",
        command: "echo serving; exec python3 -m http.server 8000 --bind 127.0.0.1",
      }));
      assert.equal(res.structuredContent.process_id, "web");
      assert.ok(res.structuredContent.pid > 0);
      let logs;
      for (let i = 0; i < 100; i++) {
        logs = ok(await call("process_logs", { sandbox: sb, process_id: "web" }));
        if (logs.structuredContent.stdout.includes("serving")) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(logs.structuredContent.stdout, "serving\n");
      assert.equal(logs.structuredContent.status, "running");
      res = ok(await call("expose_port", { sandbox: sb, port: 8000, name: "web" }));
      assert.match(res.structuredContent.url, new RegExp(`^http://8000-${sb}-[a-z0-9_]+\\.`));
      assert.match(text(res), new RegExp(res.structuredContent.url.replace(/[.]/g, "\\.")));
      res = ok(await call("kill_process", { sandbox: sb, process_id: "web" }));
      assert.equal(res.structuredContent.status, "killed");
      res = await call("process_logs", { sandbox: sb, process_id: "nope" });
      assert.match(errorCode(res), /NOT_FOUND$/);
    });

    test("reports the latency of small calls (no bound asserted)", async (t) => {
      const times = [];
      for (let i = 0; i < 20; i++) {
        const start = performance.now();
        ok(await call("exec", { sandbox: sb, command: "true" }));
        times.push(performance.now() - start);
      }
      times.sort((a, b) => a - b);
      t.diagnostic(`exec "true" over ${name}: median ${times[10].toFixed(1)} ms, max ${times[19].toFixed(1)} ms (20 calls)`);
    });

    test("destroy_sandbox, then the sandbox is gone", async () => {
      ok(await call("destroy_sandbox", { sandbox: sb }));
      const list = ok(await call("list_sandboxes", {}));
      assert.ok(!list.structuredContent.sandboxes.some((s) => s.id === sb));
      const res = await call("destroy_sandbox", { sandbox: sb });
      assert.equal(errorCode(res), "SANDBOX_NOT_FOUND");
    });
  });
}

test("/mcp refuses requests without the API token", async () => {
  const init = {
    jsonrpc: "2.0", id: 1, method: "initialize",
    params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } },
  };
  for (const auth of [undefined, "Bearer wrong-token"]) {
    const headers = { "Content-Type": "application/json", Accept: "application/json, text/event-stream" };
    if (auth) headers.Authorization = auth;
    const resp = await fetch(new URL("/mcp", URL_), { method: "POST", headers, body: JSON.stringify(init) });
    assert.equal(resp.status, 401);
    assert.equal((await resp.json()).code, "UNAUTHORIZED");
  }
  const client = new Client({ name: "no-token", version: "1.0.0" });
  await assert.rejects(client.connect(new StreamableHTTPClientTransport(new URL("/mcp", URL_))));
});
