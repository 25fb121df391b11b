/**
 * Direct inbox messages in the cluster log: entry payload = version byte 1,
 * op byte {@link directInboxOp}, then a DirectCommand. Every homeserver
 * applies the entry; only the target device's sponsoring homeserver queues it.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DirectCommandSchema, type DirectCommand } from "../gen/epochd/inbox/v1/inbox_state_pb.ts";
import { entryBody, entryPayload } from "../multiraft/entry-payload.ts";

/** The op byte of a direct-message entry (after the version byte 1). */
export const directInboxOp = 6;

/** Length of the sender-chosen nonce that makes a direct message's id. */
export const directNonceBytes = 16;

/** Encodes a direct message as a log entry payload. */
export function encodeDirectCommand(command: Omit<DirectCommand, "$typeName" | "$unknown">): Uint8Array {
  return entryPayload(directInboxOp, toBinary(DirectCommandSchema, create(DirectCommandSchema, command)));
}

/** Decodes a direct-message entry payload; undefined if malformed. */
export function decodeDirectCommand(data: Uint8Array): DirectCommand | undefined {
  const body = entryBody(data, directInboxOp);
  if (body === undefined) return undefined;
  try {
    return fromBinary(DirectCommandSchema, body);
  } catch {
    return undefined;
  }
}

/** The stable id of a direct message: the sender and its nonce, so a retried send dedups. */
export function directMessageId(senderDeviceId: string, nonce: Uint8Array): string {
  return `direct/${senderDeviceId}/${Buffer.from(nonce).toString("hex")}`;
}
