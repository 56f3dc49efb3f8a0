// Server-sent events without EventSource: EventSource cannot send a POST
// body or an Authorization header, and Node has none. The parser follows the
// HTML standard's rules (event, data, comments, CR/LF/CRLF line ends) and
// bounds what one event may hold, so a hostile or broken server cannot make
// the client buffer without end.

import { errorFromCode, SandboxError, UnavailableError } from "./errors.js";

/** One raw event: its `event:` name and its joined `data:` lines. */
export interface RawEvent {
  event: string;
  data: string;
}

/** Upper bound of one event's data (a code result carries up to 16 MiB of base64 image). */
export const MAX_EVENT_BYTES = 48 << 20;

/**
 * Yields the events of a text/event-stream body as they arrive. Comments
 * (`: keepalive`) are skipped. Cancelling the iteration (a `break` in
 * `for await`) cancels the body, which closes the connection.
 */
export async function* readSSE(body: ReadableStream<Uint8Array>): AsyncGenerator<RawEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const lineEnd = /[\r\n]/g;
  // The start of a line not ended yet, kept as parts so that a long line
  // split into many chunks is copied once, not once per chunk.
  let parts: string[] = [];
  let partsLen = 0;
  let afterCR = false; // the last chunk ended with CR: a leading LF is its CRLF's
  let event = "";
  let data: string[] = [];
  let size = 0;
  let done = false;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) {
        done = true; // a last line without its line end is dropped, as the standard says
        break;
      }
      const text = decoder.decode(r.value, { stream: true });
      let i = 0;
      if (afterCR && text.length > 0) {
        afterCR = false;
        if (text[0] === "\n") i = 1;
      }
      while (i < text.length) {
        lineEnd.lastIndex = i;
        const m = lineEnd.exec(text);
        if (!m) {
          parts.push(text.slice(i));
          partsLen += text.length - i;
          if (partsLen > MAX_EVENT_BYTES) throw errorFromCode("EVENT_TOO_LARGE", `a line is longer than ${MAX_EVENT_BYTES} bytes`);
          break;
        }
        const j = m.index;
        const line = partsLen > 0 ? parts.join("") + text.slice(i, j) : text.slice(i, j);
        parts = [];
        partsLen = 0;
        if (text[j] === "\r") {
          if (j + 1 < text.length) i = j + (text[j + 1] === "\n" ? 2 : 1);
          else {
            afterCR = true;
            i = j + 1;
          }
        } else {
          i = j + 1;
        }
        if (line === "") {
          if (data.length > 0) yield { event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
          size = 0;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") {
          size += value.length + 1;
          if (size > MAX_EVENT_BYTES) throw errorFromCode("EVENT_TOO_LARGE", `an event is larger than ${MAX_EVENT_BYTES} bytes`);
          data.push(value);
        }
        // id and retry mean nothing to these streams: nothing is resumed.
      }
    }
  } finally {
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/**
 * The one end-of-stream rule of every stream of the API: an event named
 * `complete`, `exit` or `error` ends its stream, whatever it carries, and
 * nothing follows it. Events that report a failure without ending the
 * stream have other names (a code run's `execution_error`).
 */
export function isTerminal(eventName: string): boolean {
  return eventName === "complete" || eventName === "exit" || eventName === "error";
}

/** Every event of the daemon's streams carries its `type`. */
export interface TypedEvent {
  type: string;
  timestamp?: string;
}

/**
 * A live stream of the daemon's events: an async iterable that yields each
 * event as it arrives. It ends after the stream's terminal event (see
 * isTerminal: `complete`, `exit` or `error`). A stream cut before that
 * throws an UnavailableError, never a made-up completion; an aborted signal
 * throws the signal's reason. Leaving a `for await` loop early, `close()`,
 * or aborting the signal closes the connection, and the daemon then stops
 * what the stream was following (a command is killed, a code run
 * interrupted). A stream can be iterated once.
 */
export class EventStream<T extends TypedEvent> implements AsyncIterable<T> {
  readonly #body: ReadableStream<Uint8Array>;
  readonly #mustEnd: boolean;
  readonly #what: string;
  readonly #signal: AbortSignal | undefined;
  #used = false;

  /** @internal */
  constructor(body: ReadableStream<Uint8Array>, what: string, mustEnd = true, signal?: AbortSignal) {
    this.#body = body;
    this.#what = what;
    this.#mustEnd = mustEnd;
    this.#signal = signal;
  }

  /** The raw text/event-stream body, for code that parses it itself (the reference's parseSSEStream). */
  toReadableStream(): ReadableStream<Uint8Array> {
    this.#claim();
    return this.#body;
  }

  /** Ends the stream and closes its connection. Idempotent. */
  async close(): Promise<void> {
    if (!this.#used) {
      this.#used = true;
      await this.#body.cancel().catch(() => {});
    }
  }

  #claim(): void {
    if (this.#used) throw new Error(`${this.#what} was already read or closed`);
    this.#used = true;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    this.#claim();
    const signal = this.#signal;
    try {
      for await (const raw of readSSE(this.#body)) {
        let ev: T;
        try {
          ev = JSON.parse(raw.data) as T;
        } catch (cause) {
          throw new UnavailableError("", `${this.#what}: an event is not JSON`, 0, {}, { cause });
        }
        if (typeof ev !== "object" || ev === null) continue;
        if (!ev.type) (ev as { type: string }).type = raw.event;
        yield ev;
        if (isTerminal(raw.event)) return;
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (err instanceof SandboxError) throw err;
      throw new UnavailableError("", `${this.#what} broke: ${String((err as Error)?.message ?? err)}`, 0, {}, { cause: err });
    }
    if (signal?.aborted) throw signal.reason;
    if (this.#mustEnd) throw new UnavailableError("", `${this.#what} ended before its terminal event`);
  }
}

/**
 * The reference SDK's parseSSEStream: yields the JSON events of an event
 * stream. It takes an EventStream this SDK returned (then it is the stream
 * itself) or any text/event-stream body.
 */
export async function* parseSSEStream<T = TypedEvent>(stream: EventStream<TypedEvent> | ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<T> {
  if (stream instanceof EventStream) {
    yield* stream as unknown as AsyncIterable<T>;
    return;
  }
  for await (const raw of readSSE(stream)) {
    if (signal?.aborted) throw signal.reason;
    yield JSON.parse(raw.data) as T;
  }
}
