// Drives sandboxd's E2B layer with the official, unchanged E2B JS SDK
// (npm "e2b", pinned by package-lock.json). Run by e2e.TestE2B against a
// real daemon, with E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL set to the
// daemon's token and http://HOST:PORT/e2b, and E2B_TEST_LISTEN to HOST:PORT
// (for host-routed requests, sent there with their Host header).
//
// One sandbox is shared by the command, PTY, file and host tests; the
// lifecycle tests make small ones of their own.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import {
  Sandbox, CommandExitError, TimeoutError, SandboxNotFoundError, NotFoundError,
  FileNotFoundError, FileType, FilesystemEventType, AuthenticationError, ALL_TRAFFIC,
} from 'e2b'

const listen = process.env.E2B_TEST_LISTEN
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// waitFor polls cond until it holds (bounded for a loaded machine).
async function waitFor(what, cond, ms = 60000) {
  const end = Date.now() + ms
  for (;;) {
    if (await cond()) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

// hostRequest sends a request to the daemon's listener with a Host header
// (getHost and host-routed envd names resolve there).
function hostRequest(host, path, { method = 'GET', headers = {}, body } = {}) {
  const [hostname, port] = listen.split(':')
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, path, method, headers: { ...headers, host } }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }))
    })
    req.on('error', reject)
    if (body) req.write(body)
    req.end()
  })
}

let sbx
before(async () => {
  sbx = await Sandbox.create({ timeoutMs: 600_000, envs: { SANDBOX_LEVEL: 'from-create' } })
})
after(async () => {
  if (sbx) await sbx.kill()
})

describe('commands', () => {
  test('run: stdout, stderr, exit code 0, default user and home', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2; whoami; pwd; echo $HOME')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out\nuser\n/home/user\n/home/user\n')
    assert.equal(r.stderr, 'err\n')
  })

  test('run: envs, cwd, user root, sandbox envVars', async () => {
    const r = await sbx.commands.run('echo $GREETING $SANDBOX_LEVEL; pwd; whoami', { envs: { GREETING: 'hi' }, cwd: '/tmp', user: 'root' })
    assert.equal(r.stdout, 'hi from-create\n/tmp\nroot\n')
  })

  test('run: non-zero exit raises CommandExitError with the output', async () => {
    await assert.rejects(sbx.commands.run('echo partial; echo oops >&2; exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError, `got ${err}`)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stdout, 'partial\n')
      assert.equal(err.stderr, 'oops\n')
      return true
    })
  })

  test('run: timeoutMs kills the command and raises TimeoutError', async () => {
    await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1000 }), TimeoutError)
    // envd kills a command at its deadline (the client's leaving alone
    // would not).
    await waitFor('the timed-out command to be killed', async () =>
      !(await sbx.commands.list()).some((p) => p.args?.includes('sleep 30')), 15000)
  })

  test('run: onStdout and onStderr stream in order, live', async () => {
    // The command writes its second half only once the test has seen the
    // first (it waits for a file the test writes then): output is live,
    // and each stream keeps its order, with no timing assumed.
    const seen = []
    const text = (k) => seen.filter(([x]) => x === k).map(([, d]) => d).join('')
    const cmd = 'rm -f /tmp/go; echo out1; echo err1 >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo out2; echo err2 >&2'
    const run = sbx.commands.run(cmd, { onStdout: (d) => seen.push(['out', d]), onStderr: (d) => seen.push(['err', d]), user: 'root' })
    await waitFor('the first half, live', () => text('out') === 'out1\n' && text('err') === 'err1\n')
    const firstHalf = seen.length
    await sbx.files.write('/tmp/go', '', { user: 'root' })
    const r = await run
    assert.equal(text('out'), 'out1\nout2\n')
    assert.equal(text('err'), 'err1\nerr2\n')
    assert.equal(r.stdout, 'out1\nout2\n')
    assert.equal(r.stderr, 'err1\nerr2\n')
    assert.ok(seen.slice(firstHalf).every(([, d]) => !d.includes('1')), JSON.stringify(seen))
  })

  test('stdin is closed unless asked for', async () => {
    const r = await sbx.commands.run('cat; echo done')
    assert.equal(r.stdout, 'done\n')
  })

  test('background: list, sendStdin, connect, kill, wait', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true })
    assert.ok(h.pid > 0)
    const list = await sbx.commands.list()
    const mine = list.find((p) => p.pid === h.pid)
    assert.ok(mine, `pid ${h.pid} not in ${JSON.stringify(list)}`)
    assert.equal(mine.cmd, '/bin/bash')
    assert.deepEqual(mine.args, ['-l', '-c', 'cat'])

    await sbx.commands.sendStdin(h.pid, 'line one\n')
    await waitFor('stdin echoed', () => h.stdout.includes('line one\n'))

    // A second client attaches and sees only what comes after.
    const seen = []
    const h2 = await sbx.commands.connect(h.pid, { onStdout: (d) => seen.push(d) })
    await sbx.commands.sendStdin(h.pid, 'line two\n')
    await waitFor('live output on the attached handle', () => seen.join('').includes('line two\n'))
    assert.ok(!seen.join('').includes('line one'), 'connect replayed earlier output')

    assert.equal(await sbx.commands.kill(h.pid), true)
    await assert.rejects(h.wait(), CommandExitError)
    await assert.rejects(h2.wait(), CommandExitError)
    assert.equal(await sbx.commands.kill(h.pid), false)
    await assert.rejects(sbx.commands.connect(h.pid), NotFoundError)
  })

  test('background: wait returns the result', async () => {
    const h = await sbx.commands.run('sleep 0.3; echo finished', { background: true })
    const r = await h.wait()
    assert.equal(r.stdout, 'finished\n')
    assert.equal(r.exitCode, 0)
  })
})

