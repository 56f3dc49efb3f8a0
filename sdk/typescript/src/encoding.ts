// Base64 and UTF-8 helpers on web APIs only (atob/btoa, TextEncoder), so the
// SDK runs unchanged in Node, Bun, Deno, Workers and browsers.

const utf8 = new TextEncoder();

/** Bytes of a string (UTF-8) or of a byte array. */
export function toBytes(data: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof data === "string") return utf8.encode(data);
  return data instanceof Uint8Array ? data : new Uint8Array(data);
}

export function bytesToBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

export function base64ToBytes(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The text of a wire chunk: base64 chunks are decoded (invalid UTF-8 becomes U+FFFD). */
export function chunkText(data: string | undefined, encoding: string | undefined): string {
  if (!data) return "";
  return encoding === "base64" ? new TextDecoder().decode(base64ToBytes(data)) : data;
}
