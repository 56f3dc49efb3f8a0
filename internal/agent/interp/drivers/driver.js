// sandboxd JavaScript driver: one code context's interpreter (JavaScript,
// and TypeScript after the agent has transpiled it).
//
// The sandbox agent writes this file into its private run directory and
// starts `node --expose-internals driver.js` through its spawn wrapper. File
// descriptors, frames, acks and messages are those of driver.py: 1 and 2
// are the user's stdout and stderr, 3 carries requests, 4 replies, 5 acks
// of result and error frames; a frame is a 4-byte big-endian length and
// that much JSON.
//
// How code runs. Each code context is a process of its own, so the
// process's main V8 context is the code context: code runs with
// vm.Script#runInThisContext (no cross-realm surprises such as arrays from
// require() failing `instanceof Array`). Top-level `let`, `const` and
// `class` of a script live in V8's script scope, which every later script
// of the context sees, so they persist from run to run; the completion
// value of the script is the run's result. Code with top-level `await` is
// rewritten as the Node.js REPL does it (internal/repl/await, reachable with
// --expose-internals): its declarations are hoisted to script scope and the
// rest runs in an async function whose last expression is returned. Node 18
// (Debian 12) and later have it; vm.SourceTextModule would need
// --experimental-vm-modules and gives no persistence across runs.
//
// Timeouts: the agent sends SIGINT. Synchronous code is stopped by V8
// (breakOnSigint); a run waiting in `await` is abandoned (reported as
// interrupted) while the event loop goes on. Code that spins inside an
// async continuation cannot be interrupted; the agent then kills the
// process and the context is terminated.
'use strict';

const fs = require('fs');
const vm = require('vm');
const util = require('util');
const path = require('path');
const { Console } = require('console');
const { Writable } = require('stream');
const { createRequire } = require('module');

const MAX_FRAME = 64 << 20;
const MAX_REPR = 16 << 20;

// Re-open the protocol pipes close-on-exec (Node opens every file with
// O_CLOEXEC), so children of user code do not inherit them.
const reqFD = fs.openSync('/proc/self/fd/3', fs.constants.O_RDONLY);
const repFD = fs.openSync('/proc/self/fd/4', fs.constants.O_WRONLY);
const ackFD = fs.openSync('/proc/self/fd/5', fs.constants.O_RDONLY);
fs.closeSync(3);
fs.closeSync(4);
fs.closeSync(5);

// The driver keeps its own references: user code may overwrite globals.
const stringify = JSON.stringify;
const writeSync = fs.writeSync;
const BufferFrom = Buffer.from;
const BufferAlloc = Buffer.allocUnsafe;

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

function send(msg) {
  let body = BufferFrom(stringify(msg), 'utf8');
  if (body.length > MAX_FRAME) {
    body = BufferFrom(stringify({ type: 'error', name: 'OutputTooLarge', value: 'a result was too large to send', traceback: [] }));
  }
  const head = BufferAlloc(4);
  head.writeUInt32BE(body.length, 0);
  writeAll(repFD, head);
  writeAll(repFD, body);
  if (msg.type === 'result' || msg.type === 'error') {
    // Wait for the agent's ack (0 bytes: it is gone; go on).
    for (;;) {
      try { fs.readSync(ackFD, ackBuf, 0, 1, null); break; } catch (e) { if (e.code !== 'EAGAIN' && e.code !== 'EINTR') break; }
    }
  }
}
const ackBuf = Buffer.alloc(1);

// Output of user code goes straight to fds 1 and 2, synchronously, so it
// is in the pipes before any frame that follows it.
function syncStream(fd) {
  return new Writable({
    decodeStrings: true,
    write(chunk, enc, cb) {
      try { writeAll(fd, chunk); cb(); } catch (e) { cb(e); }
    },
  });
}
const userConsole = new Console({ stdout: syncStream(1), stderr: syncStream(2) });

// ---- rich results --------------------------------------------------------

function textOf(value) {
  return util.inspect(value, { depth: 4, maxArrayLength: 200, maxStringLength: 100000, breakLength: 100 });
}

function clip(s) {
  return s.length > MAX_REPR ? [s.slice(0, MAX_REPR), true] : [s, false];
}

// formats returns the representations of value: text always; json for
// plain objects and arrays that JSON can carry; the value's own rich forms
// for objects made with display helpers.
function formats(value) {
  if (value && typeof value === 'object' && value[MIME]) {
    return { data: { ...value[MIME] }, truncated: false };
  }
  const [text, cut] = clip(textOf(value));
  const data = { 'text/plain': text };
  let truncated = cut;
  if (value !== null && typeof value === 'object' && (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null)) {
    try {
      const s = stringify(value);
      if (s !== undefined && s.length <= MAX_REPR) data['application/json'] = JSON.parse(s);
      else if (s !== undefined) truncated = true;
    } catch (e) { /* cycles, BigInt: text only */ }
  }
  return { data, truncated };
}

