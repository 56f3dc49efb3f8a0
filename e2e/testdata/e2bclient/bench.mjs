// Measures the E2B layer with the official SDK (run by bench.BenchmarkE2B):
// commands.run('true') through /e2b beside sandboxd's own exec of `true`
// (POST /v1/sandboxes/{id}/exec, from the same Node process and HTTP
// stack), and Sandbox.create (with metadata and a timeout, as E2B's
// programs create) to the first command's result with the warm pool
// (waiting, outside the measurement, for the pool to refill); and
// the same work as an E2B command through sandboxd's process API.
// Prints one JSON line of milliseconds.
import { Sandbox } from 'e2b'

const n = Number(process.env.BENCH_N || 100)
const base = process.env.SANDBOX_URL
const token = process.env.E2B_API_KEY
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.round(s.length * p / 100) - 1))] }
const summary = (xs) => ({ p50: pct(xs, 50), p95: pct(xs, 95), p99: pct(xs, 99), n: xs.length })
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function poolReady() {
  for (let i = 0; i < 600; i++) {
    const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })
    const m = (await res.text()).match(/^sandboxd_warm_pool\{state="ready"\} (\d+)/m)
    if (m && Number(m[1]) > 0) return
    await sleep(50)
  }
}

const sbx = await Sandbox.create({ timeoutMs: 3_600_000 })
const e2b = []
const own = []
for (let i = 0; i < 10; i++) await sbx.commands.run('true') // warm up both paths
const exec = async () => {
  const res = await fetch(`${base}/v1/sandboxes/${sbx.sandboxId}/exec`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'true' }),
  })
  const body = await res.json()
  if (body.exitCode !== 0) throw new Error(JSON.stringify(body))
}
// The same work as an E2B command through sandboxd's own process API: a
// login process (bash -l -c true) as user, and its log stream to the
// exit. run minus this is what the layer adds.
const auth = { authorization: `Bearer ${token}` }
const proc = async () => {
  const res = await fetch(`${base}/v1/sandboxes/${sbx.sandboxId}/processes`, {
    method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'true', login: true, user: 'user', cwd: '/home/user', autoCleanup: true }),
  })
  const p = await res.json()
  const logs = await fetch(`${base}/v1/sandboxes/${sbx.sandboxId}/processes/${p.id}/logs/stream`, { headers: auth })
  const text = await logs.text()
  if (!text.includes('event: exit')) throw new Error(text)
}
const own2 = []
for (let i = 0; i < 10; i++) { await exec(); await proc() }
for (let i = 0; i < n; i++) {
  let t = performance.now()
  await sbx.commands.run('true')
  e2b.push(performance.now() - t)
  t = performance.now()
  await exec()
  own.push(performance.now() - t)
  t = performance.now()
  await proc()
  own2.push(performance.now() - t)
}
await sbx.kill()

const create = []
for (let i = 0; i < n; i++) {
  await poolReady()
  const t = performance.now()
  const s = await Sandbox.create({ metadata: { bench: 'e2b' }, timeoutMs: 60_000 })
  await s.commands.run('true')
  create.push(performance.now() - t)
  await s.kill()
}
console.log(JSON.stringify({ run: summary(e2b), exec: summary(own), process: summary(own2), createToFirstResult: summary(create) }))
