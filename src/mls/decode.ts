/**
 * Bounded, total decoding of the MLSMessage framing. The size is checked before a single byte is parsed,
 * trailing bytes are refused (one message has exactly one encoding, so its hash identifies it), and any
 * exception inside ts-mls becomes a Rejection.
 */
import { hash } from "node:crypto";
import type { MLSMessage } from "ts-mls";
import { decodeMlsMessage } from "ts-mls/message.js";
import { reject, type Rejection } from "./rejection.ts";

/** The five MLS wire formats, by the short names the checks report. */
export type WireformatShortName = "public" | "private" | "welcome" | "group_info" | "key_package";

/** Maps a ts-mls wire format name to its short name. */
export function shortWireformat(message: MLSMessage): WireformatShortName {
  switch (message.wireformat) {
    case "mls_public_message":
      return "public";
    case "mls_private_message":
      return "private";
    case "mls_welcome":
      return "welcome";
    case "mls_group_info":
      return "group_info";
    case "mls_key_package":
      return "key_package";
  }
}

/**
 * Decodes `bytes` as one MLSMessage of protocol version mls10, at most `maxBytes` long, with no trailing
 * bytes. `what` names the input in the rejection reason ("commit", "GroupInfo", ...).
 */
export function decodeFramed(bytes: Uint8Array, maxBytes: number, what: string): MLSMessage | Rejection {
  const unfit = checkFramedSize(bytes, maxBytes, what);
  if (unfit !== undefined) return unfit;
  let decoded: [MLSMessage, number] | undefined;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch {
    decoded = undefined;
  }
  if (decoded === undefined) return undecodable(what);
  const [message, bytesRead] = decoded;
  if (bytesRead !== bytes.length) return trailingBytes(what, bytes.length - bytesRead);
  if (message.version !== "mls10") return reject(`${what}: unsupported protocol version`);
  return message;
}

/** What {@link decodeFramed} refuses before parsing: no byte array, no bytes, or more than `maxBytes`. */
export function checkFramedSize(bytes: Uint8Array, maxBytes: number, what: string): Rejection | undefined {
  if (!(bytes instanceof Uint8Array)) return reject(`${what}: not a byte array`);
  if (bytes.length === 0) return reject(`${what}: empty`);
  if (bytes.length > maxBytes) return reject(`${what}: ${bytes.length} bytes exceeds the limit of ${maxBytes}`);
  return undefined;
}

/** The rejection of bytes that do not decode as an MLSMessage. */
export function undecodable(what: string): Rejection {
  return reject(`${what}: not a decodable MLSMessage`);
}

/** The rejection of an MLSMessage followed by `count` more bytes. */
export function trailingBytes(what: string, count: number): Rejection {
  return reject(`${what}: ${count} trailing bytes after the MLSMessage`);
}

/** SHA-256 of `bytes`: how epochd names a commit (the hash the homeservers co-sign). */
export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(hash("sha256", bytes, "buffer"));
}

/** Byte-wise equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Lower-case hex, for reasons and map keys. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}
