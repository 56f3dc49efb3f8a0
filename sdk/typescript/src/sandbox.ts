// A sandbox handle with the reference Sandbox API's methods: commands,
// processes, files, sessions, ports, code interpreter, lifecycle. A handle
// does no I/O until its first call, which creates the sandbox on the
// daemon (with the handle's options, if any).

import type { CallOptions, RequestInit2, SandboxClient } from "./client.js";
import { bytesToBase64, chunkText, toBytes } from "./encoding.js";
import { errorFromCode, invalid, NotFoundError, SandboxError, UnavailableError } from "./errors.js";
import type { EventStream } from "./sse.js";
import type {
  CodeContext,
  CodeEvent,
  CodeLanguage,
  ExecEvent,
  ExecResult,
  ExecutionError,
  ExecutionResult,
  ExistsResult,
  ExposedPort,
  FileEntry,
  FileInfo,
  FileStreamEvent,
  GitCheckoutResult,
  ListFilesResult,
  NetworkPolicy,
  NetworkStatus,
  LogEvent,
  PreviewLink,
  ProcessInfo,
  ProcessLogs,
  ProcessStatus,
  Result,
  SandboxInfo,
  SandboxOptions,
  SessionInfo,
  SnapshotInfo,
  BackupInfo,
  RestoreInfo,
  TerminalInfo,
  WatchEvent,
  WriteFileResult,
} from "./types.js";

const SANDBOX_ID = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_COMMAND = 1 << 20;
const MAX_STDIN = 8 << 20;
const MAX_TIMEOUT = 24 * 3600 * 1000;
const MAX_BUFFERED = 16 << 20;

export interface ExecOptions extends CallOptions {
  /** Environment for this command only. */
  env?: Record<string, string>;
  /** Working directory for this command only. */
  cwd?: string;
  /** Kill the command's process tree after this many ms (≤ 24 h); exec then throws TimeoutError. */
  timeout?: number;
  /** Fed to the command, then closed (≤ 8 MiB). */
  stdin?: string | Uint8Array;
  /** Stream the output to the callbacks as it arrives. */
  stream?: boolean;
  /** Called per output chunk (implies streaming). */
  onOutput?: (stream: "stdout" | "stderr", data: string) => void;
  /** Called with the result when the command completed. */
  onComplete?: (result: ExecResult) => void;
  /** Called with the error that ended the command early. */
  onError?: (error: Error) => void;
  /** Run in this session instead of the handle's (default `default`). */
  sessionId?: string;
}

export interface ProcessOptions extends CallOptions {
  /** The process's ID (default: generated); unique in the sandbox. */
  processId?: string;
  env?: Record<string, string>;
  cwd?: string;
  /** SIGKILL the process tree after this many ms. */
  timeout?: number;
  /** Run as this user. */
  user?: string;
  /** Remove the record and logs 5 minutes after the process ends. */
  autoCleanup?: boolean;
  /** Run the command as a login shell (bash -l -c), as E2B's envd does. */
  login?: boolean;
  /** Close stdin as the process starts (it reads end of file). */
  closeStdin?: boolean;
  sessionId?: string;
}

export interface KillOptions extends CallOptions {
  /** Ms to wait after SIGTERM before SIGKILL (default 5000). */
  gracePeriod?: number;
}

export interface WaitForPortOptions extends CallOptions {
  /** `tcp` (default: a connection succeeds) or `http` (a GET answers statusMin-statusMax). */
  mode?: "tcp" | "http";
  path?: string;
  statusMin?: number;
  statusMax?: number;
  /** Ms (default 30000). */
  timeout?: number;
  /** Ms between tries (default 100). */
  interval?: number;
}

export interface WaitForLogOptions extends CallOptions {
  /** Ms (default 30000). */
  timeout?: number;
}

export interface WriteFileOptions extends CallOptions {
  /** How `content` (a string) is encoded: `utf-8` (default) or `base64`. */
  encoding?: "utf-8" | "utf8" | "base64";
  /** Make missing parent directories. */
  createParents?: boolean;
  /** Octal mode, e.g. `"0755"`. */
  mode?: string;
  uid?: number;
  gid?: number;
  sessionId?: string;
}

export interface ReadFileOptions extends CallOptions {
  /** `utf-8`, `base64`, or absent for auto (base64 for binary files). */
  encoding?: "utf-8" | "utf8" | "base64";
  sessionId?: string;
}

export interface PathOptions extends CallOptions {
  sessionId?: string;
}

export interface MkdirOptions extends PathOptions {
  recursive?: boolean;
  mode?: string;
}

export interface DeleteOptions extends PathOptions {
  recursive?: boolean;
}

export interface MoveOptions extends PathOptions {
  overwrite?: boolean;
}

export interface ListFilesOptions extends PathOptions {
  recursive?: boolean;
  includeHidden?: boolean;
}

export interface WatchOptions extends PathOptions {
  recursive?: boolean;
  include?: string[];
  exclude?: string[];
}

export interface GitCheckoutOptions extends PathOptions {
  branch?: string;
  targetDir?: string;
  depth?: number;
  /** Ms. */
  timeout?: number;
}

