/**
 * Key layout of the KeyPackage directory (after the namespace byte 'p'):
 * - 'm' + device id -> queue bounds: head u64 BE, tail u64 BE (next to hand out, next free slot);
 * - 'q' + device id + 0x00 + slot u64 BE -> StoredKeyPackage (one-time, FIFO);
 * - 'l' + device id -> StoredKeyPackage (last resort);
 * - 'a' + user name -> AllowList.
 * Device ids contain no 0x00 byte, so one device's slots never interleave with another's.
 */

const text = new TextEncoder();

function tagged(tag: string, name: string, suffix: Uint8Array = new Uint8Array(0)): Uint8Array {
  const body = text.encode(name);
  const out = new Uint8Array(1 + body.byteLength + suffix.byteLength);
  out[0] = tag.charCodeAt(0);
  out.set(body, 1);
  out.set(suffix, 1 + body.byteLength);
  return out;
}

/** Key of a device's queue bounds. */
export const queueBoundsKey = (deviceId: string): Uint8Array => tagged("m", deviceId);
/** Key of a device's last-resort KeyPackage. */
export const lastResortKey = (deviceId: string): Uint8Array => tagged("l", deviceId);
/** Key of a user's claim allow list. */
export const allowListKey = (userName: string): Uint8Array => tagged("a", userName);

/** Key of slot `slot` of a device's queue. */
export function queueSlotKey(deviceId: string, slot: bigint): Uint8Array {
  const suffix = new Uint8Array(9);
  new DataView(suffix.buffer).setBigUint64(1, slot);
  return tagged("q", deviceId, suffix);
}

/** A device's queue: slots [head, tail) hold KeyPackages not yet handed out. */
export interface QueueBounds {
  readonly head: bigint;
  readonly tail: bigint;
}

export function encodeQueueBounds(bounds: QueueBounds): Uint8Array {
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, bounds.head);
  view.setBigUint64(8, bounds.tail);
  return out;
}

/** Decodes stored bounds; an absent key is an empty queue. */
export function decodeQueueBounds(bytes: Uint8Array | undefined): QueueBounds {
  if (bytes === undefined) return { head: 0n, tail: 0n };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { head: view.getBigUint64(0), tail: view.getBigUint64(8) };
}
