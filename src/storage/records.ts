/**
 * Checksummed records: every value the engine stores is
 * `crc32c(key | payload)` as 4 bytes big-endian, followed by the payload.
 * Covering the key means a payload copied or moved to another key fails its
 * check too. A failed check raises {@link CorruptionError}: the engine never
 * serves data it cannot vouch for.
 */
import { setImmediate as eventLoopTurn } from "node:timers/promises";
import { crc32cFinish, crc32cInit, crc32cUpdate } from "./crc32c.ts";
import { describeKey } from "./keys.ts";

/** Bytes of the checksum in front of every payload. */
export const checksumBytes = 4;

/**
 * Thrown when a stored record fails its checksum, does not decode, or the
 * records of a group contradict each other (a gap in the log, an unknown key).
 * The node must stop: wipe its data directory and let the homeserver rejoin
 * its groups through snapshots (an older copy must not be restored into a
 * running cluster: it has forgotten votes and acknowledged writes).
 */
export class CorruptionError extends Error {
  constructor(
    /** What is corrupt, e.g. `group "c1" log entry 17 (key 0x...)`. */
    readonly location: string,
    /** Why it is considered corrupt. */
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `storage corruption in ${location}: ${reason}. Refusing to serve data from this store; ` +
        `wipe the data directory so the homeserver rejoins through a snapshot (do not restore an older copy into a running cluster)`,
      options,
    );
    this.name = "CorruptionError";
  }
}

function checksumOf(key: Uint8Array, payload: Uint8Array): number {
  return crc32cFinish(crc32cUpdate(crc32cUpdate(crc32cInit, key), payload));
}

/** The stored value for `payload` under `key`. */
export function sealRecord(key: Uint8Array, payload: Uint8Array): Buffer {
  const value = Buffer.allocUnsafe(checksumBytes + payload.length);
  value.writeUInt32BE(checksumOf(key, payload), 0);
  value.set(payload, checksumBytes);
  return value;
}

/** Bytes checksummed and copied between two yields to the event loop in {@link sealRecordInSlices}. */
export const sealSliceBytes = 1 << 20;

/**
 * Like {@link sealRecord}, for a large payload (a snapshot of tens of MiB):
 * the checksum and the copy go a slice of {@link sealSliceBytes} at a time,
 * with a turn of the event loop between slices, so peer streams, heartbeats
 * and the Ready loop keep running. In one piece a 64 MiB record blocked the
 * loop for about 400 ms on this 2-core machine under load.
 */
export async function sealRecordInSlices(key: Uint8Array, payload: Uint8Array): Promise<Buffer> {
  const value = Buffer.allocUnsafe(checksumBytes + payload.length);
  let crc = crc32cUpdate(crc32cInit, key);
  for (let at = 0; at < payload.length; at += sealSliceBytes) {
    if (at > 0) await eventLoopTurn();
    const slice = payload.subarray(at, at + sealSliceBytes);
    crc = crc32cUpdate(crc, slice);
    value.set(slice, checksumBytes + at);
  }
  value.writeUInt32BE(crc32cFinish(crc), 0);
  return value;
}

/** The payload of a stored value, after checking it; throws {@link CorruptionError} on mismatch. */
export function openRecord(key: Uint8Array, value: Uint8Array): Uint8Array {
  if (value.length < checksumBytes) {
    throw new CorruptionError(describeKey(key), `record of ${value.length} bytes is shorter than its checksum`);
  }
  const stored = new DataView(value.buffer, value.byteOffset, checksumBytes).getUint32(0, false);
  const payload = new Uint8Array(value.buffer, value.byteOffset + checksumBytes, value.length - checksumBytes);
  const computed = checksumOf(key, payload);
  if (stored !== computed) {
    throw new CorruptionError(
      describeKey(key),
      `checksum mismatch (stored 0x${stored.toString(16).padStart(8, "0")}, computed 0x${computed.toString(16).padStart(8, "0")})`,
    );
  }
  return payload;
}

/** Runs a decoder on a checked payload, turning a decode failure into {@link CorruptionError}. */
export function decodeRecord<T>(key: Uint8Array, payload: Uint8Array, decode: (payload: Uint8Array) => T): T {
  try {
    return decode(payload);
  } catch (error: unknown) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new CorruptionError(describeKey(key), `record does not decode (${reason})`, { cause: error });
  }
}