describe('pty', () => {
  test('create, sendInput, resize, kill', async () => {
    let out = ''
    const dec = new TextDecoder()
    const p = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += dec.decode(d) } })
    assert.ok(p.pid > 0)
    await sbx.pty.sendInput(p.pid, new TextEncoder().encode('echo pty-$((6*7)); stty size\n'))
    await waitFor('pty output', () => out.includes('pty-42') && out.includes('24 80'))
    await sbx.pty.resize(p.pid, { cols: 100, rows: 30 })
    await sbx.pty.sendInput(p.pid, new TextEncoder().encode('stty size\n'))
    await waitFor('resized', () => out.includes('30 100'))
    assert.ok((await sbx.commands.list()).some((x) => x.pid === p.pid), 'the pty is not listed')
    assert.equal(await sbx.pty.kill(p.pid), true)
    await p.wait().catch(() => {})
  })
})

describe('files', () => {
  test('write and read text, bytes, blob, stream; owner is the user', async () => {
    const info = await sbx.files.write('/home/user/dir/a.txt', 'hello')
    assert.equal(info.path, '/home/user/dir/a.txt')
    assert.equal(await sbx.files.read('/home/user/dir/a.txt'), 'hello')
    const bin = new Uint8Array([0, 1, 2, 255])
    await sbx.files.write('rel.bin', bin) // relative: the user's home
    assert.deepEqual(await sbx.files.read('/home/user/rel.bin', { format: 'bytes' }), bin)
    const blob = await sbx.files.read('/home/user/rel.bin', { format: 'blob' })
    assert.equal(blob.size, 4)
    const stream = await sbx.files.read('/home/user/dir/a.txt', { format: 'stream' })
    let text = ''
    for await (const chunk of stream) text += new TextDecoder().decode(chunk)
    assert.equal(text, 'hello')
    const st = await sbx.files.getInfo('/home/user/dir/a.txt')
    assert.equal(st.type, FileType.FILE)
    assert.equal(st.size, 5)
    assert.equal(st.owner, 'user')
    assert.equal(st.permissions, '-rw-r--r--')
    // Empty file.
    await sbx.files.write('/home/user/empty', '')
    assert.equal(await sbx.files.read('/home/user/empty'), '')
  })

  test('write several files at once; stream upload', async () => {
    const res = await sbx.files.write([
      { path: '/home/user/multi/one.txt', data: '1' },
      { path: '/home/user/multi/two.txt', data: '2' },
    ])
    assert.equal(res.length, 2)
    assert.equal(await sbx.files.read('/home/user/multi/two.txt'), '2')
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('streamed')); c.close() } })
    await sbx.files.write('/home/user/multi/s.txt', stream)
    assert.equal(await sbx.files.read('/home/user/multi/s.txt'), 'streamed')
  })

  test('list with depth, makeDir, exists, rename, remove', async () => {
    assert.equal(await sbx.files.makeDir('/home/user/tree/a/b'), true)
    assert.equal(await sbx.files.makeDir('/home/user/tree/a/b'), false)
    await sbx.files.write('/home/user/tree/a/b/deep.txt', 'x')
    await sbx.files.write('/home/user/tree/.hidden', 'h')
    const one = await sbx.files.list('/home/user/tree')
    assert.deepEqual(one.map((e) => e.name).sort(), ['.hidden', 'a'])
    const three = await sbx.files.list('/home/user/tree', { depth: 3 })
    assert.deepEqual(three.map((e) => e.path).sort(), [
      '/home/user/tree/.hidden', '/home/user/tree/a', '/home/user/tree/a/b', '/home/user/tree/a/b/deep.txt',
    ])
    assert.equal(three.find((e) => e.name === 'a').type, FileType.DIR)
    assert.equal(await sbx.files.exists('/home/user/tree/a/b/deep.txt'), true)
    assert.equal(await sbx.files.exists('/home/user/tree/nope'), false)
    const moved = await sbx.files.rename('/home/user/tree/a/b/deep.txt', '/home/user/tree/new/place.txt')
    assert.equal(moved.path, '/home/user/tree/new/place.txt')
    assert.equal(await sbx.files.read('/home/user/tree/new/place.txt'), 'x')
    await sbx.files.remove('/home/user/tree')
    assert.equal(await sbx.files.exists('/home/user/tree'), false)
    await sbx.files.remove('/home/user/tree') // missing is fine
  })

  test('missing files raise the SDK errors', async () => {
    await assert.rejects(sbx.files.read('/home/user/missing.txt'), (e) => e instanceof FileNotFoundError || e instanceof NotFoundError)
    await assert.rejects(sbx.files.getInfo('/home/user/missing.txt'), NotFoundError)
    await assert.rejects(sbx.files.list('/home/user/missing-dir'), NotFoundError)
  })

  test('watchDir recursive reports changes relative to the directory', async () => {
    await sbx.files.makeDir('/home/user/watched/sub')
    const events = []
    const w = await sbx.files.watchDir('/home/user/watched', (e) => events.push(e), { recursive: true })
    await sbx.files.write('/home/user/watched/sub/f.txt', 'x')
    await sbx.files.remove('/home/user/watched/sub/f.txt')
    await waitFor('watch events', () => events.some((e) => e.name === 'sub/f.txt' && e.type === FilesystemEventType.REMOVE))
    assert.ok(events.some((e) => e.name === 'sub/f.txt' && e.type === FilesystemEventType.CREATE), JSON.stringify(events))
    await w.stop()
  })

  test('uploadUrl and downloadUrl are signed and work without the SDK', async () => {
    const up = await sbx.uploadUrl('/home/user/signed.txt')
    const form = new FormData()
    form.append('file', new Blob(['via signed url']), 'ignored-name')
    let res = await fetch(up, { method: 'POST', body: form })
    assert.equal(res.status, 200, await res.clone().text())
    const down = await sbx.downloadUrl('/home/user/signed.txt')
    res = await fetch(down)
    assert.equal(await res.text(), 'via signed url')
    // A tampered signature is refused.
    const bad = new URL(down)
    bad.searchParams.set('path', '/etc/shadow')
    res = await fetch(bad)
    assert.equal(res.status, 401)
    // An expiring one works until it expires.
    const soon = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 60 })
    assert.equal((await fetch(soon)).status, 200)
    // The host-routed envd name (the SDK's form without sandboxUrl) serves
    // signed URLs too, and refuses a tampered one.
    const envd = `49983-${sbx.sandboxId}.${sbx.sandboxDomain}`
    const signed = new URL(down)
    const routed = await hostRequest(envd, '/files' + signed.search)
    assert.equal(routed.status, 200, routed.body)
    assert.equal(routed.body, 'via signed url')
    assert.equal((await hostRequest(envd, '/files' + bad.search)).status, 401)
  })
})

