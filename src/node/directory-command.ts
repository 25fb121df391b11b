/**
 * The cluster directory's commands, as log entry payloads: version u8 (1),
 * op u8 (2 = set homeserver), then the record as UTF-8 JSON. Low rate and
 * operator-driven, so JSON's cost does not matter; it is validated on decode.
 */
import { isValidHomeserverId } from "../transport/tls.ts";

/** One homeserver of the cluster, as the directory records it. */
export interface HomeserverRecord {
  readonly id: string;
  /** host:port of its peer service. */
  readonly peerAddress: string;
  /** host:port of its client API. */
  readonly clientAddress: string;
  /** Its raw Ed25519 certificate-signing public key, base64; empty until it registers itself. */
  readonly signingKey: string;
}

/** The op byte of a directory command (the key-value store uses 1). */
export const setHomeserverOp = 2;

const addressPattern = /^[A-Za-z0-9.\-[\]:]{1,200}:\d{1,5}$/;

/** Whether `record` is well formed. */
export function isValidHomeserverRecord(record: HomeserverRecord): boolean {
  return (
    isValidHomeserverId(record.id) &&
    addressPattern.test(record.peerAddress) &&
    addressPattern.test(record.clientAddress) &&
    (record.signingKey === "" || Buffer.from(record.signingKey, "base64").byteLength === 32)
  );
}

export function encodeSetHomeserver(record: HomeserverRecord): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify({ id: record.id, peerAddress: record.peerAddress, clientAddress: record.clientAddress, signingKey: record.signingKey }));
  const out = new Uint8Array(2 + json.byteLength);
  out[0] = 1;
  out[1] = setHomeserverOp;
  out.set(json, 2);
  return out;
}

/** Decodes a set-homeserver command, or undefined when the bytes are not a valid one. */
export function decodeSetHomeserver(data: Uint8Array): HomeserverRecord | undefined {
  if (data.byteLength < 3 || data[0] !== 1 || data[1] !== setHomeserverOp) return undefined;
  try {
    const value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(2))) as Record<string, unknown>;
    const record = { id: value["id"], peerAddress: value["peerAddress"], clientAddress: value["clientAddress"], signingKey: value["signingKey"] ?? "" };
    if (typeof record.id !== "string" || typeof record.peerAddress !== "string" || typeof record.clientAddress !== "string" || typeof record.signingKey !== "string") return undefined;
    const typed = record as HomeserverRecord;
    return isValidHomeserverRecord(typed) ? typed : undefined;
  } catch {
    return undefined;
  }
}
