// The client: one daemon's URL and token, the HTTP plumbing every call goes
// through, and the daemon-wide calls (health, list, images, events).

import { errorFromResponse, SandboxError, UnavailableError } from "./errors.js";
import { EventStream } from "./sse.js";
import { Sandbox } from "./sandbox.js";
import type {
  BackupInfo, Health, ImageInfo, KeyCreated, KeyInfo, LifecycleEvent, Quotas, SandboxInfo, SandboxOptions, SandboxPage, SandboxStatus,
  SnapshotInfo,
} from "./types.js";

/** The daemon's address when SANDBOX_URL is not set. */
export const DEFAULT_URL = "http://127.0.0.1:7070";

/** Error bodies are read up to this size. */
const MAX_ERROR_BODY = 1 << 20;

export interface ClientOptions {
  /** The daemon's base URL (default `http://127.0.0.1:7070`); a path is kept as a prefix. */
  url?: string;
  /** The API token (`<state-dir>/token` of the daemon). */
  token?: string;
  /** A fetch implementation (default: the global fetch). */
  fetch?: typeof fetch;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

/** Options every call takes. */
export interface CallOptions {
  /** Cancels the call; for a stream, ends it and closes its connection. */
  signal?: AbortSignal;
}

export interface ListSandboxesOptions extends CallOptions {
  /** Only sandboxes that carry every one of these labels (at most 16; filtered by the daemon). */
  labels?: Record<string, string>;
  /** Only sandboxes in this state (by the daemon), or in one of these states. */
  status?: SandboxStatus | SandboxStatus[];
}

export interface ListPageOptions extends CallOptions {
  labels?: Record<string, string>;
  status?: SandboxStatus;
  /** 1 to 1000 (the daemon's default: 1000). */
  limit?: number;
  /** The previous page's nextPageToken. */
  pageToken?: string;
  /** Admins: one tenant's sandboxes ("default": the admin namespace's). */
  tenant?: string;
}

export interface CreateKeyOptions extends CallOptions, Quotas {
  /** An admin key: the admin namespace, every tenant, no quotas. */
  admin?: boolean;
}

/** @internal What a request needs. */
export interface RequestInit2 extends CallOptions {
  method: string;
  path: string;
  json?: unknown;
  body?: BodyInit | ReadableStream<Uint8Array> | Uint8Array;
  contentType?: string;
  accept?: string;
  headers?: Record<string, string>;
  query?: Record<string, string | number | boolean | string[] | undefined>;
}

function envVar(name: string): string | undefined {
  const g = globalThis as { process?: { env?: Record<string, string | undefined> }; Deno?: { env: { get(n: string): string | undefined } } };
  try {
    return g.process?.env?.[name] ?? g.Deno?.env.get(name);
  } catch {
    return undefined; // Deno without --allow-env
  }
}

export class SandboxClient {
  readonly url: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;
  readonly #headers: Record<string, string>;

  constructor(options: ClientOptions = {}) {
    const raw = options.url || DEFAULT_URL;
    const u = new URL(raw);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`sandboxd URL ${raw}: want http or https`);
    this.url = u.toString().replace(/\/+$/, "");
    this.#token = options.token || undefined;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#headers = { ...(options.headers ?? {}) };
  }

  /** @internal The API token, for WebSocket subprotocols. */
  get token(): string | undefined {
    return this.#token;
  }

  /** A client for `$SANDBOX_URL` (default `http://127.0.0.1:7070`) with `$SANDBOX_TOKEN`; `options` win. */
  static fromEnv(options: ClientOptions = {}): SandboxClient {
    return new SandboxClient({ url: envVar("SANDBOX_URL"), token: envVar("SANDBOX_TOKEN"), ...stripUndefined(options) });
  }

  /** A handle to the sandbox `id`, like the reference's getSandbox. No I/O: the first call creates it (with `options`). */
  sandbox(id: string, options?: SandboxOptions): Sandbox {
    return new Sandbox(this, id, options);
  }

  /** `{status, version, runtime}` of the daemon. */
  health(options: CallOptions = {}): Promise<Health> {
    return this.request<Health>({ method: "GET", path: "/v1/health", ...options });
  }

  /** Every sandbox the key sees, ordered by ID, every page; `labels` and `status` filter them. */
  async listSandboxes(options: ListSandboxesOptions = {}): Promise<SandboxInfo[]> {
    const many = Array.isArray(options.status) ? new Set(options.status) : undefined;
    const status = Array.isArray(options.status) ? undefined : options.status;
    const out: SandboxInfo[] = [];
    let pageToken: string | undefined;
    do {
      const page = await this.listSandboxesPage({ labels: options.labels, status, pageToken, signal: options.signal });
      out.push(...page.sandboxes.filter((s) => !many || many.has(s.status)));
      pageToken = page.nextPageToken;
    } while (pageToken);
    return out;
  }

