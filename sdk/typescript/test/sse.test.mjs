// The SSE parser on its own: line ends, comments, multi-line data, events
// split across chunks at every byte, and the size bound.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readSSE, EventStream, UnavailableError, isTerminal } from "../dist/index.js";

function streamOf(chunks) {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(typeof ch === "string" ? enc.encode(ch) : ch);
      c.close();
    },
  });
}

async function all(body) {
  const out = [];
  for await (const ev of readSSE(body)) out.push(ev);
  return out;
}

test("events with LF, CRLF and CR line ends, comments and multi-line data", async () => {
  const text = ": keepalive\n\nevent: start\ndata: {\"a\":1}\n\r\nevent: stdout\r\ndata: line1\r\ndata: line2\r\n\r\ndata:x\r\r";
  const evs = await all(streamOf([text]));
  assert.deepEqual(evs, [
    { event: "start", data: '{"a":1}' },
    { event: "stdout", data: "line1\nline2" },
    { event: "message", data: "x" },
  ]);
});

test("an event split at every byte boundary, UTF-8 included", async () => {
  const text = "event: stdout\r\ndata: {\"data\":\"héllo ✓\"}\r\n\r\n";
  const bytes = new TextEncoder().encode(text);
  for (let i = 1; i < bytes.length; i++) {
    const evs = await all(streamOf([bytes.subarray(0, i), bytes.subarray(i)]));
    assert.deepEqual(evs, [{ event: "stdout", data: '{"data":"héllo ✓"}' }], `split at ${i}`);
  }
});

test("a stream cut before its terminal event is an UnavailableError, not a completion", async () => {
  const st = new EventStream(streamOf(['event: start\ndata: {"type":"start"}\n\n']), "exec stream");
  const seen = [];
  await assert.rejects(async () => {
    for await (const ev of st) seen.push(ev.type);
  }, UnavailableError);
  assert.deepEqual(seen, ["start"]);
});

test("every stream ends at its first complete, exit or error event, by name alone", async () => {
  for (const end of ["complete", "exit", "error"]) {
    const st = new EventStream(streamOf([
      'event: start\ndata: {"type":"start"}\n\n',
      'event: execution_error\ndata: {"error":{"name":"ZeroDivisionError"}}\n\n',
      `event: ${end}\ndata: {}\n\n`,
      'event: stdout\ndata: {"data":"after the end"}\n\n',
    ]), "stream");
    const seen = [];
    for await (const ev of st) seen.push(ev.type);
    assert.deepEqual(seen, ["start", "execution_error", end]);
  }
  assert.deepEqual(["complete", "exit", "error", "execution_error", "stdout"].map(isTerminal), [true, true, true, false, false]);
});

test("an endless line is refused, not buffered without bound", async () => {
  const big = new Uint8Array(1 << 20).fill(0x61);
  let sent = 0;
  const body = new ReadableStream({
    pull(c) {
      if (sent++ > 60) return c.close();
      c.enqueue(sent === 1 ? new TextEncoder().encode("data: ") : big);
    },
  });
  await assert.rejects(all(body), /EVENT_TOO_LARGE/);
});