describe('host routing', () => {
  test('getHost reaches a server in the sandbox; 49983-<id> is envd', async () => {
    await sbx.commands.run('cd /tmp && echo served > index.html && python3 -m http.server 8000', { background: true, timeoutMs: 0 })
    const host = sbx.getHost(8000)
    assert.equal(host, `8000-${sbx.sandboxId}.${sbx.sandboxDomain}`)
    let res
    await waitFor('the server', async () => {
      res = await hostRequest(host, '/index.html')
      return res.status === 200
    })
    assert.equal(res.body, 'served\n')
    const envd = await hostRequest(`49983-${sbx.sandboxId}.${sbx.sandboxDomain}`, '/health')
    assert.equal(envd.status, 204)
  })
})

describe('lifecycle', () => {
  test('getInfo, metadata, setTimeout, getMetrics, isRunning, kill', async () => {
    const s = await Sandbox.create({ metadata: { suite: 'e2b', role: 'info' }, timeoutMs: 120_000 })
    try {
      const info = await s.getInfo()
      assert.equal(info.sandboxId, s.sandboxId)
      assert.deepEqual(info.metadata, { suite: 'e2b', role: 'info' })
      assert.equal(info.state, 'running')
      assert.ok(info.endAt - info.startedAt >= 119_000 && info.endAt - info.startedAt <= 121_000)
      await s.setTimeout(600_000)
      const later = await s.getInfo()
      assert.ok(later.endAt.getTime() - Date.now() > 500_000, `endAt ${later.endAt}`)
      const metrics = await s.getMetrics()
      assert.equal(metrics.length, 1)
      assert.ok(metrics[0].memUsed > 0 && metrics[0].memTotal >= metrics[0].memUsed, JSON.stringify(metrics))
      assert.ok(metrics[0].diskTotal > 0 && metrics[0].cpuCount >= 1, JSON.stringify(metrics))
      assert.ok(typeof metrics[0].cpuUsedPct === 'number' && metrics[0].cpuUsedPct >= 0, JSON.stringify(metrics))
      // Metadata are the sandbox's sandboxd labels.
      const api = process.env.E2B_API_URL.replace(/\/e2b$/, '')
      const own = await (await fetch(`${api}/v1/sandboxes/${s.sandboxId}`, {
        headers: { authorization: `Bearer ${process.env.E2B_API_KEY}` },
      })).json()
      assert.equal(own.labels?.suite, 'e2b', JSON.stringify(own.labels))
      assert.equal(own.labels?.role, 'info', JSON.stringify(own.labels))
      assert.equal(await s.isRunning(), true)
    } finally {
      assert.equal(await s.kill(), true)
    }
    assert.equal(await s.isRunning(), false)
    assert.equal(await s.kill(), false)
    assert.equal(await Sandbox.kill(s.sandboxId), false)
    await assert.rejects(Sandbox.getInfo(s.sandboxId), SandboxNotFoundError)
    await assert.rejects(Sandbox.connect(s.sandboxId), SandboxNotFoundError)
    // E2B's SDK reads envd's 502 for a sandbox that is gone as this.
    await assert.rejects(s.commands.run('true'), SandboxNotFoundError)
  })

  test('a create without a timeout lives 300 s', async () => {
    // The SDK always sends one; E2B's API defaults it to 300 s.
    const api = process.env.E2B_API_URL
    const headers = { 'x-api-key': process.env.E2B_API_KEY, 'content-type': 'application/json' }
    const res = await fetch(`${api}/sandboxes`, { method: 'POST', headers, body: '{}' })
    assert.equal(res.status, 201, await res.clone().text())
    const { sandboxID } = await res.json()
    try {
      const info = await Sandbox.getInfo(sandboxID)
      assert.equal(info.endAt - info.startedAt, 300_000)
    } finally {
      assert.equal(await Sandbox.kill(sandboxID), true)
    }
  })

  test('a template names a sandboxd image', { skip: !process.env.E2B_TEST_TEMPLATE && 'no template image (needs busybox-static)' }, async () => {
    const tpl = process.env.E2B_TEST_TEMPLATE
    const s = await Sandbox.create(tpl, { timeoutMs: 60_000 })
    try {
      assert.equal((await s.getInfo()).templateId, tpl)
      assert.equal(await s.files.read('/etc/e2b-template', { user: 'root' }), 'from the template\n')
    } finally {
      await s.kill()
    }
    await assert.rejects(Sandbox.create('no-such-template', { timeoutMs: 60_000 }))
  })

  test('list filters by metadata and state and pages with X-Next-Token', async () => {
    const tag = `run${Date.now()}`
    const made = await Promise.all([0, 1, 2].map(() => Sandbox.create({ metadata: { page: tag }, timeoutMs: 120_000 })))
    try {
      await made[2].pause()
      const p = Sandbox.list({ query: { metadata: { page: tag } }, limit: 2 })
      const first = await p.nextItems()
      assert.equal(first.length, 2)
      assert.equal(p.hasNext, true)
      const second = await p.nextItems()
      assert.equal(second.length, 1)
      assert.equal(p.hasNext, false)
      assert.deepEqual([...first, ...second].map((x) => x.sandboxId).sort(), made.map((x) => x.sandboxId).sort())
      const paused = await Sandbox.list({ query: { metadata: { page: tag }, state: ['paused'] } }).nextItems()
      assert.deepEqual(paused.map((x) => x.sandboxId), [made[2].sandboxId])
      const running = await Sandbox.list({ query: { metadata: { page: tag }, state: ['running'] } }).nextItems()
      assert.equal(running.length, 2)
    } finally {
      await Promise.all(made.map((x) => x.kill()))
    }
  })

  test('network allowOut/denyOut become the egress policy, at create and by updateNetwork', async () => {
    const api = process.env.E2B_API_URL.replace(/\/e2b$/, '')
    const policy = async (id) => (await (await fetch(`${api}/v1/sandboxes/${id}/network`, {
      headers: { authorization: `Bearer ${process.env.E2B_API_KEY}` },
    })).json()).policy
    const s = await Sandbox.create({ timeoutMs: 60_000, network: { denyOut: [ALL_TRAFFIC], allowOut: ['1.1.1.1', 'example.com'] } })
    try {
      let p = await policy(s.sandboxId)
      assert.equal(p.default, 'deny')
      assert.deepEqual(p.allowCidrs, ['1.1.1.1/32'])
      assert.deepEqual(p.allowDomains, ['example.com'])
      await s.updateNetwork({ denyOut: ['10.1.2.0/24', 'ads.example.com'] })
      p = await policy(s.sandboxId)
      assert.equal(p.default, 'allow')
      assert.deepEqual(p.denyCidrs, ['10.1.2.0/24'])
      assert.deepEqual(p.denyDomains, ['ads.example.com'])
      assert.deepEqual(p.allowDomains ?? [], [])
    } finally {
      await s.kill()
    }
  })

  test('timeout kills; autoPause pauses and connect resumes with files kept', async () => {
    const killed = await Sandbox.create({ timeoutMs: 1000 })
    const paused = await Sandbox.create({ timeoutMs: 1000, lifecycle: { onTimeout: 'pause' } })
    await paused.files.write('/home/user/kept.txt', 'kept')
    await waitFor('the timeout to kill', async () => !(await killed.isRunning()))
    await waitFor('the timeout to pause', async () => (await paused.getInfo()).state === 'paused')
    assert.equal((await paused.getInfo()).lifecycle.onTimeout, 'pause')
    assert.equal(await paused.isRunning(), false)
    assert.equal(await paused.pause(), false) // already paused
    const again = await Sandbox.connect(paused.sandboxId, { timeoutMs: 60_000 })
    assert.equal((await again.getInfo()).state, 'running')
    assert.equal(await again.files.read('/home/user/kept.txt'), 'kept')
    assert.equal(await again.pause(), true)
    await again.connect()
    assert.equal((await again.commands.run('cat kept.txt')).stdout, 'kept')
    await again.kill()
  })
})