export interface SessionOptions extends CallOptions {
  /** Default: generated. */
  id?: string;
  env?: Record<string, string>;
  cwd?: string;
  /** Ms; applies to exec calls without a timeout. */
  commandTimeout?: number;
  /** Run the session's shell as this user. */
  user?: string;
}

export interface ExposePortOptions extends CallOptions {
  name?: string;
  /** The URL's token (12-16 of a-z0-9_); default random. */
  token?: string;
  /** false: the URL also needs the API token or a signed link. Default true. */
  public?: boolean;
}

export interface CreateContextOptions extends CallOptions {
  language?: CodeLanguage;
  cwd?: string;
  envVars?: Record<string, string>;
}

/** An output message of runCode's streaming callbacks. */
export interface OutputMessage {
  text: string;
  timestamp: string;
}

export interface RunCodeOptions extends CallOptions {
  /** The context (or its ID); default: the language's default context. */
  context?: CodeContext | string;
  language?: CodeLanguage;
  /** Ms (default 60000); the run is interrupted after it. */
  timeout?: number;
  onStdout?: (output: OutputMessage) => void;
  onStderr?: (output: OutputMessage) => void;
  onResult?: (result: Result) => void | Promise<void>;
  onError?: (error: ExecutionError) => void;
}

export interface TerminalOptions {
  /** The terminal's ID (default: the session's, else `default`). */
  terminal?: string;
  session?: string;
  shell?: string;
  cols?: number;
  rows?: number;
  /** Ms the shell lives on after its last client left. */
  idleTimeout?: number;
}

/** State shared by a sandbox handle and the session handles made from it. */
interface HandleState {
  options: SandboxOptions | undefined;
  ready: Promise<void> | undefined;
}

function checkTimeout(name: string, ms: number | undefined): void {
  if (ms === undefined) return;
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIMEOUT) throw invalid("VALIDATION_FAILED", `${name} must be 0 to ${MAX_TIMEOUT} ms`);
}

function ms(v: number | undefined): number | undefined {
  return v === undefined ? undefined : Math.ceil(v);
}

/** A sandbox (the reference's Sandbox). Get one with `getSandbox(client, id)` or `client.sandbox(id)`. */
export class Sandbox {
  readonly id: string;
  /** @internal */ readonly client: SandboxClient;
  /** @internal */ readonly state: HandleState;
  /** The session this handle runs in; undefined means the default session. */
  readonly sessionId: string | undefined;

  /** @internal */
  constructor(client: SandboxClient, id: string, options?: SandboxOptions, state?: HandleState, sessionId?: string) {
    if (typeof id !== "string" || !SANDBOX_ID.test(id)) {
      throw invalid("INVALID_SANDBOX_ID", `sandbox ID ${JSON.stringify(id)}: want 1-63 of a-z, 0-9 and -, not starting or ending with -`);
    }
    this.client = client;
    this.id = id;
    this.state = state ?? { options, ready: undefined };
    this.sessionId = sessionId;
  }

  // ---- plumbing

