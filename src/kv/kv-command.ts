/**
 * The commands of the replicated key-value store, as log entry payloads:
 * version u8, op u8, key length u16 (big-endian), key, value.
 */

/** Largest key a Put may carry, in bytes. */
export const keyBytesMax = 1024;
/** Largest value a Put may carry, in bytes. */
export const valueBytesMax = 1 << 20;

const version = 1;

/** The operations of the key-value store. */
export enum KvOp {
  Put = 1,
}

/** A decoded key-value command. */
export interface KvCommand {
  readonly op: KvOp;
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** Encodes a Put. Callers validate sizes first (see {@link keyBytesMax}, {@link valueBytesMax}). */
export function encodePut(key: Uint8Array, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + key.byteLength + value.byteLength);
  out[0] = version;
  out[1] = KvOp.Put;
  out[2] = key.byteLength >>> 8;
  out[3] = key.byteLength & 0xff;
  out.set(key, 4);
  out.set(value, 4 + key.byteLength);
  return out;
}

/** Decodes a command, or returns undefined for bytes that are not one. */
export function decodeKvCommand(data: Uint8Array): KvCommand | undefined {
  if (data.byteLength < 4 || data[0] !== version || data[1] !== KvOp.Put) return undefined;
  const keyLength = (data[2]! << 8) | data[3]!;
  if (keyLength === 0 || keyLength > keyBytesMax || 4 + keyLength > data.byteLength) return undefined;
  const value = data.subarray(4 + keyLength);
  if (value.byteLength > valueBytesMax) return undefined;
  return { op: KvOp.Put, key: data.subarray(4, 4 + keyLength), value };
}
