// Measures the E2B layer with the official SDK (run by bench.BenchmarkE2B):
// commands.run('true') through /e2b beside sandboxd's own exec of `true`
// (POST /v1/sandboxes/{id}/exec, from the same Node process and HTTP
// stack), and Sandbox.create (with metadata and a timeout, as E2B's
// programs create) to the first command's result with the warm pool
// (waiting, outside the measurement, for the pool to refill); and
// the same work as an E2B command through sandboxd's process API; and
// commands.run's own Start call sent by hand (run-raw: the Connect JSON
// envelope by the global fetch, read to its end), so run minus run-raw is
// the SDK's client-side work and run-raw against exec the server's; and
// the start the layer makes of it sent to sandboxd's API by hand
// (api-stream), which splits the server's share in two. Those
// are sent back to back (each command's fork ahead of the next process
// then lands on the calls after it; run-raw in a round of its own, in
// run's place); each is also measured
// settled: before each, outside the measurement, the
// sandbox's agent is asked to have its next login process forked ahead
// (POST /internal/login on the agent's socket under the target's runDir,
// which answers once the fork is over) and given 100 ms to settle, as
// when an agent's commands come seconds apart.
// With BENCH_CANNED (a canned envd's URL, see below), the SDK's floor:
// commands.run against a server that answers at once.
// BENCH_TARGETS (a JSON list of {name, url, token, runDir}) measures several
// daemons (say, two builds) sample by sample in turn; without it, the one
// daemon at SANDBOX_URL with E2B_API_KEY. Prints one JSON line of
// milliseconds: the first target's fields, and each other target's under
// its name.
import { Sandbox } from 'e2b'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'

const n = Number(process.env.BENCH_N || 100)
const targets = process.env.BENCH_TARGETS
  ? JSON.parse(process.env.BENCH_TARGETS)
  : [{ name: '', url: process.env.SANDBOX_URL, token: process.env.E2B_API_KEY }]
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.round(s.length * p / 100) - 1))] }
const summary = (xs) => ({ p50: pct(xs, 50), p95: pct(xs, 95), p99: pct(xs, 99), n: xs.length })
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

for (const t of targets) {
  t.conn = { apiKey: t.token, apiUrl: `${t.url}/e2b`, sandboxUrl: `${t.url}/e2b` }
  t.auth = { authorization: `Bearer ${t.token}` }
  t.run = []; t.exec = []; t.proc = []; t.create = []; t.runSettled = []; t.execSettled = []; t.procSettled = []
  t.raw = []; t.rawSettled = []; t.api = []; t.apiSettled = []
}

async function poolReady(t) {
  for (let i = 0; i < 600; i++) {
    const res = await fetch(`${t.url}/metrics`, { headers: t.auth })
    const m = (await res.text()).match(/^sandboxd_warm_pool\{state="ready"\} (\d+)/m)
    if (m && Number(m[1]) > 0) return
    await sleep(50)
  }
}

// agentLogin asks the agent behind a socket to have a login process of
// user forked ahead; it answers once that fork is over.
const agentLogin = (socketPath) => new Promise((resolve) => {
  const req = http.request({ socketPath, path: '/internal/login', method: 'POST', headers: { 'content-type': 'application/json' } },
    (res) => { res.resume(); res.on('end', resolve) })
  req.on('error', resolve) // a pooled sandbox's socket may go meanwhile
  req.end(JSON.stringify({ user: 'user' }))
})
// settle waits, outside the measurement, until the target's sandboxes
// (the one measured and the pool's) have their next login process forked
// ahead, then 100 ms for it to open its FIFOs and wait for its command.
async function settle(t) {
  const dir = t.runDir && path.join(t.runDir, 'sandboxes')
  if (dir && fs.existsSync(dir)) {
    for (const key of fs.readdirSync(dir)) {
      const sock = path.join(dir, key, 'agent.sock')
      if (fs.existsSync(sock)) await agentLogin(sock)
    }
  }
  await sleep(100)
}

