// Wire types of the sandboxd HTTP API (Go: package api). Durations are
// milliseconds, times RFC 3339 strings. Fields the daemon adds later are
// kept as they come: nothing here rejects unknown fields.

export type SandboxStatus = "creating" | "running" | "sleeping" | "paused" | "stopped" | "failed" | "destroying" | "lost";

export interface Limits {
  memoryBytes?: number;
  milliCpu?: number;
  pids?: number;
  diskBytes?: number;
}

export interface NetworkOptions {
  mode?: "none" | "internet";
  /** Otherwise blocked CIDRs beyond the host; never the host or another sandbox. */
  allowCidrs?: string[];
  /** Addresses of the host itself the sandbox may connect to. */
  allowHostCidrs?: string[];
}

/** Options of a sandbox, applied only when a call creates it. */
export interface SandboxOptions {
  /** Root filesystem image (default `host`). */
  image?: string;
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** On a cluster: place only on a node with every one of these labels (`--node-label`); none is `NO_MATCHING_NODE`. A single host ignores it. */
  nodeSelector?: Record<string, string>;
  limits?: Limits;
  network?: NetworkOptions;
  /** `lite`, `standard` or `heavy`. */
  instanceType?: string;
  /** Idle time in ms before the sandbox sleeps. */
  sleepAfter?: number;
  /** Never sleep. */
  keepAlive?: boolean;
  /** `crun` or `runc` (the host's kernel), or `gvisor` (runsc's user-space kernel); default the daemon's. */
  runtime?: string;
  /** Start from this snapshot's files, image and runtime (docs/snapshots.md); NotFoundError (`SNAPSHOT_NOT_FOUND`) if absent. */
  fromSnapshot?: string;
}

/** A snapshot of a sandbox's files (docs/snapshots.md). */
export interface SnapshotInfo {
  name: string;
  /** The sandbox it was taken of. */
  sandbox: string;
  image: string;
  imageDigest?: string;
  runtime: string;
  /** Content address of its files, `sha256-<hex>`. */
  layer: string;
  /** Bytes of regular files. */
  size: number;
  files: number;
  memory: boolean;
  /** How long the sandbox was frozen, ms. */
  frozenMs: number;
  createdAt: string;
}

/** A backup of a sandbox's directory (docs/snapshots.md#backups-of-a-directory). */
export interface BackupInfo {
  /** `bk-` and 16 hex digits. */
  id: string;
  tenant?: string;
  /** The sandbox it was taken from, and the directory (where a restore mounts it by default). */
  sandbox: string;
  dir: string;
  name?: string;
  /** Bytes in the store (a compressed squashfs image). */
  size: number;
  createdAt: string;
  expiresAt: string;
}

/** A backup restored into a sandbox. */
export interface RestoreInfo {
  backup: string;
  sandbox: string;
  dir: string;
  createdAt: string;
}

export interface SandboxInfo {
  id: string;
  status: SandboxStatus;
  statusReason?: string;
  image: string;
  imageDigest?: string;
  runtime: string;
  /** The snapshot it was created from, if any. */
  fromSnapshot?: string;
  labels?: Record<string, string>;
  limits: Limits;
  network: {
    mode: string;
    allowCidrs?: string[];
    allowHostCidrs?: string[];
    allowDomains?: string[];
    denyDomains?: string[];
    denyCidrs?: string[];
    default?: "allow" | "deny";
    address?: string;
    gateway?: string;
  };
  createdAt: string;
  lastUsedAt: string;
  statusChangedAt: string;
  instanceType?: string;
  sleepAfter: number;
  keepAlive: boolean;
  idleDeadline?: string;
  /** What separates the sandbox from the host: its runtime, and whether its root is an unprivileged
   * host UID of a user namespace of its own (`hostUidBase`, absent without one). */
  isolation?: { runtime: string; userNamespace: boolean; hostUidBase?: number };
  /** Set by ensure: whether this call created the sandbox. */
  created?: boolean;
  /** The cluster node it is placed on, as a cluster's gateway answers (docs/cluster.md); absent from a single host. */
  node?: string;
}