  /** One page of sandboxes (docs/tenants.md#list-filter-and-page). */
  async listSandboxesPage(options: ListPageOptions = {}): Promise<SandboxPage> {
    const page = await this.request<SandboxPage>({
      method: "GET", path: "/v1/sandboxes", signal: options.signal,
      query: {
        label: Object.entries(options.labels ?? {}).map(([k, v]) => `${k}=${v}`),
        status: options.status, limit: options.limit, pageToken: options.pageToken, tenant: options.tenant,
      },
    });
    return { sandboxes: page.sandboxes ?? [], nextPageToken: page.nextPageToken || undefined };
  }

  /** Creates the API key `name` (admin keys only); its secret is in the answer, once. */
  createKey(name: string, options: CreateKeyOptions = {}): Promise<KeyCreated> {
    const { signal, admin, ...quotas } = options;
    return this.request<KeyCreated>({ method: "POST", path: "/v1/keys", json: { name, admin: admin || undefined, quotas }, signal });
  }

  /** The API keys, with quotas and usage, never secrets (admin keys only). */
  async listKeys(options: CallOptions = {}): Promise<KeyInfo[]> {
    const r = await this.request<{ keys: KeyInfo[] }>({ method: "GET", path: "/v1/keys", ...options });
    return r.keys ?? [];
  }

  /** Removes a key: it fails from the next request on; its sandboxes stay. */
  async deleteKey(name: string, options: CallOptions = {}): Promise<void> {
    await this.request({ method: "DELETE", path: `/v1/keys/${encodeURIComponent(name)}`, ...options });
  }

  /** Gives a key a new secret; the old one fails from the next request on. */
  rotateKey(name: string, options: CallOptions = {}): Promise<KeyCreated> {
    return this.request<KeyCreated>({ method: "POST", path: `/v1/keys/${encodeURIComponent(name)}/rotate`, ...options });
  }

  /** The images the daemon has. */
  async listImages(options: CallOptions = {}): Promise<ImageInfo[]> {
    const r = await this.request<{ images: ImageInfo[] }>({ method: "GET", path: "/v1/images", ...options });
    return r.images ?? [];
  }

  /** One image; NotFoundError (`IMAGE_NOT_FOUND`) if absent. */
  getImage(name: string, options: CallOptions = {}): Promise<ImageInfo> {
    return this.request<ImageInfo>({ method: "GET", path: `/v1/images/${encodeURIComponent(name)}`, ...options });
  }

  /** Removes an image. */
  async deleteImage(name: string, options: CallOptions = {}): Promise<void> {
    await this.request({ method: "DELETE", path: `/v1/images/${encodeURIComponent(name)}`, ...options });
  }

  /** The caller's backups that have not expired, oldest first. */
  async listBackups(options: CallOptions = {}): Promise<BackupInfo[]> {
    const r = await this.request<{ backups: BackupInfo[] }>({ method: "GET", path: "/v1/backups", ...options });
    return r.backups ?? [];
  }

  /** One backup; NotFoundError (`BACKUP_NOT_FOUND`) if absent. */
  getBackup(id: string, options: CallOptions = {}): Promise<BackupInfo> {
    return this.request<BackupInfo>({ method: "GET", path: `/v1/backups/${encodeURIComponent(id)}`, ...options });
  }

  /** Removes a backup; sandboxes it was restored into keep their copy. */
  async deleteBackup(id: string, options: CallOptions = {}): Promise<void> {
    await this.request({ method: "DELETE", path: `/v1/backups/${encodeURIComponent(id)}`, ...options });
  }

  /** Every snapshot, by name. */
  async listSnapshots(options: CallOptions = {}): Promise<SnapshotInfo[]> {
    const r = await this.request<{ snapshots: SnapshotInfo[] }>({ method: "GET", path: "/v1/snapshots", ...options });
    return r.snapshots ?? [];
  }

  /** One snapshot; NotFoundError (`SNAPSHOT_NOT_FOUND`) if absent. */
  getSnapshot(name: string, options: CallOptions = {}): Promise<SnapshotInfo> {
    return this.request<SnapshotInfo>({ method: "GET", path: `/v1/snapshots/${encodeURIComponent(name)}`, ...options });
  }

