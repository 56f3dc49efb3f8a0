// An interactive terminal over the runtime's own WebSocket (Node 20 runs
// this file with --experimental-websocket; see e2e/sdk_test.go).
import { test } from "node:test";
import assert from "node:assert/strict";
import { SandboxClient } from "../dist/index.js";

test("openTerminal: ready, keystrokes in, output out, exit", { skip: typeof WebSocket === "undefined" && "no WebSocket in this runtime" }, async () => {
  const client = SandboxClient.fromEnv();
  const sb = client.sandbox(`ts-term-${process.pid}`);
  try {
    const ws = await sb.openTerminal({ terminal: "t1", cols: 100, rows: 30 });
    const dec = new TextDecoder();
    let out = "";
    const messages = [];
    const exited = new Promise((resolve, reject) => {
      ws.onmessage = (m) => {
        if (typeof m.data === "string") {
          const msg = JSON.parse(m.data);
          messages.push(msg);
          if (msg.type === "ready") ws.send(new TextEncoder().encode("echo $((6*7))-from-$COLUMNS; exit 3\r"));
          if (msg.type === "exit") resolve(msg);
        } else {
          out += dec.decode(m.data, { stream: true });
        }
      };
      ws.onerror = (e) => reject(new Error(`websocket error: ${e.message ?? e.type}`));
      ws.onclose = () => setTimeout(() => reject(new Error(`closed before exit; output: ${out}`)), 100);
    });
    const exit = await exited;
    assert.equal(messages[0].type, "ready");
    assert.equal(exit.exitCode, 3);
    assert.match(out, /42-from-100/);
    ws.close();
  } finally {
    await sb.destroy().catch(() => {});
  }
});