function publish(value, main) {
  const { data, truncated } = formats(value);
  const msg = { type: 'result', data, main };
  if (truncated) msg.truncated = true;
  send(msg);
}

const MIME = Symbol('sandboxd.mime');
function mime(data) { return { [MIME]: data, [util.inspect.custom]() { return data['text/plain'] || '[rich output]'; } }; }

// display(value) shows a value as a result now; display.html(s) and friends
// show content of one type.
function display(...values) { for (const v of values) publish(v, false); }
display.html = (s) => publish(mime({ 'text/html': String(s) }), false);
display.markdown = (s) => publish(mime({ 'text/markdown': String(s) }), false);
display.svg = (s) => publish(mime({ 'image/svg+xml': String(s) }), false);
display.latex = (s) => publish(mime({ 'text/latex': String(s) }), false);
display.json = (v) => publish(mime({ 'application/json': JSON.parse(stringify(v)), 'text/plain': textOf(v) }), false);
display.png = (b) => publish(mime({ 'image/png': Buffer.isBuffer(b) ? b.toString('base64') : String(b) }), false);
display.jpeg = (b) => publish(mime({ 'image/jpeg': Buffer.isBuffer(b) ? b.toString('base64') : String(b) }), false);

// ---- errors ----------------------------------------------------------------

function reportError(err) {
  if (err instanceof Error || (err && typeof err === 'object' && typeof err.stack === 'string')) {
    let stack = String(err.stack || '');
    // Frames of the driver itself are noise to the user.
    const lines = stack.split('\n').filter((l) => !l.includes(__filename) && !/\(node:|at node:/.test(l));
    send({ type: 'error', name: String(err.name || 'Error'), value: String(err.message || ''), traceback: lines });
    return;
  }
  send({ type: 'error', name: 'Uncaught', value: textOf(err), traceback: [] });
}

// ---- running ---------------------------------------------------------------

let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch (e) { /* without --expose-internals: await only inside functions */ }

let executionCount = 0;
let current = null; // { finish(err) } while a run waits on a promise

function done() {
  current = null;
  send({ type: 'done', executionCount });
}

function compile(code, filename) {
  try {
    return { script: new vm.Script(code, { filename }), wrapped: false };
  } catch (e) {
    if (!(e instanceof SyntaxError) || processTopLevelAwait === null || !/\bawait\b/.test(code)) throw e;
    let rewritten = null;
    try { rewritten = processTopLevelAwait(code); } catch (e2) { throw e; }
    if (rewritten === null) throw e;
    return { script: new vm.Script(rewritten, { filename }), wrapped: true };
  }
}

function run(code) {
  executionCount++;
  const filename = `<cell ${executionCount}>`;
  let value;
  let wrapped;
  try {
    const c = compile(code, filename);
    wrapped = c.wrapped;
    value = c.script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  } catch (e) {
    reportError(e);
    return done();
  }
  if (!wrapped) {
    if (value !== undefined) publish(value, true);
    return done();
  }
  // The async wrapper resolves to { value } (the last expression) or
  // undefined.
  let settled = false;
  const finish = (err, res) => {
    if (settled) return;
    settled = true;
    if (err !== undefined) reportError(err);
    else if (res && res.value !== undefined) publish(res.value, true);
    done();
  };
  current = { finish };
  Promise.resolve(value).then((res) => finish(undefined, res), (err) => finish(err === undefined ? new Error('undefined') : err));
}

process.on('SIGINT', () => {
  if (current) {
    const e = new Error('Script execution interrupted.');
    current.finish(e);
  }
});
process.on('uncaughtException', (err) => {
  userConsole.error('Uncaught', err);
});
process.on('unhandledRejection', (reason) => {
  userConsole.error('Unhandled promise rejection:', reason);
});

function init(req) {
  if (req.cwd) process.chdir(req.cwd);
  for (const [k, v] of Object.entries(req.env || {})) process.env[k] = v;
  const req2 = createRequire(path.join(process.cwd(), '<cell>'));
  Object.assign(globalThis, { console: userConsole, display, require: req2 });
  send({ type: 'inited' });
}

// ---- requests --------------------------------------------------------------

let pending = Buffer.alloc(0);
const input = fs.createReadStream(null, { fd: reqFD, autoClose: true, highWaterMark: 1 << 20 });
input.on('data', (chunk) => {
  pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
  while (pending.length >= 4) {
    const n = pending.readUInt32BE(0);
    if (n > MAX_FRAME) process.exit(2);
    if (pending.length < 4 + n) break;
    const req = JSON.parse(pending.subarray(4, 4 + n).toString('utf8'));
    pending = pending.subarray(4 + n);
    if (req.type === 'run') run(String(req.code || ''));
    else if (req.type === 'init') init(req);
  }
});
input.on('end', () => process.exit(0));
input.on('error', () => process.exit(0));

send({ type: 'ready', version: process.version });