describe('auth', () => {
  test('a wrong API key is refused with AuthenticationError', async () => {
    await assert.rejects(Sandbox.create({ apiKey: 'not-the-key' }), AuthenticationError)
    await assert.rejects(Sandbox.list({ apiKey: 'not-the-key' }).nextItems(), AuthenticationError)
  })

  test('envd calls need the sandbox access token', async () => {
    const base = process.env.E2B_SANDBOX_URL
    const call = (token) => fetch(`${base}/process.Process/List`, {
      method: 'POST', body: '{}',
      headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sbx.sandboxId, ...(token ? { 'x-access-token': token } : {}) },
    })
    assert.equal((await call()).status, 401)
    assert.equal((await call('0'.repeat(40))).status, 401)
    // The token of another sandbox does not open this one.
    const other = await Sandbox.create({ timeoutMs: 60_000 })
    try {
      assert.ok(other.envdAccessToken)
      assert.equal((await call(other.envdAccessToken)).status, 401)
    } finally {
      await other.kill()
    }
  })

  test('allowPublicTraffic false: getHost needs the traffic access token', async () => {
    const s = await Sandbox.create({ timeoutMs: 120_000, network: { allowPublicTraffic: false } })
    try {
      assert.ok(s.trafficAccessToken, 'no traffic token in the create answer')
      await s.commands.run('cd /tmp && echo private > index.html && python3 -m http.server 8001', { background: true, timeoutMs: 0 })
      const host = s.getHost(8001)
      let res
      await waitFor('the server', async () => {
        res = await hostRequest(host, '/index.html', { headers: { 'e2b-traffic-access-token': s.trafficAccessToken } })
        return res.status === 200
      })
      assert.equal(res.body, 'private\n')
      assert.equal((await hostRequest(host, '/index.html')).status, 403)
      assert.equal((await hostRequest(host, '/index.html', { headers: { 'e2b-traffic-access-token': 'x' } })).status, 403)
    } finally {
      await s.kill()
    }
  })

  test("a tenant's key is an E2B API key: its sandboxes are its own", async () => {
    const keyA = process.env.E2B_TENANT_KEY_A
    const keyB = process.env.E2B_TENANT_KEY_B
    const v1 = process.env.E2B_API_URL.replace(/\/e2b$/, '') + '/v1/sandboxes/'
    const ids = async (opts) => (await Sandbox.list(opts).nextItems()).map((s) => s.sandboxId)
    const a = await Sandbox.create({ apiKey: keyA, timeoutMs: 120_000 })
    try {
      assert.equal((await a.commands.run('echo mine')).stdout, 'mine\n')
      // In sandboxd it is team-a's sandbox, which team-b's key cannot name.
      const asA = await fetch(v1 + a.sandboxId, { headers: { authorization: `Bearer ${keyA}` } })
      assert.equal(asA.status, 200)
      assert.equal((await asA.json()).tenant, 'team-a')
      assert.equal((await fetch(v1 + a.sandboxId, { headers: { authorization: `Bearer ${keyB}` } })).status, 404)
      assert.ok((await ids({ apiKey: keyA })).includes(a.sandboxId))
      assert.ok(!(await ids({ apiKey: keyB })).includes(a.sandboxId))
      assert.ok(!(await ids()).includes(a.sandboxId), 'the admin namespace lists it')
      await assert.rejects(Sandbox.getInfo(a.sandboxId, { apiKey: keyB }), SandboxNotFoundError)
      await assert.rejects(Sandbox.connect(a.sandboxId, { apiKey: keyB }), SandboxNotFoundError)
      await assert.rejects(Sandbox.setTimeout(a.sandboxId, 1000, { apiKey: keyB }))
      assert.equal(await Sandbox.kill(a.sandboxId, { apiKey: keyB }), false)
      assert.equal(await Sandbox.kill(a.sandboxId), false)
      assert.equal((await a.commands.run('echo still')).stdout, 'still\n')
      const info = await Sandbox.getInfo(a.sandboxId, { apiKey: keyA })
      assert.equal(info.state, 'running')
    } finally {
      assert.equal(await Sandbox.kill(a.sandboxId, { apiKey: keyA }), true)
    }
  })
})
