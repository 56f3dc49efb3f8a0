// Errors: every error the daemon answers becomes a SandboxError whose
// `code` is the daemon's stable code (docs/api.md). The subclass says the
// class of the error, chosen from the code first and the HTTP status second,
// as the Go SDK's errors.Is does, so patterns such as *_NOT_FOUND also
// cover codes added to the API later.

import type { ExecResult } from "./types.js";

/** The body of every non-2xx answer and the payload of `error` events. */
export interface WireError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

/** An error answered by the daemon, or a request the SDK refused to send. */
export class SandboxError extends Error {
  /** The daemon's stable code, e.g. `SANDBOX_NOT_FOUND`; empty when the body was not JSON. */
  readonly code: string;
  /** The HTTP status; 0 for stream `error` events and checks made before sending. */
  readonly status: number;
  /** Code-specific data, e.g. the output captured before `COMMAND_TIMEOUT`. */
  readonly details: Record<string, unknown>;
  /** For exec errors that come with output (timeout, session terminated): the partial result. */
  result?: ExecResult;

  constructor(code: string, message: string, status = 0, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(code ? `${code}: ${message}` : status ? `HTTP ${status}: ${message}` : message, options);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

/** `NOT_FOUND`, `SANDBOX_NOT_FOUND`, `FILE_NOT_FOUND`, any `*_NOT_FOUND`; HTTP 404. */
export class NotFoundError extends SandboxError {}
/** `INVALID_JSON`, `VALIDATION_FAILED`, `REQUEST_TOO_LARGE`, any `INVALID_*`; HTTP 400, 413, 422. */
export class InvalidRequestError extends SandboxError {}
/** `UNAUTHORIZED`; HTTP 401. */
export class UnauthorizedError extends SandboxError {}
/** Any `*_EXISTS`, `*_CONFLICT`, `*_ALREADY_*` (`SESSION_ALREADY_EXISTS`, `PORT_ALREADY_EXPOSED`); HTTP 409. */
export class ConflictError extends SandboxError {}
/** `COMMAND_TIMEOUT`, `PROCESS_READY_TIMEOUT`, any `*_TIMEOUT`; HTTP 408. `details` holds the partial output. */
export class TimeoutError extends SandboxError {}
/** `SESSION_TERMINATED`: the session's shell exited; the next call gets a fresh one. */
export class SessionTerminatedError extends SandboxError {}
/** `CONTEXT_TERMINATED`: the code context's interpreter died. */
export class ContextTerminatedError extends SandboxError {}
/** `PROCESS_EXITED_BEFORE_READY`: a readiness wait on a process that ended first. */
export class ExitedBeforeReadyError extends SandboxError {}
/** `RESOURCE_EXHAUSTED`, `CAPACITY_EXCEEDED`, `SESSION_BUSY`, `CONTEXT_BUSY`; HTTP 429. */
export class ResourceExhaustedError extends SandboxError {}
/** `PYTHON_NOT_AVAILABLE`, `JAVASCRIPT_NOT_AVAILABLE`, any `*_NOT_AVAILABLE`; HTTP 501. */
export class NotAvailableError extends SandboxError {}
/**
 * `SANDBOX_UNAVAILABLE`, any `*_UNAVAILABLE`; HTTP 502, 503, 504; a daemon
 * that cannot be reached; a stream cut before its terminal event. Worth
 * retrying later.
 */
export class UnavailableError extends SandboxError {}

type ErrorClass = new (code: string, message: string, status?: number, details?: Record<string, unknown>, options?: { cause?: unknown }) => SandboxError;

function classOfCode(code: string): ErrorClass | undefined {
  switch (code) {
    case "":
      return undefined;
    case "UNAUTHORIZED":
      return UnauthorizedError;
    case "SESSION_TERMINATED":
      return SessionTerminatedError;
    case "CONTEXT_TERMINATED":
      return ContextTerminatedError;
    case "PROCESS_EXITED_BEFORE_READY":
      return ExitedBeforeReadyError;
    case "INVALID_JSON":
    case "VALIDATION_FAILED":
    case "REQUEST_TOO_LARGE":
      return InvalidRequestError;
    case "RESOURCE_EXHAUSTED":
    case "CAPACITY_EXCEEDED":
    case "SESSION_BUSY":
    case "CONTEXT_BUSY":
      return ResourceExhaustedError;
  }
  if (code === "NOT_FOUND" || code.endsWith("_NOT_FOUND")) return NotFoundError;
  if (code.startsWith("INVALID_")) return InvalidRequestError;
  if (code.endsWith("_EXISTS") || code.endsWith("_CONFLICT") || code.includes("_ALREADY_")) return ConflictError;
  if (code === "TIMEOUT" || code.endsWith("_TIMEOUT")) return TimeoutError;
  if (code.endsWith("_NOT_AVAILABLE")) return NotAvailableError;
  if (code.endsWith("_UNAVAILABLE")) return UnavailableError;
  return undefined;
}

function classOfStatus(status: number): ErrorClass | undefined {
  switch (status) {
    case 400:
    case 413:
    case 422:
      return InvalidRequestError;
    case 401:
      return UnauthorizedError;
    case 404:
      return NotFoundError;
    case 408:
      return TimeoutError;
    case 409:
      return ConflictError;
    case 429:
      return ResourceExhaustedError;
    case 501:
      return NotAvailableError;
    case 502:
    case 503:
    case 504:
      return UnavailableError;
  }
  return undefined;
}

/** Builds the SandboxError subclass for a code and status. */
export function errorFromCode(code: string, message: string, status = 0, details: Record<string, unknown> = {}, options?: { cause?: unknown }): SandboxError {
  const Class = classOfCode(code) ?? classOfStatus(status) ?? SandboxError;
  return new Class(code, message, status, details, options);
}

/** Builds the error of a non-2xx answer from its status and body text. */
export function errorFromResponse(status: number, statusText: string, body: string): SandboxError {
  try {
    const w = JSON.parse(body) as Partial<WireError>;
    if (w && typeof w.code === "string" && w.code !== "") {
      return errorFromCode(w.code, String(w.message ?? ""), status, (w.details as Record<string, unknown>) ?? {});
    }
  } catch {
    // Not JSON: an error page from a proxy. Its first line is the message.
  }
  const first = body.split("\n", 1)[0]?.trim().slice(0, 512) || statusText;
  return errorFromCode("", first, status);
}

/** An error the SDK raises itself before sending a request the daemon would refuse. */
export function invalid(code: string, message: string): SandboxError {
  return errorFromCode(code, message);
}