/** A sandbox's egress policy (docs/network.md): PUT /v1/sandboxes/{id}/network replaces it as a whole. */
export interface NetworkPolicy {
  /** Must be the sandbox's mode if given. */
  mode?: "none" | "internet";
  /** Names (`pypi.org`) or every name below one (`*.pythonhosted.org`) the sandbox may resolve and reach. */
  allowDomains?: string[];
  /** Names it may not; they win over allowDomains. */
  denyDomains?: string[];
  allowCidrs?: string[];
  denyCidrs?: string[];
  /** Default: "deny" when allowDomains or allowCidrs are given, else "allow". */
  default?: "allow" | "deny";
}

/** GET /v1/sandboxes/{id}/network: the policy and what it refused. */
export interface NetworkStatus {
  policy: Required<Omit<NetworkPolicy, "mode">> & { mode: string };
  allowHostCidrs?: string[];
  address?: string;
  gateway?: string;
  /** Lookups answered NXDOMAIN, connections refused by name, packets of new connections dropped. */
  denied: number;
  /** The last names refused, newest first (at most 16). */
  lastDenied: { name: string; reason: "dns" | "sni" | "host" | "head" | string; at: string }[];
}

export interface Health {
  status: string;
  version: string;
  runtime: string;
}

export interface LifecycleEvent {
  type: "created" | "started" | "slept" | "woke" | "paused" | "resumed" | "stopped" | "destroyed" | "failed" | string;
  sandboxId: string;
  status: SandboxStatus;
  reason?: string;
  timestamp: string;
}

/** An image of the daemon's store (docs/images.md). */
export interface ImageInfo {
  /** Its names (`host`, `base`, what an import or build named it). */
  names: string[];
  digest?: string;
  /** Bytes. */
  size: number;
  /** `host`, `import`, `pull`, `build` ... */
  source: string;
  [field: string]: unknown;
}

/** The result of exec, as the reference's ExecResult. */
export interface ExecResult {
  success: boolean;
  exitCode: number;
  stdout: string;
  stderr: string;
  command: string;
  sessionId: string;
  /** Run time in ms. */
  duration: number;
  /** Set when a stream passed 16 MiB and the rest was dropped (buffered exec only). */
  truncated?: boolean;
}

/** Events of execStream: `start`, `stdout`/`stderr` chunks, then exactly one `complete` or `error`. */
export interface ExecEvent {
  type: "start" | "stdout" | "stderr" | "complete" | "error";
  timestamp: string;
  command?: string;
  sessionId?: string;
  /** Output chunk; base64 when `encoding` is `base64`. */
  data?: string;
  encoding?: "base64";
  exitCode?: number;
  duration?: number;
  /** The error event's stable code. */
  code?: string;
  message?: string;
}

export type ProcessStatus = "starting" | "running" | "completed" | "failed" | "killed" | "error";

export interface ProcessInfo {
  id: string;
  pid: number;
  command: string;
  status: ProcessStatus;
  sessionId: string;
  user?: string;
  startTime: string;
  endTime?: string;
  exitCode?: number;
  statusReason?: string;
  autoCleanup?: boolean;
  truncated?: boolean;
}

export interface ProcessLogs {
  processId: string;
  stdout: string;
  stderr: string;
  truncated: boolean;
}

/** Events of streamProcessLogs: `process_info`, `stdout`/`stderr`, then exactly one `exit` (or `error`). */
export interface LogEvent {
  type: "process_info" | "stdout" | "stderr" | "exit" | "error";
  timestamp: string;
  process?: ProcessInfo;
  data?: string;
  encoding?: "base64";
  exitCode?: number;
  status?: ProcessStatus;
  code?: string;
  message?: string;
}

export interface FileInfo {
  success: boolean;
  path: string;
  content: string;
  encoding: "utf-8" | "base64";
  mimeType: string;
  size: number;
  isBinary: boolean;
}

export interface FileEntry {
  name: string;
  absolutePath: string;
  relativePath?: string;
  type: "file" | "directory" | "symlink" | "other";
  size: number;
  modifiedAt: string;
  mode: string;
  octalMode: string;
  permissions: { readable: boolean; writable: boolean; executable: boolean };
  uid: number;
  gid: number;
  target?: string;
}

export interface ListFilesResult {
  success: boolean;
  path: string;
  files: FileEntry[];
  count: number;
  truncated?: boolean;
}

export interface ExistsResult {
  success: boolean;
  exists: boolean;
  type?: string;
}

export interface WriteFileResult {
  success: boolean;
  path: string;
  bytesWritten: number;
}

