/**
 * The cluster directory's commands, as log entry payloads: version u8 (1),
 * op u8 (2 = set homeserver), then the record as UTF-8 JSON. Low rate and
 * operator-driven, so JSON's cost does not matter; it is validated on decode.
 * The stored form of a record is the same encoding, with its status.
 */
import { isValidHomeserverId } from "../transport/tls.ts";
import { entryBody, entryPayload } from "../multiraft/entry-payload.ts";

/**
 * A homeserver's membership standing in the directory: "active" until it
 * leaves (or an operator removes it), then "left" for good (its record stays,
 * so certificates it signed remain checkable; rejoining needs a new invite).
 * "blocked" is not stored here: it is the identity index's block list
 * (AdminService.SetHomeserverBlocked), reported on top of this one.
 */
export type MembershipStatus = "active" | "left";

/** One homeserver of the cluster, as the directory records it. */
export interface HomeserverRecord {
  readonly id: string;
  /** host:port of its peer service. */
  readonly peerAddress: string;
  /** host:port of its client API. */
  readonly clientAddress: string;
  /** Its raw Ed25519 certificate-signing public key, base64; empty until it registers itself. */
  readonly signingKey: string;
  /** Absent in a set-homeserver command (which never changes it); "active" when first recorded. */
  readonly status?: MembershipStatus;
}

/** Whether `record` names a current member: recorded and not left (a record stored before statuses existed is active). */
export function isActiveRecord(record: HomeserverRecord | undefined): record is HomeserverRecord {
  return record !== undefined && record.status !== "left";
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
    (record.signingKey === "" || Buffer.from(record.signingKey, "base64").byteLength === 32) &&
    (record.status === undefined || record.status === "active" || record.status === "left")
  );
}

/** The entry payload (and stored value) of `record`. */
export function encodeSetHomeserver(record: HomeserverRecord): Uint8Array {
  const fields = { id: record.id, peerAddress: record.peerAddress, clientAddress: record.clientAddress, signingKey: record.signingKey };
  return entryPayload(setHomeserverOp, new TextEncoder().encode(JSON.stringify(record.status === undefined ? fields : { ...fields, status: record.status })));
}

/** Decodes a set-homeserver command, or undefined when the bytes are not a valid one. */
export function decodeSetHomeserver(data: Uint8Array): HomeserverRecord | undefined {
  const body = entryBody(data, setHomeserverOp);
  if (body === undefined || body.byteLength === 0) return undefined;
  try {
    const value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body)) as Record<string, unknown>;
    const record = { id: value["id"], peerAddress: value["peerAddress"], clientAddress: value["clientAddress"], signingKey: value["signingKey"] ?? "" };
    if (typeof record.id !== "string" || typeof record.peerAddress !== "string" || typeof record.clientAddress !== "string" || typeof record.signingKey !== "string") return undefined;
    const status = value["status"];
    if (status !== undefined && status !== "active" && status !== "left") return undefined;
    const typed: HomeserverRecord = status === undefined ? (record as HomeserverRecord) : { ...(record as HomeserverRecord), status };
    return isValidHomeserverRecord(typed) ? typed : undefined;
  } catch {
    return undefined;
  }
}