  /** Removes a snapshot; ConflictError (`SNAPSHOT_IN_USE`) while a sandbox was created from it. */
  async deleteSnapshot(name: string, options: CallOptions = {}): Promise<void> {
    await this.request({ method: "DELETE", path: `/v1/snapshots/${encodeURIComponent(name)}`, ...options });
  }

  /** Lifecycle events (created, started, slept, woke, stopped, destroyed, failed), of one sandbox or all. Open-ended: close it or abort. */
  events(options: CallOptions & { sandbox?: string } = {}): Promise<EventStream<LifecycleEvent>> {
    return this.stream<LifecycleEvent>({ method: "GET", path: "/v1/events", query: { sandbox: options.sandbox }, signal: options.signal }, "lifecycle events", false);
  }

  /** @internal Sends a request and returns its 2xx response; any other answer becomes a SandboxError. */
  async send(req: RequestInit2): Promise<Response> {
    let url = this.url + req.path;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(req.query ?? {})) {
      if (v === undefined || v === "" || v === false) continue;
      for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
    }
    if ([...q.keys()].length > 0) url += (url.includes("?") ? "&" : "?") + q.toString();
    const headers: Record<string, string> = { "User-Agent": "sandboxd-js-sdk", ...this.#headers, ...(req.headers ?? {}) };
    if (this.#token) headers["Authorization"] = `Bearer ${this.#token}`;
    if (req.accept) headers["Accept"] = req.accept;
    let body: BodyInit | undefined;
    if (req.json !== undefined) {
      body = JSON.stringify(req.json);
      headers["Content-Type"] = "application/json";
    } else if (req.body !== undefined) {
      body = req.body as BodyInit;
      headers["Content-Type"] = req.contentType ?? "application/octet-stream";
    }
    const init: RequestInit & { duplex?: "half" } = { method: req.method, headers, body, signal: req.signal };
    if (body instanceof ReadableStream) init.duplex = "half"; // fetch needs this to stream a request body
    let resp: Response;
    try {
      resp = await this.#fetch(url, init);
    } catch (err) {
      if (req.signal?.aborted) throw req.signal.reason;
      throw new UnavailableError("", `${req.method} ${req.path}: cannot reach sandboxd at ${this.url}: ${(err as Error)?.message ?? err}`, 0, {}, { cause: err });
    }
    if (resp.ok) return resp;
    throw errorFromResponse(resp.status, resp.statusText, await readBounded(resp, MAX_ERROR_BODY, req.signal));
  }

  /** @internal A JSON call: sends `json`, parses the answer (undefined for 204). */
  async request<T = unknown>(req: RequestInit2): Promise<T> {
    const resp = await this.send({ accept: "application/json", ...req });
    try {
      if (resp.status === 204) return undefined as T;
      const text = await resp.text();
      return (text ? JSON.parse(text) : undefined) as T;
    } catch (err) {
      if (req.signal?.aborted) throw req.signal.reason;
      if (err instanceof SandboxError) throw err;
      throw new UnavailableError("", `${req.method} ${req.path}: reading the answer: ${(err as Error)?.message ?? err}`, 0, {}, { cause: err });
    }
  }

  /** @internal Opens an event stream; `mustEnd`: a stream that stops before its terminal event is an error (the lifecycle stream has none). */
  async stream<T extends { type: string }>(req: RequestInit2, what: string, mustEnd = true): Promise<EventStream<T>> {
    const resp = await this.send({ ...req, accept: "text/event-stream" });
    const ct = resp.headers.get("Content-Type") ?? "";
    if (!ct.startsWith("text/event-stream") || !resp.body) {
      await resp.body?.cancel().catch(() => {});
      throw new UnavailableError("", `${req.method} ${req.path}: the answer is not an event stream (${ct || "no Content-Type"})`, resp.status);
    }
    return new EventStream<T>(resp.body, what, mustEnd, req.signal);
  }
}

/** The reference's getSandbox: a handle to sandbox `id` of `client`. */
export function getSandbox(client: SandboxClient, id: string, options?: SandboxOptions): Sandbox {
  return client.sandbox(id, options);
}

async function readBounded(resp: Response, limit: number, signal?: AbortSignal): Promise<string> {
  if (!resp.body) return "";
  const reader = resp.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    while (n < limit) {
      const r = await reader.read();
      if (r.done) break;
      chunks.push(r.value);
      n += r.value.length;
    }
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
  } finally {
    await reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(Math.min(n, limit));
  let off = 0;
  for (const c of chunks) {
    const part = c.subarray(0, Math.min(c.length, all.length - off));
    all.set(part, off);
    off += part.length;
  }
  return new TextDecoder().decode(all);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