const exec = async (t) => {
  const res = await fetch(`${t.url}/v1/sandboxes/${t.sbx.sandboxId}/exec`, {
    method: 'POST', headers: { ...t.auth, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'true' }),
  })
  const body = await res.json()
  if (body.exitCode !== 0) throw new Error(JSON.stringify(body))
}
// The same work as an E2B command through sandboxd's own process API: a
// login process (bash -l -c true) as user, and its log stream to the
// exit. run minus this is what the layer adds.
const proc = async (t) => {
  const res = await fetch(`${t.url}/v1/sandboxes/${t.sbx.sandboxId}/processes`, {
    method: 'POST', headers: { ...t.auth, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'true', login: true, user: 'user', cwd: '/home/user', autoCleanup: true }),
  })
  const p = await res.json()
  const logs = await fetch(`${t.url}/v1/sandboxes/${t.sbx.sandboxId}/processes/${p.id}/logs/stream`, { headers: t.auth })
  const text = await logs.text()
  if (!text.includes('event: exit')) throw new Error(text)
}

// The start the layer makes of commands.run('true'), sent to sandboxd's
// own API by the global fetch: one POST …/processes/start/stream (a login
// process of `true` as user, stdin closed, the SDK's 60 s deadline), its
// event stream read to the end. run-raw minus this is the E2B layer's
// share (the Connect framing and its in-memory call of the API); this
// minus exec the login process's and its streamed answer's.
let apiSeq = 0
const apiStream = async (t) => {
  const res = await fetch(`${t.url}/v1/sandboxes/${t.sbx.sandboxId}/processes/start/stream`, {
    method: 'POST', headers: { ...t.auth, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'true', login: true, user: 'user', cwd: '/home/user', autoCleanup: true, closeStdin: true,
      timeout: 60000, processId: `bench-${++apiSeq}` }),
  })
  const text = await res.text()
  if (!text.includes('event: exit') || !text.includes('"exitCode":0')) throw new Error(text)
}

// envelope is one Connect streaming message: flag 0, its length (4 bytes,
// big-endian), the JSON.
const envelope = (msg) => {
  const json = Buffer.from(JSON.stringify(msg))
  const b = Buffer.alloc(5 + json.length)
  b.writeUInt32BE(json.length, 1)
  json.copy(b, 5)
  return b
}
// What commands.run('true') sends (e2b 2.51, envd 0.5.7: no Authorization).
const rawStart = envelope({ process: { cmd: '/bin/bash', args: ['-l', '-c', 'true'] }, stdin: false })
// messages splits a Connect stream into its envelopes' flags and JSON.
const messages = (b) => {
  const out = []
  for (let i = 0; i + 5 <= b.length;) {
    const len = b.readUInt32BE(i + 1)
    out.push({ flags: b[i], msg: JSON.parse(b.subarray(i + 5, i + 5 + len).toString()) })
    i += 5 + len
  }
  return out
}
// raw sends commands.run('true')'s Start call with the SDK's headers by
// the global fetch (the stack exec uses) and reads its answer to the end
// of stream: no connect-es, no SDK.
const raw = (t) => rawAt(`${t.url}/e2b`, t.sbx)
const rawAt = async (base, sbx) => {
  const res = await fetch(`${base}/process.Process/Start`, {
    method: 'POST', body: rawStart,
    headers: {
      'content-type': 'application/connect+json', 'connect-protocol-version': '1', 'connect-timeout-ms': '60000',
      'keepalive-ping-interval': '50', 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983',
      'x-access-token': sbx.envdAccessToken,
    },
  })
  const msgs = messages(Buffer.from(await res.arrayBuffer()))
  const end = msgs.find((m) => m.msg.event?.end)
  const last = msgs.at(-1)
  if (res.status !== 200 || !end || (end.msg.event.end.exitCode ?? 0) !== 0 || last?.flags !== 2 || last.msg.error) {
    throw new Error(`run-raw: HTTP ${res.status}: ${JSON.stringify(msgs)}`)
  }
}

