// The console's only way to the daemon: the public HTTP API, with the
// token the user signed in with.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(code ? `${code}: ${message}` : message);
    this.status = status;
    this.code = code;
  }
}

export class API {
  constructor(token) {
    this.token = token;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  async call(method, path, body) {
    const init = { method, headers: this.headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (!resp.ok) throw await apiError(resp);
    if (resp.status === 204) return null;
    return resp.json();
  }

  sandboxPath(id, rest = "") {
    return `/v1/sandboxes/${encodeURIComponent(id)}${rest}`;
  }

  health() { return this.call("GET", "/v1/health"); }
  list() { return this.call("GET", "/v1/sandboxes"); }
  ensure(id) { return this.call("PUT", this.sandboxPath(id), {}); }
  destroy(id) { return this.call("DELETE", this.sandboxPath(id)); }
  ports(id) { return this.call("GET", this.sandboxPath(id, "/ports")); }
  expose(id, req) { return this.call("POST", this.sandboxPath(id, "/ports"), req); }
  unexpose(id, port) { return this.call("DELETE", this.sandboxPath(id, `/ports/${port}`)); }
  link(id, port) { return this.call("POST", this.sandboxPath(id, `/ports/${port}/links`), {}); }

  // exec runs a command and returns its result with stdout and stderr as
  // bytes (Uint8Array), whatever their encoding on the wire.
  async exec(id, command, opts = {}) {
    const res = await this.call("POST", this.sandboxPath(id, "/exec"), { command, ...opts });
    const decode = (s) => (res.encoding === "base64" ? fromBase64(s) : new TextEncoder().encode(s));
    return { ...res, stdoutBytes: decode(res.stdout), stderrBytes: decode(res.stderr) };
  }

  // Files, through the file API: listing as JSON, contents as raw bytes
  // streamed both ways (no size cap but the disk).
  listFiles(id, path) {
    return this.call("POST", this.sandboxPath(id, "/files/list"), { path, includeHidden: true });
  }
  async readFile(id, path, limit) {
    const headers = this.headers();
    if (limit) headers.Range = `bytes=0-${limit - 1}`;
    const resp = await fetch(this.sandboxPath(id, `/files/raw?${new URLSearchParams({ path })}`), { headers });
    if (!resp.ok) throw await apiError(resp);
    return new Uint8Array(await resp.arrayBuffer());
  }
  async writeFile(id, path, blob) {
    const resp = await fetch(this.sandboxPath(id, `/files/raw?${new URLSearchParams({ path })}`), {
      method: "PUT",
      headers: this.headers({ "Content-Type": "application/octet-stream" }),
      body: blob,
    });
    if (!resp.ok) throw await apiError(resp);
    return resp.json();
  }

  // Background processes.
  processes(id) { return this.call("GET", this.sandboxPath(id, "/processes")); }
  startProcess(id, command) { return this.call("POST", this.sandboxPath(id, "/processes"), { command }); }
  killProcess(id, pid) {
    return this.call("POST", this.sandboxPath(id, `/processes/${encodeURIComponent(pid)}/kill`), {});
  }

  // followProcess streams a process's output (what it printed so far, then
  // live) and calls onEvent for each event until its exit event, or until
  // signal aborts the stream (the process goes on).
  async followProcess(id, pid, onEvent, signal) {
    const resp = await fetch(this.sandboxPath(id, `/processes/${encodeURIComponent(pid)}/logs/stream`), {
      headers: this.headers({ Accept: "text/event-stream" }),
      signal,
    });
    if (!resp.ok) throw await apiError(resp);
    await readEvents(resp, onEvent);
  }

  // terminalURL is the WebSocket address of a terminal. Browsers cannot
  // set headers on WebSockets, so the token travels as a subprotocol
  // (see terminalProtocols).
  terminalURL(id, params) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.sandboxPath(id, "/terminal")}?${new URLSearchParams(params)}`;
  }

  terminalProtocols() {
    return ["sandboxd.terminal.v1", `sandboxd.token.${this.token}`];
  }
}

async function apiError(resp) {
  let code = "";
  let message = resp.statusText;
  try {
    const e = await resp.json();
    code = e.code || "";
    message = e.message || message;
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(resp.status, code, message);
}

// readEvents calls onEvent with the JSON data of each server-sent event of
// resp until the stream ends. (EventSource cannot send the token.)
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = raw.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

export function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

