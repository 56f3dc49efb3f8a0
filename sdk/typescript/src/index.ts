// @sandboxd/sdk: the TypeScript/JavaScript client of sandboxd, with the
// reference Sandbox SDK's method names and option shapes, so that porting
// code from it is an import change:
//
//   import { SandboxClient, getSandbox } from "@sandboxd/sdk";
//   const client = SandboxClient.fromEnv();           // SANDBOX_URL, SANDBOX_TOKEN
//   const sb = getSandbox(client, "user-123");
//   const { stdout, exitCode } = await sb.exec("python3 -c 'print(2+2)'");
//
// Zero runtime dependencies: fetch, web streams, its own SSE parser.

export { SandboxClient, getSandbox, DEFAULT_URL } from "./client.js";
export type { ClientOptions, CallOptions, ListSandboxesOptions, ListPageOptions, CreateKeyOptions } from "./client.js";
export { Sandbox, ExecutionSession, Process } from "./sandbox.js";
export type {
  ExecOptions,
  ProcessOptions,
  KillOptions,
  WaitForPortOptions,
  WaitForLogOptions,
  WriteFileOptions,
  ReadFileOptions,
  PathOptions,
  MkdirOptions,
  DeleteOptions,
  MoveOptions,
  ListFilesOptions,
  WatchOptions,
  GitCheckoutOptions,
  SessionOptions,
  ExposePortOptions,
  CreateContextOptions,
  RunCodeOptions,
  OutputMessage,
  TerminalOptions,
} from "./sandbox.js";
export { EventStream, isTerminal, parseSSEStream, readSSE } from "./sse.js";
export type { RawEvent, TypedEvent } from "./sse.js";
export {
  SandboxError,
  NotFoundError,
  InvalidRequestError,
  UnauthorizedError,
  ConflictError,
  TimeoutError,
  SessionTerminatedError,
  ContextTerminatedError,
  ExitedBeforeReadyError,
  ResourceExhaustedError,
  NotAvailableError,
  UnavailableError,
  errorFromCode,
} from "./errors.js";
export { base64ToBytes, bytesToBase64 } from "./encoding.js";
export type * from "./types.js";