for (const t of targets) {
  t.sbx = await Sandbox.create({ ...t.conn, timeoutMs: 3_600_000 })
  for (let i = 0; i < 10; i++) await t.sbx.commands.run('true') // warm up both paths
  for (let i = 0; i < 10; i++) { await exec(t); await proc(t); await raw(t); await apiStream(t) }
}
// The targets take turns going first, so that neither always follows
// the other's work.
const turn = (i) => targets.map((_, k) => targets[(i + k) % targets.length])
for (let i = 0; i < n; i++) {
  for (const t of turn(i)) {
    let s = performance.now()
    await t.sbx.commands.run('true')
    t.run.push(performance.now() - s)
    s = performance.now()
    await exec(t)
    t.exec.push(performance.now() - s)
    s = performance.now()
    await proc(t)
    t.proc.push(performance.now() - s)
  }
}
// inRunsPlace times f back to back in a round of the same shape as the
// first with f in run's place (its exec and process calls untimed), so
// that it meets the same fork ahead in flight as run does.
const inRunsPlace = async (f, samples) => {
  for (let i = 0; i < n; i++) {
    for (const t of turn(i)) {
      const s = performance.now()
      await f(t)
      samples(t).push(performance.now() - s)
      await exec(t)
      await proc(t)
    }
  }
}
await inRunsPlace(raw, (t) => t.raw)
await inRunsPlace(apiStream, (t) => t.api)
for (let i = 0; i < n; i++) {
  for (const t of turn(i)) {
    await settle(t)
    let s = performance.now()
    await t.sbx.commands.run('true')
    t.runSettled.push(performance.now() - s)
    await settle(t)
    s = performance.now()
    await exec(t)
    t.execSettled.push(performance.now() - s)
    await settle(t)
    s = performance.now()
    await proc(t)
    t.procSettled.push(performance.now() - s)
    await settle(t)
    s = performance.now()
    await raw(t)
    t.rawSettled.push(performance.now() - s)
    await settle(t)
    s = performance.now()
    await apiStream(t)
    t.apiSettled.push(performance.now() - s)
  }
}
for (const t of targets) await t.sbx.kill()

// The canned envd (BENCH_CANNED, served by BenchmarkE2B on loopback)
// answers commands.run('true')'s Start and the exec at once, with no
// sandbox behind it: run against it is the SDK's own work, run-raw the
// global fetch's for the same bytes, exec the exec's client side. Its
// Start answer comes in the shapes below (a path prefix each, see
// bench/e2b_canned_test.go): what sandboxd sends, one chunked write, a
// Content-Length. A Sandbox object is made for it as Sandbox.create
// makes one from a create's answer.
const cannedShapes = ['sandboxd', 'one-write', 'length']
const canned = { run: {}, raw: {}, exec: [] }
if (process.env.BENCH_CANNED) {
  const base = process.env.BENCH_CANNED
  const sbx = {}
  for (const shape of cannedShapes) {
    sbx[shape] = new Sandbox({ apiKey: 'canned', apiUrl: base, sandboxUrl: `${base}/${shape}`, sandboxId: 'canned', envdVersion: '0.5.7', envdAccessToken: 'canned' })
    canned.run[shape] = []; canned.raw[shape] = []
  }
  const cannedExec = async () => {
    const res = await fetch(`${base}/exec`, {
      method: 'POST', headers: { authorization: 'Bearer canned', 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'true' }),
    })
    const body = await res.json()
    if (body.exitCode !== 0) throw new Error(JSON.stringify(body))
  }
  const rounds = 3 * n
  for (let i = -20; i < rounds; i++) { // 20 untimed rounds first
    for (const shape of cannedShapes) {
      let s = performance.now()
      await sbx[shape].commands.run('true')
      if (i >= 0) canned.run[shape].push(performance.now() - s)
      s = performance.now()
      await rawAt(`${base}/${shape}`, sbx[shape])
      if (i >= 0) canned.raw[shape].push(performance.now() - s)
    }
    const s = performance.now()
    await cannedExec()
    if (i >= 0) canned.exec.push(performance.now() - s)
  }
}

for (let i = 0; i < n; i++) {
  for (const t of turn(i)) {
    for (const u of targets) await poolReady(u) // one's refill would slow the other's create
    const s = performance.now()
    const sbx = await Sandbox.create({ ...t.conn, metadata: { bench: 'e2b' }, timeoutMs: 60_000 })
    await sbx.commands.run('true')
    t.create.push(performance.now() - s)
    await sbx.kill()
  }
}
const result = (t) => ({
  run: summary(t.run), exec: summary(t.exec), process: summary(t.proc), createToFirstResult: summary(t.create),
  runSettled: summary(t.runSettled), execSettled: summary(t.execSettled), processSettled: summary(t.procSettled),
  runRaw: summary(t.raw), runRawSettled: summary(t.rawSettled),
  apiStream: summary(t.api), apiStreamSettled: summary(t.apiSettled),
})
const out = result(targets[0])
for (const t of targets.slice(1)) out[t.name] = result(t)
if (canned.exec.length) {
  out.canned = { exec: summary(canned.exec), run: {}, raw: {} }
  for (const shape of cannedShapes) {
    out.canned.run[shape] = summary(canned.run[shape])
    out.canned.raw[shape] = summary(canned.raw[shape])
  }
}
console.log(JSON.stringify(out))