/** Events of readFileStream: `metadata`, `chunk`..., then exactly one `complete` or `error`. */
export interface FileStreamEvent {
  type: "metadata" | "chunk" | "complete" | "error";
  timestamp: string;
  path?: string;
  mimeType?: string;
  size?: number;
  isBinary?: boolean;
  data?: string;
  encoding?: "base64";
  bytesRead?: number;
  code?: string;
  message?: string;
}

/** Events of watch: `watching` once the watch is in place, then one `event` per change; `error` ends it. */
export interface WatchEvent {
  type: "watching" | "event" | "error";
  timestamp: string;
  path?: string;
  eventType?: "create" | "modify" | "delete" | "move_from" | "move_to" | "attrib";
  isDirectory?: boolean;
  cookie?: number;
  code?: string;
  message?: string;
}

export interface GitCheckoutResult {
  success: boolean;
  repoUrl: string;
  branch: string;
  targetDir: string;
  commit: string;
}

export interface SessionInfo {
  id: string;
  cwd: string;
  commandTimeout?: number;
  user?: string;
  /** Names of the session's variables; values are never returned. */
  env: string[];
  unset?: string[];
  createdAt: string;
}

export interface ExposedPort {
  port: number;
  name?: string;
  public: boolean;
  /** The preview URL. */
  url: string;
  /** The preview URL, under the reference's name. */
  exposedAt: string;
  token: string;
  createdAt: string;
}

export interface PreviewLink {
  url: string;
  expiresAt: string;
}

export type CodeLanguage = "python" | "javascript" | "typescript";

export interface CodeContext {
  id: string;
  language: CodeLanguage;
  cwd: string;
  status: "ready" | "terminated" | string;
  createdAt: string;
  lastUsed: string;
  running?: boolean;
  executionCount: number;
}

/** One rich output: every representation the value offers. Images are base64. */
export interface Result {
  text?: string;
  html?: string;
  markdown?: string;
  latex?: string;
  json?: unknown;
  javascript?: string;
  svg?: string;
  png?: string;
  jpeg?: string;
  isMainResult?: boolean;
}

export interface ExecutionError {
  name: string;
  value: string;
  traceback: string[];
}

/** The result of runCode (the reference's ExecutionResult). */
export interface ExecutionResult {
  code: string;
  contextId: string;
  language: CodeLanguage;
  logs: { stdout: string[]; stderr: string[] };
  results: Result[];
  /** The code's own error (ZeroDivisionError ...); API errors are thrown instead. */
  error?: ExecutionError;
  executionCount: number;
  duration: number;
  truncated?: boolean;
}

/** Events of runCodeStream: `start`, then `stdout`, `stderr`, `result`, `execution_error` (the code's own error) as they happen, then exactly one `complete` or `error` (an API error with its `code`). */
export interface CodeEvent {
  type: "start" | "stdout" | "stderr" | "result" | "execution_error" | "error" | "complete";
  timestamp: string;
  contextId?: string;
  language?: CodeLanguage;
  data?: string;
  encoding?: "base64";
  result?: Result;
  error?: ExecutionError;
  executionCount?: number;
  duration?: number;
  truncated?: boolean;
  code?: string;
  message?: string;
}

export interface TerminalInfo {
  id: string;
  session?: string;
  shell: string;
  pid: number;
  cols: number;
  rows: number;
  clients: number;
  createdAt: string;
}

/** Quotas bound what a tenant holds (docs/tenants.md); 0 or absent is unlimited. */
export interface Quotas {
  maxSandboxes?: number;
  maxRunning?: number;
  /** Bytes: the sum of the memory limits of its running sandboxes. */
  maxMemory?: number;
}

/** An API key as listed (never its secret): GET /v1/keys. */
export interface KeyInfo {
  name: string;
  admin?: boolean;
  quotas: Quotas;
  usage: { sandboxes: number; running: number; memory: number };
  createdAt: string;
  rotatedAt: string;
}

/** A key just created or rotated: `key` is its secret, shown once. */
export interface KeyCreated {
  name: string;
  key: string;
  quotas: Quotas;
  admin?: boolean;
}

/** One page of GET /v1/sandboxes; pass nextPageToken as pageToken for the next. */
export interface SandboxPage {
  sandboxes: SandboxInfo[];
  nextPageToken?: string;
}