  #path(suffix: string): string {
    return `/v1/sandboxes/${this.id}${suffix}`;
  }

  /** Sends the handle's options once before its first call (PUT ensure), like the Go SDK. */
  async #prepare(signal?: AbortSignal): Promise<void> {
    if (!this.state.options) return;
    if (!this.state.ready) {
      const p = this.#put(signal).then(() => undefined);
      this.state.ready = p;
      p.catch(() => {
        if (this.state.ready === p) this.state.ready = undefined; // the next call tries again
      });
    }
    await this.state.ready;
  }

  #put(signal?: AbortSignal): Promise<SandboxInfo> {
    return this.client.request<SandboxInfo>({ method: "PUT", path: this.#path(""), json: this.state.options ?? {}, signal });
  }

  async #call<T>(req: RequestInit2): Promise<T> {
    await this.#prepare(req.signal);
    return this.client.request<T>({ ...req, path: this.#path(req.path) });
  }

  async #stream<T extends { type: string }>(req: RequestInit2, what: string): Promise<EventStream<T>> {
    await this.#prepare(req.signal);
    return this.client.stream<T>({ ...req, path: this.#path(req.path) }, what);
  }

  #session(explicit: string | undefined): string | undefined {
    return explicit ?? this.sessionId;
  }

  // ---- lifecycle

  /** Creates the sandbox with the handle's options if absent; `created` says whether this call did. */
  async ensure(options: CallOptions = {}): Promise<SandboxInfo> {
    const info = await this.#put(options.signal);
    this.state.ready = Promise.resolve();
    return info;
  }

  /** The sandbox's record. NotFoundError for an unknown ID on a handle without options (reading does not create). */
  info(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "GET", path: "", ...options });
  }

  /** Deletes the sandbox, disk included. A later call on the handle creates a fresh one. */
  async destroy(options: CallOptions = {}): Promise<void> {
    await this.client.request({ method: "DELETE", path: this.#path(""), signal: options.signal });
    this.state.ready = undefined;
  }

  /** keepAlive true: the sandbox never sleeps when idle. */
  setKeepAlive(keepAlive: boolean, options: CallOptions = {}): Promise<SandboxInfo> {
    return this.update({ keepAlive }, options);
  }

  /** Changes the idle time before sleep (ms) and keepAlive. */
  update(change: { sleepAfter?: number; keepAlive?: boolean }, options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "PATCH", path: "", json: change, ...options });
  }

  stop(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "POST", path: "/stop", ...options });
  }

  start(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "POST", path: "/start", ...options });
  }

  restart(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "POST", path: "/restart", ...options });
  }

  /** The sandbox's egress policy and what it refused (docs/network.md). NotFoundError as info. */
  network(options: CallOptions = {}): Promise<NetworkStatus> {
    return this.#call<NetworkStatus>({ method: "GET", path: "/network", ...options });
  }

  /** Replaces the egress policy, at once if the sandbox runs; INVALID_NETWORK_POLICY names the entry in `details.entry`. */
  setNetwork(policy: NetworkPolicy, options: CallOptions = {}): Promise<NetworkStatus> {
    return this.#call<NetworkStatus>({ method: "PUT", path: "/network", json: policy, ...options });
  }

  /** Resets the idle timer. */
  renew(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "POST", path: "/renew", ...options });
  }

  /** Backs up the directory `dir` (absolute); `ttl` is a duration such as "1h" (default 72h). `BACKUP_TOO_LARGE`, `BACKUP_STORE_UNAVAILABLE`. */
  createBackup(dir: string, options: CallOptions & { name?: string; ttl?: string } = {}): Promise<BackupInfo> {
    const { name, ttl, ...call } = options;
    return this.#call<BackupInfo>({ method: "POST", path: "/backups", json: { dir, name, ttl }, ...call });
  }

  /** Mounts the backup copy-on-write at `dir` (default: its own directory). NotFoundError (`BACKUP_NOT_FOUND`), `BACKUP_EXPIRED`. */
  restoreBackup(backup: string, options: CallOptions & { dir?: string } = {}): Promise<RestoreInfo> {
    const { dir, ...call } = options;
    return this.#call<RestoreInfo>({ method: "POST", path: "/backups/restore", json: { backup, dir }, ...call });
  }

  /** Snapshots the sandbox as `name` (frozen while it is taken): its files, and on gVisor its memory and processes too. `memory: true` requires memory (`MEMORY_SNAPSHOT_UNSUPPORTED` where the runtime cannot keep it); `filesystemOnly: true` keeps the files alone. */
  createSnapshot(name: string, options: CallOptions & { memory?: boolean; filesystemOnly?: boolean } = {}): Promise<SnapshotInfo> {
    const { memory, filesystemOnly, ...call } = options;
    return this.#call<SnapshotInfo>({ method: "POST", path: "/snapshots", json: { name, memory, filesystemOnly }, ...call });
  }

  /** Pauses the sandbox. Without `filesystemOnly`, `MEMORY_SNAPSHOT_UNSUPPORTED` where memory cannot be kept; with it, as stop. */
  pause(options: CallOptions & { filesystemOnly?: boolean } = {}): Promise<SandboxInfo> {
    const { filesystemOnly, ...call } = options;
    return this.#call<SandboxInfo>({ method: "POST", path: "/pause", json: { filesystemOnly }, ...call });
  }

  /** Resumes a paused sandbox. */
  resume(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#call<SandboxInfo>({ method: "POST", path: "/resume", ...options });
  }

  // ---- commands

  #execBody(command: string, o: ExecOptions): Record<string, unknown> {
    if (typeof command !== "string" || command.trim() === "") throw invalid("VALIDATION_FAILED", "command is empty");
    if (command.length > MAX_COMMAND) throw invalid("REQUEST_TOO_LARGE", "command is over 1 MiB");
    checkTimeout("timeout", o.timeout);
    const body: Record<string, unknown> = { command, sessionId: this.#session(o.sessionId), env: o.env, cwd: o.cwd, timeout: ms(o.timeout) };
    if (o.stdin !== undefined) {
      const b = toBytes(o.stdin);
      if (b.length > MAX_STDIN) throw invalid("REQUEST_TOO_LARGE", "stdin is over 8 MiB");
      body.stdin = bytesToBase64(b);
      body.stdinEncoding = "base64";
    }
    return body;
  }

  /**
   * Runs one shell command line in the session's persistent bash and
   * resolves to `{stdout, stderr, exitCode, success}` when it ends. A
   * non-zero exit is not an error. A timeout throws TimeoutError
   * (`COMMAND_TIMEOUT`) and an `exit` of the shell SessionTerminatedError;
   * both carry the output so far in `err.result`.
   */
  async exec(command: string, options: ExecOptions = {}): Promise<ExecResult> {
    const body = this.#execBody(command, options);
    try {
      let res: ExecResult;
      if (options.stream || options.onOutput) {
        res = await collectExec(await this.#stream<ExecEvent>({ method: "POST", path: "/exec/stream", json: body, signal: options.signal }, "exec stream"), command, options.onOutput);
      } else {
        res = decodeExec(await this.#call<ExecResult & { encoding?: string }>({ method: "POST", path: "/exec", json: body, signal: options.signal }));
      }
      options.onComplete?.(res);
      return res;
    } catch (err) {
      if (err instanceof SandboxError && err.details && typeof err.details.stdout === "string") {
        (err as SandboxError & { result?: ExecResult }).result = decodeExec({
          success: false, exitCode: typeof err.details.exitCode === "number" ? err.details.exitCode : -1, command,
          sessionId: String(body.sessionId ?? "default"), ...(err.details as object),
        } as ExecResult);
      }
      options.onError?.(err as Error);
      throw err;
    }
  }

  /** Runs a command and streams its events: `start`, `stdout`/`stderr`, then `complete` or `error`. */
  execStream(command: string, options: ExecOptions = {}): Promise<EventStream<ExecEvent>> {
    const body = this.#execBody(command, options);
    return this.#stream<ExecEvent>({ method: "POST", path: "/exec/stream", json: body, signal: options.signal }, "exec stream");
  }

  // ---- background processes

  /** Starts a background process; resolves at once with a Process handle. */
  async startProcess(command: string, options: ProcessOptions = {}): Promise<Process> {
    if (typeof command !== "string" || command.trim() === "") throw invalid("VALIDATION_FAILED", "command is empty");
    checkTimeout("timeout", options.timeout);
    const info = await this.#call<ProcessInfo>({
      method: "POST", path: "/processes", signal: options.signal,
      json: { command, processId: options.processId, env: options.env, cwd: options.cwd, sessionId: this.#session(options.sessionId), timeout: ms(options.timeout), user: options.user, autoCleanup: options.autoCleanup, login: options.login, closeStdin: options.closeStdin },
    });
    return new Process(this, info);
  }

  /** Every process record, oldest first; `status` filters. */
  async listProcesses(options: CallOptions & { status?: ProcessStatus } = {}): Promise<ProcessInfo[]> {
    const r = await this.#call<{ processes: ProcessInfo[] }>({ method: "GET", path: "/processes", query: { status: options.status }, signal: options.signal });
    return r.processes ?? [];
  }

  /** The process with this ID, or null if there is none. */
  async getProcess(id: string, options: CallOptions = {}): Promise<Process | null> {
    try {
      return new Process(this, await this.#call<ProcessInfo>({ method: "GET", path: `/processes/${encodeURIComponent(id)}`, ...options }));
    } catch (err) {
      if (err instanceof NotFoundError && err.code === "PROCESS_NOT_FOUND") return null;
      throw err;
    }
  }

  /** Signals the process's whole tree (default SIGTERM, then SIGKILL after the grace period). */
  killProcess(id: string, signal?: string, options: KillOptions = {}): Promise<ProcessInfo> {
    return this.#call<ProcessInfo>({ method: "POST", path: `/processes/${encodeURIComponent(id)}/kill`, json: { signal, gracePeriod: options.gracePeriod }, signal: options.signal });
  }

  /** Kills every running process; resolves to how many. */
  async killAllProcesses(signal?: string, options: KillOptions = {}): Promise<number> {
    const r = await this.#call<{ killed: number }>({ method: "DELETE", path: "/processes", json: { signal, gracePeriod: options.gracePeriod }, signal: options.signal });
    return r.killed;
  }

  /** The output so far: `{stdout, stderr, processId, truncated}`. */
  async getProcessLogs(id: string, options: CallOptions = {}): Promise<ProcessLogs> {
    const r = await this.#call<{ id: string; stdout: string; stderr: string; encoding?: string; truncated?: boolean }>({ method: "GET", path: `/processes/${encodeURIComponent(id)}/logs`, ...options });
    return { processId: r.id, stdout: chunkText(r.stdout, r.encoding), stderr: chunkText(r.stderr, r.encoding), truncated: !!r.truncated };
  }

  /** Live logs: `process_info`, the output so far, live output, then `exit`. */
  streamProcessLogs(id: string, options: CallOptions = {}): Promise<EventStream<LogEvent>> {
    return this.#stream<LogEvent>({ method: "GET", path: `/processes/${encodeURIComponent(id)}/logs/stream`, ...options }, "process log stream");
  }

  /** Waits, inside the sandbox, until the process's port accepts connections (or answers HTTP). */
  waitForPort(processId: string, port: number, options: WaitForPortOptions = {}): Promise<{ port: number; status?: number }> {
    checkTimeout("timeout", options.timeout);
    const { signal, ...rest } = options;
    return this.#call({ method: "POST", path: `/processes/${encodeURIComponent(processId)}/wait/port`, json: { port, ...rest }, signal });
  }

  /** Waits until a line of the process's output contains `pattern` (a RegExp: matches it, RE2 syntax). */
  waitForLog(processId: string, pattern: string | RegExp, options: WaitForLogOptions = {}): Promise<{ line: string; stream: "stdout" | "stderr" }> {
    checkTimeout("timeout", options.timeout);
    const regex = pattern instanceof RegExp;
    return this.#call({ method: "POST", path: `/processes/${encodeURIComponent(processId)}/wait/log`, json: { pattern: regex ? pattern.source : pattern, regex, timeout: ms(options.timeout) }, signal: options.signal });
  }

  /** Waits until the process ends; resolves to its final record. */
  waitForExit(processId: string, options: WaitForLogOptions = {}): Promise<ProcessInfo> {
    checkTimeout("timeout", options.timeout);
    return this.#call({ method: "POST", path: `/processes/${encodeURIComponent(processId)}/wait/exit`, json: { timeout: ms(options.timeout) }, signal: options.signal });
  }

  // ---- files

  /**
   * Writes a file. A string goes through the JSON route (≤ 16 MiB; `encoding:
   * "base64"` for binary data given as base64); bytes and streams go through
   * the raw route, with no size cap but the disk.
   */
  async writeFile(path: string, content: string | Uint8Array | ArrayBuffer | ReadableStream<Uint8Array>, options: WriteFileOptions = {}): Promise<WriteFileResult> {
    const session = this.#session(options.sessionId);
    if (typeof content === "string") {
      const encoding = options.encoding === "utf8" ? "utf-8" : options.encoding;
      return this.#call<WriteFileResult>({
        method: "POST", path: "/files/write", signal: options.signal,
        json: { path, content, encoding, createParents: options.createParents, mode: options.mode, uid: options.uid, gid: options.gid, sessionId: session },
      });
    }
    const body = content instanceof ReadableStream ? content : toBytes(content);
    return this.#call<WriteFileResult>({
      method: "PUT", path: "/files/raw", body, signal: options.signal,
      headers: session ? { "X-Sandbox-Session": session } : undefined,
      query: { path, createParents: options.createParents, mode: options.mode, uid: options.uid, gid: options.gid },
    });
  }

  /** Reads a whole file (≤ 16 MiB): `{content, encoding, mimeType, size, isBinary}`; binary files come base64 unless `encoding` says otherwise. */
  readFile(path: string, options: ReadFileOptions = {}): Promise<FileInfo> {
    const encoding = options.encoding === "utf8" ? "utf-8" : options.encoding;
    return this.#call<FileInfo>({ method: "POST", path: "/files/read", json: { path, encoding, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  /** A file as events: `metadata`, `chunk`s (≤ 64 KiB), then `complete` or `error`. */
  readFileStream(path: string, options: PathOptions = {}): Promise<EventStream<FileStreamEvent>> {
    return this.#stream<FileStreamEvent>({ method: "POST", path: "/files/read/stream", json: { path, sessionId: this.#session(options.sessionId) }, signal: options.signal }, "file stream");
  }

  /** A file's bytes as a web stream, straight from the raw route (no size cap; `range` as `[start, end]` bytes, end inclusive). */
  async openFile(path: string, options: PathOptions & { range?: [number, number?] } = {}): Promise<ReadableStream<Uint8Array>> {
    await this.#prepare(options.signal);
    const session = this.#session(options.sessionId);
    const headers: Record<string, string> = {};
    if (session) headers["X-Sandbox-Session"] = session;
    if (options.range) headers["Range"] = `bytes=${options.range[0]}-${options.range[1] ?? ""}`;
    const resp = await this.client.send({ method: "GET", path: this.#path("/files/raw"), query: { path }, headers, signal: options.signal });
    if (!resp.body) throw new UnavailableError("", "the file answer has no body");
    return resp.body;
  }

  /** Reads a whole file of any size into memory. */
  async readFileBytes(path: string, options: PathOptions = {}): Promise<Uint8Array> {
    const stream = await this.openFile(path, options);
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async mkdir(path: string, options: MkdirOptions = {}): Promise<void> {
    await this.#call({ method: "POST", path: "/files/mkdir", json: { path, recursive: options.recursive, mode: options.mode, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  /** Deletes a file or symlink; a directory needs `recursive`. */
  async deleteFile(path: string, options: DeleteOptions = {}): Promise<void> {
    await this.#call({ method: "POST", path: "/files/delete", json: { path, recursive: options.recursive, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  async renameFile(oldPath: string, newPath: string, options: MoveOptions = {}): Promise<void> {
    await this.#call({ method: "POST", path: "/files/rename", json: { oldPath, newPath, overwrite: options.overwrite, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  /** Moves into `destinationPath` when it is a directory, like mv; resolves to the final path. */
  async moveFile(sourcePath: string, destinationPath: string, options: MoveOptions = {}): Promise<string> {
    const r = await this.#call<{ path: string }>({ method: "POST", path: "/files/move", json: { sourcePath, destinationPath, overwrite: options.overwrite, sessionId: this.#session(options.sessionId) }, signal: options.signal });
    return r.path;
  }

  listFiles(path: string, options: ListFilesOptions = {}): Promise<ListFilesResult> {
    return this.#call<ListFilesResult>({ method: "POST", path: "/files/list", json: { path, recursive: options.recursive, includeHidden: options.includeHidden, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  exists(path: string, options: PathOptions = {}): Promise<ExistsResult> {
    return this.#call<ExistsResult>({ method: "POST", path: "/files/exists", json: { path, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  stat(path: string, options: PathOptions = {}): Promise<FileEntry> {
    return this.#call<FileEntry>({ method: "POST", path: "/files/stat", json: { path, sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  /** Watches a path: `watching` once in place, then one `event` per change, until closed (or an `error`). */
  watch(path: string, options: WatchOptions = {}): Promise<EventStream<WatchEvent>> {
    return this.#stream<WatchEvent>({ method: "POST", path: "/files/watch", json: { path, recursive: options.recursive, include: options.include, exclude: options.exclude, sessionId: this.#session(options.sessionId) }, signal: options.signal }, "watch");
  }

  /** Clones a repository into the sandbox. */
  gitCheckout(repoUrl: string, options: GitCheckoutOptions = {}): Promise<GitCheckoutResult> {
    checkTimeout("timeout", options.timeout);
    return this.#call<GitCheckoutResult>({ method: "POST", path: "/git/checkout", json: { repoUrl, branch: options.branch, targetDir: options.targetDir, depth: options.depth, timeout: ms(options.timeout), sessionId: this.#session(options.sessionId) }, signal: options.signal });
  }

  // ---- sessions and environment

  /** Creates a session and returns a handle whose calls run in it. */
  async createSession(options: SessionOptions = {}): Promise<ExecutionSession> {
    checkTimeout("commandTimeout", options.commandTimeout);
    const info = await this.#call<SessionInfo>({ method: "POST", path: "/sessions", json: { id: options.id, env: options.env, cwd: options.cwd, commandTimeout: ms(options.commandTimeout), user: options.user }, signal: options.signal });
    return new ExecutionSession(this, info.id);
  }

  /** A handle to an existing session; NotFoundError (`SESSION_NOT_FOUND`) if there is none. */
  async getSession(sessionId: string, options: CallOptions = {}): Promise<ExecutionSession> {
    const info = await this.#call<SessionInfo>({ method: "GET", path: `/sessions/${encodeURIComponent(sessionId)}`, ...options });
    return new ExecutionSession(this, info.id);
  }

  async listSessions(options: CallOptions = {}): Promise<SessionInfo[]> {
    const r = await this.#call<{ sessions: SessionInfo[] }>({ method: "GET", path: "/sessions", ...options });
    return r.sessions ?? [];
  }

  /** Kills the session's shell, what runs in it and its processes. */
  async deleteSession(sessionId: string, options: CallOptions = {}): Promise<void> {
    await this.#call({ method: "DELETE", path: `/sessions/${encodeURIComponent(sessionId)}`, ...options });
  }

  /** Sets environment variables (a null value unsets): sandbox-level, or session-level on a session handle. */
  async setEnvVars(envVars: Record<string, string | null>, options: CallOptions = {}): Promise<void> {
    const path = this.sessionId ? `/sessions/${encodeURIComponent(this.sessionId)}/env` : "/env";
    await this.#call({ method: "POST", path, json: { env: envVars }, ...options });
  }

  // ---- ports

  /** Exposes a port and resolves to its preview URL (`url`, and `exposedAt` as in the reference). */
  async exposePort(port: number, options: ExposePortOptions = {}): Promise<ExposedPort> {
    const p = await this.#call<ExposedPort>({ method: "POST", path: "/ports", json: { port, name: options.name, token: options.token, public: options.public }, signal: options.signal });
    return withExposedAt(p);
  }

  /** Unexposes a port (idempotent); its URL and links stop working. */
  async unexposePort(port: number, options: CallOptions = {}): Promise<void> {
    await this.#call({ method: "DELETE", path: `/ports/${port}`, ...options });
  }

  async getExposedPorts(options: CallOptions = {}): Promise<{ ports: ExposedPort[] }> {
    const r = await this.#call<{ ports: ExposedPort[] }>({ method: "GET", path: "/ports", ...options });
    return { ports: (r.ports ?? []).map(withExposedAt) };
  }

  /** A signed, expiring link to an exposed port (for private ones); `expiresIn` in ms (default 1 h). */
  getPreviewLink(port: number, options: CallOptions & { expiresIn?: number } = {}): Promise<PreviewLink> {
    return this.#call<PreviewLink>({ method: "POST", path: `/ports/${port}/links`, json: { expiresIn: options.expiresIn }, signal: options.signal });
  }

  // ---- code interpreter

  createCodeContext(options: CreateContextOptions = {}): Promise<CodeContext> {
    return this.#call<CodeContext>({ method: "POST", path: "/code/contexts", json: { language: options.language, cwd: options.cwd, env: options.envVars }, signal: options.signal });
  }

  async listCodeContexts(options: CallOptions = {}): Promise<CodeContext[]> {
    const r = await this.#call<{ contexts: CodeContext[] }>({ method: "GET", path: "/code/contexts", ...options });
    return r.contexts ?? [];
  }

  getCodeContext(contextId: string, options: CallOptions = {}): Promise<CodeContext> {
    return this.#call<CodeContext>({ method: "GET", path: `/code/contexts/${encodeURIComponent(contextId)}`, ...options });
  }

  async deleteCodeContext(contextId: string, options: CallOptions = {}): Promise<void> {
    await this.#call({ method: "DELETE", path: `/code/contexts/${encodeURIComponent(contextId)}`, ...options });
  }

  #runBody(code: string, o: RunCodeOptions): Record<string, unknown> {
    if (typeof code !== "string" || code.trim() === "") throw invalid("VALIDATION_FAILED", "code is empty");
    checkTimeout("timeout", o.timeout);
    const contextId = typeof o.context === "string" ? o.context : o.context?.id;
    return { code, contextId, language: o.language, timeout: ms(o.timeout) };
  }

  /**
   * Runs code in a persistent interpreter and resolves to its
   * ExecutionResult: `logs`, rich `results` (png, html, text ...) and the
   * code's own `error`. With callbacks the run is streamed to them as it
   * happens. API errors (CONTEXT_TERMINATED, CONTEXT_NOT_FOUND ...) throw.
   */
  async runCode(code: string, options: RunCodeOptions = {}): Promise<ExecutionResult> {
    const body = this.#runBody(code, options);
    if (!(options.onStdout || options.onStderr || options.onResult || options.onError)) {
      return this.#call<ExecutionResult>({ method: "POST", path: "/code/run", json: body, signal: options.signal });
    }
    const st = await this.#stream<CodeEvent>({ method: "POST", path: "/code/run/stream", json: body, signal: options.signal }, "code stream");
    return collectCode(st, code, options);
  }

  /** Runs code and streams its events: `start`, `stdout`, `stderr`, `result`, `error`, then `complete`. */
  runCodeStream(code: string, options: RunCodeOptions = {}): Promise<EventStream<CodeEvent>> {
    return this.#stream<CodeEvent>({ method: "POST", path: "/code/run/stream", json: this.#runBody(code, options), signal: options.signal }, "code stream");
  }

  // ---- terminals

  async listTerminals(options: CallOptions = {}): Promise<TerminalInfo[]> {
    const r = await this.#call<{ terminals: TerminalInfo[] }>({ method: "GET", path: "/terminals", ...options });
    return r.terminals ?? [];
  }

  /** Hangs a terminal up. */
  async closeTerminal(terminalId: string, options: CallOptions = {}): Promise<void> {
    await this.#call({ method: "DELETE", path: `/terminals/${encodeURIComponent(terminalId)}`, ...options });
  }

  /**
   * The WebSocket URL of an interactive terminal and the subprotocols to
   * offer, the API token among them (browsers cannot set headers on a
   * WebSocket): `new WebSocket(t.url, t.protocols)`. Keep them out of pages
   * you do not trust. Frames: [api-ports.md](../../docs/api-ports.md#terminals).
   */
  terminal(options: TerminalOptions = {}): { url: string; protocols: string[] } {
    const u = new URL(this.client.url + this.#path("/terminal"));
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    const session = options.session ?? this.sessionId;
    for (const [k, v] of Object.entries({ ...options, session })) if (v !== undefined) u.searchParams.set(k, String(v));
    const protocols = ["sandboxd.terminal.v1"];
    if (this.client.token) protocols.push(`sandboxd.token.${this.client.token}`);
    return { url: u.toString(), protocols };
  }

  /**
   * Opens an interactive terminal: a WebSocket (browsers, Deno, Bun, Node ≥
   * 22, or Node 20 with --experimental-websocket) whose binary frames carry
   * keystrokes in and terminal output out, and whose text frames carry
   * `ready`, `resize`, `exit` and `error` messages. The sandbox is created
   * first if need be.
   */
  async openTerminal(options: TerminalOptions & CallOptions = {}): Promise<WebSocket> {
    const WS = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
    if (!WS) throw new Error("this runtime has no WebSocket (Node 20 needs --experimental-websocket)");
    await this.#prepare(options.signal);
    const { signal: _signal, ...rest } = options;
    const t = this.terminal(rest);
    const ws = new WS(t.url, t.protocols);
    ws.binaryType = "arraybuffer";
    return ws;
  }
}

/** A session of a sandbox (the reference's ExecutionSession): the sandbox's methods, run in this session. */
export class ExecutionSession extends Sandbox {
  declare readonly sessionId: string;

  /** @internal */
  constructor(sandbox: Sandbox, sessionId: string) {
    super(sandbox.client, sandbox.id, undefined, sandbox.state, sessionId);
  }

  /** The session's ID (the reference's `session.id` is the sandbox's; use this for the session's). */
  get session(): string {
    return this.sessionId;
  }
}

/** A background process: its record as of the call that returned it, and methods bound to it. */
export class Process implements ProcessInfo {
  id!: string;
  pid!: number;
  command!: string;
  status!: ProcessStatus;
  sessionId!: string;
  startTime!: string;
  user?: string;
  endTime?: string;
  exitCode?: number;
  statusReason?: string;
  autoCleanup?: boolean;
  truncated?: boolean;
  readonly #sb: Sandbox;

  /** @internal */
  constructor(sb: Sandbox, info: ProcessInfo) {
    this.#sb = sb;
    Object.assign(this, info);
  }

  /** The current record (also updates this object). */
  async getStatus(options: CallOptions = {}): Promise<ProcessStatus> {
    const p = await this.#sb.getProcess(this.id, options);
    if (p) Object.assign(this, { ...p });
    return this.status;
  }

  async kill(signal?: string, options: KillOptions = {}): Promise<void> {
    Object.assign(this, await this.#sb.killProcess(this.id, signal, options));
  }

  getLogs(options: CallOptions = {}): Promise<ProcessLogs> {
    return this.#sb.getProcessLogs(this.id, options);
  }

  streamLogs(options: CallOptions = {}): Promise<EventStream<LogEvent>> {
    return this.#sb.streamProcessLogs(this.id, options);
  }

  waitForPort(port: number, options: WaitForPortOptions = {}): Promise<{ port: number; status?: number }> {
    return this.#sb.waitForPort(this.id, port, options);
  }

  waitForLog(pattern: string | RegExp, options: WaitForLogOptions = {}): Promise<{ line: string; stream: "stdout" | "stderr" }> {
    return this.#sb.waitForLog(this.id, pattern, options);
  }

  async waitForExit(options: WaitForLogOptions = {}): Promise<ProcessInfo> {
    const p = await this.#sb.waitForExit(this.id, options);
    Object.assign(this, p);
    return p;
  }

  /** Writes to the process's stdin (waits for it to take the data); `close` closes stdin afterwards. */
  async writeStdin(data: string | Uint8Array, options: CallOptions & { close?: boolean; timeout?: number } = {}): Promise<void> {
    await this.#sb.client.request({
      method: "POST", path: `/v1/sandboxes/${this.#sb.id}/processes/${encodeURIComponent(this.id)}/stdin`, signal: options.signal,
      json: { data: bytesToBase64(toBytes(data)), encoding: "base64", close: options.close, timeout: ms(options.timeout) },
    });
  }

  /** Closes the process's stdin. */
  async closeStdin(options: CallOptions = {}): Promise<void> {
    await this.#sb.client.request({ method: "POST", path: `/v1/sandboxes/${this.#sb.id}/processes/${encodeURIComponent(this.id)}/stdin`, json: { close: true }, signal: options.signal });
  }

  toJSON(): ProcessInfo {
    const { id, pid, command, status, sessionId, startTime, user, endTime, exitCode, statusReason, autoCleanup, truncated } = this;
    return { id, pid, command, status, sessionId, startTime, user, endTime, exitCode, statusReason, autoCleanup, truncated };
  }
}

// ---- helpers

function withExposedAt(p: ExposedPort): ExposedPort {
  return { ...p, exposedAt: p.url };
}

function decodeExec(r: ExecResult & { encoding?: string }): ExecResult {
  if (r.encoding === "base64") {
    r.stdout = chunkText(r.stdout, "base64");
    r.stderr = chunkText(r.stderr, "base64");
  }
  delete r.encoding;
  return r;
}

/** Keeps up to MAX_BUFFERED characters of one stream, as a buffered exec does. */
class Capped {
  parts: string[] = [];
  size = 0;
  truncated = false;
  add(s: string): void {
    if (this.size >= MAX_BUFFERED) {
      this.truncated = true;
      return;
    }
    const room = MAX_BUFFERED - this.size;
    if (s.length > room) {
      s = s.slice(0, room);
      this.truncated = true;
    }
    this.parts.push(s);
    this.size += s.length;
  }
  text(): string {
    return this.parts.join("");
  }
}

async function collectExec(st: EventStream<ExecEvent>, command: string, onOutput?: (stream: "stdout" | "stderr", data: string) => void): Promise<ExecResult> {
  const out = new Capped();
  const errOut = new Capped();
  let sessionId = "default";
  const partial = (exitCode: number, duration = 0): ExecResult => ({
    success: exitCode === 0, exitCode, stdout: out.text(), stderr: errOut.text(), command, sessionId, duration, truncated: out.truncated || errOut.truncated,
  });
  try {
    for await (const ev of st) {
      switch (ev.type) {
        case "start":
          sessionId = ev.sessionId ?? sessionId;
          break;
        case "stdout":
        case "stderr": {
          const text = chunkText(ev.data, ev.encoding);
          (ev.type === "stdout" ? out : errOut).add(text);
          onOutput?.(ev.type, text);
          break;
        }
        case "complete":
          if (typeof ev.exitCode !== "number") throw new UnavailableError("", "exec stream completed without an exit code");
          return partial(ev.exitCode, ev.duration ?? 0);
        case "error":
          throw errorFromCode(ev.code ?? "", ev.message ?? "exec failed", 0, { stdout: out.text(), stderr: errOut.text() });
      }
    }
  } catch (err) {
    if (err instanceof SandboxError) (err as SandboxError & { result?: ExecResult }).result = partial(-1);
    throw err;
  }
  throw new UnavailableError("", "exec stream ended before its terminal event");
}

function splitLines(s: string): string[] {
  if (s === "") return [];
  const lines = s.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

async function collectCode(st: EventStream<CodeEvent>, code: string, o: RunCodeOptions): Promise<ExecutionResult> {
  let stdout = "";
  let stderr = "";
  const res: ExecutionResult = { code, contextId: "", language: o.language ?? "python", logs: { stdout: [], stderr: [] }, results: [], executionCount: 0, duration: 0 };
  for await (const ev of st) {
    switch (ev.type) {
      case "start":
        res.contextId = ev.contextId ?? "";
        if (ev.language) res.language = ev.language;
        break;
      case "stdout":
      case "stderr": {
        const text = chunkText(ev.data, ev.encoding);
        if (ev.type === "stdout") {
          stdout += text;
          o.onStdout?.({ text, timestamp: ev.timestamp });
        } else {
          stderr += text;
          o.onStderr?.({ text, timestamp: ev.timestamp });
        }
        break;
      }
      case "result":
        if (ev.result) {
          res.results.push(ev.result);
          await o.onResult?.(ev.result);
        }
        break;
      case "execution_error":
        if (ev.error) {
          res.error = ev.error;
          o.onError?.(ev.error);
        }
        break;
      case "error":
        throw errorFromCode(ev.code ?? "", ev.message ?? "code run failed");
      case "complete":
        res.executionCount = ev.executionCount ?? 0;
        res.duration = ev.duration ?? 0;
        if (ev.truncated) res.truncated = true;
        res.logs = { stdout: splitLines(stdout), stderr: splitLines(stderr) };
        return res;
    }
  }
  throw new UnavailableError("", "code stream ended before its terminal event");
}

