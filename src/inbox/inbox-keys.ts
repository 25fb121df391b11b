/**
 * Where inboxes live in the cluster group's state key space, under the LOCAL
 * namespace byte 'q' (0x71): each homeserver writes only the inboxes of the
 * devices it sponsors, so these keys differ between homeservers and are kept
 * out of Raft snapshots (see docs/ARCHITECTURE.md, "Inboxes").
 *
 *   'q' 'e' len(deviceId) deviceId seq   -> InboxEntry (stored form: no certificate)
 *   'q' 'a' len(deviceId) deviceId       -> acked-through sequence (u64)
 *
 * Sequences are u64 big-endian, so RocksDB iterates a device's entries in order.
 */

/** The namespace byte of every inbox key. */
export const inboxNamespace = 0x71; // 'q'
const entryKind = 0x65; // 'e'
const ackedKind = 0x61; // 'a'

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Longest device id an inbox key holds (one length byte). */
export const inboxDeviceIdBytesMax = 255;

function deviceKey(kind: number, deviceId: string, extraBytes: number): { key: Uint8Array; end: number } {
  const id = encoder.encode(deviceId);
  if (id.byteLength === 0 || id.byteLength > inboxDeviceIdBytesMax) throw new RangeError(`device id of ${id.byteLength} bytes cannot key an inbox`);
  const key = new Uint8Array(3 + id.byteLength + extraBytes);
  key[0] = inboxNamespace;
  key[1] = kind;
  key[2] = id.byteLength;
  key.set(id, 3);
  return { key, end: 3 + id.byteLength };
}

/** Key of entry `sequence` of `deviceId`'s inbox. */
export function inboxEntryKey(deviceId: string, sequence: bigint): Uint8Array {
  const { key, end } = deviceKey(entryKind, deviceId, 8);
  new DataView(key.buffer).setBigUint64(end, sequence);
  return key;
}

/** Prefix of all of `deviceId`'s entries. */
export function inboxEntryPrefix(deviceId: string): Uint8Array {
  return deviceKey(entryKind, deviceId, 0).key;
}

/** Prefix of every entry of every device. */
export const allEntriesPrefix = Uint8Array.of(inboxNamespace, entryKind);
/** Prefix of every acked-through record. */
export const allAckedPrefix = Uint8Array.of(inboxNamespace, ackedKind);

/** Key of `deviceId`'s acked-through record. */
export function inboxAckedKey(deviceId: string): Uint8Array {
  return deviceKey(ackedKind, deviceId, 0).key;
}

/** Splits an entry or acked key into device id and (entries) sequence; undefined if it is neither. */
export function parseInboxKey(key: Uint8Array): { deviceId: string; sequence: bigint | undefined } | undefined {
  if (key.byteLength < 4 || key[0] !== inboxNamespace) return undefined;
  const length = key[2]!;
  const idEnd = 3 + length;
  const deviceId = decoder.decode(key.subarray(3, idEnd));
  if (key[1] === ackedKind && key.byteLength === idEnd) return { deviceId, sequence: undefined };
  if (key[1] !== entryKind || key.byteLength !== idEnd + 8) return undefined;
  return { deviceId, sequence: new DataView(key.buffer, key.byteOffset, key.byteLength).getBigUint64(idEnd) };
}

/** Encodes a sequence number as 8 big-endian bytes. */
export function encodeSequence(sequence: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, sequence);
  return out;
}

/** Decodes {@link encodeSequence}; 0 for anything malformed. */
export function decodeSequence(bytes: Uint8Array): bigint {
  return bytes.byteLength === 8 ? new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0) : 0n;
}
