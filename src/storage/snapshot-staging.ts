/**
 * Snapshot data from a leader, written to RocksDB chunk by chunk as it
 * arrives, so a follower never holds a whole snapshot in memory. The Raft core
 * is then handed a small descriptor in place of the data; the state machine
 * restores from the staged chunks, and the staged records go once the restore
 * is durable.
 *
 * ```
 * engine records   0x00 0x03 | transfer id: u64 big-endian | seq: u32 big-endian
 *   seq 0 .. n-1      chunk              the data, in order
 *   seq 0xffffffff    transfer header    the group id: written last, synced
 * ```
 *
 * A transfer without its header was cut off; one whose group's stored
 * snapshot does not name it was declined by the core or replaced.
 * {@link sweepStagedSnapshots} deletes both kinds when the engine opens. One
 * still named after its restore (a crash between the restore and its
 * deletion) goes when the driver hosts the group again.
 */
import { randomBytes } from "node:crypto";
import { setImmediate as eventLoopTurn } from "node:timers/promises";
import type { GroupId } from "../raft/types.ts";
import { crc32cFinish, crc32cInit, crc32cUpdate } from "./crc32c.ts";
import { EngineKind, GroupKeys, KeySpace, prefixEnd } from "./keys.ts";
import { CorruptionError, openRecord, sealRecord } from "./records.ts";
import { asBuffer, type RawBatchOp, type RawDb } from "./rocksdb-promises.ts";

const stagingPrefix = Uint8Array.of(KeySpace.Engine, EngineKind.StagedSnapshot);
const headerSeq = 0xffffffff;
/** Descriptor layout: magic (8), transfer id (8), chunks (4), bytes (8), crc32c (4). */
const descriptorMagic = Uint8Array.of(0xff, 0xff, 0x53, 0x54, 0x41, 0x47, 0x45, 0x44); // 0xffff "STAGED"
const descriptorBytes = 32;

/** What the core holds for staged snapshot data: which transfer, and what it must read back as. */
export interface StagedSnapshot {
  /** The transfer's id, as 16 hex digits. */
  readonly transferId: string;
  readonly chunks: number;
  readonly bytes: number;
  readonly crc32c: number;
}

/**
 * The descriptor of a staged snapshot, or undefined for data held whole.
 * Data held whole is a sequence of pairs whose first key length would be over
 * 4 GiB with this prefix, so the two never meet.
 */
export function parseStagedDescriptor(data: Uint8Array): StagedSnapshot | undefined {
  if (data.byteLength !== descriptorBytes) return undefined;
  for (let i = 0; i < descriptorMagic.length; i++) if (data[i] !== descriptorMagic[i]) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return {
    transferId: view.getBigUint64(8).toString(16).padStart(16, "0"),
    chunks: view.getUint32(16),
    bytes: Number(view.getBigUint64(20)),
    crc32c: view.getUint32(28),
  };
}

function encodeDescriptor(staged: StagedSnapshot): Uint8Array {
  const out = new Uint8Array(descriptorBytes);
  out.set(descriptorMagic, 0);
  const view = new DataView(out.buffer);
  view.setBigUint64(8, BigInt(`0x${staged.transferId}`));
  view.setUint32(16, staged.chunks);
  view.setBigUint64(20, BigInt(staged.bytes));
  view.setUint32(28, staged.crc32c);
  return out;
}

function transferPrefix(transferId: string): Uint8Array {
  const out = new Uint8Array(stagingPrefix.length + 8);
  out.set(stagingPrefix, 0);
  new DataView(out.buffer).setBigUint64(stagingPrefix.length, BigInt(`0x${transferId}`));
  return out;
}

function chunkKey(transferId: string, seq: number): Uint8Array {
  const prefix = transferPrefix(transferId);
  const out = new Uint8Array(prefix.length + 4);
  out.set(prefix, 0);
  new DataView(out.buffer).setUint32(prefix.length, seq);
  return out;
}

/** One snapshot transfer being written to storage. */
export interface SnapshotStaging {
  /** Writes the next chunk (unsynced). */
  add(chunk: Uint8Array): Promise<void>;
  /** Makes the staged data durable and returns what the core is to hold in its place. */
  finish(): Promise<Uint8Array>;
  /** Deletes what was staged: the transfer failed. */
  abort(): Promise<void>;
}

/** The engine's part the staging needs: raw reads and its writes (which count and fail the engine as any other). */
export interface StagingContext {
  readonly db: RawDb;
  write(ops: RawBatchOp[], sync: boolean): Promise<void>;
}

/** Starts staging a snapshot transfer for `groupId`. */
export function stageSnapshot(context: StagingContext, groupId: GroupId): SnapshotStaging {
  const transferId = randomBytes(8).toString("hex");
  let chunks = 0;
  let bytes = 0;
  let crc = crc32cInit;
  let writing: Promise<void> = Promise.resolve();
  return {
    add(chunk) {
      const key = chunkKey(transferId, chunks);
      chunks += 1;
      bytes += chunk.byteLength;
      crc = crc32cUpdate(crc, chunk);
      writing = writing.then(() => context.write([{ type: "put", key: asBuffer(key), value: sealRecord(key, chunk) }], false));
      return writing;
    },
    async finish() {
      await writing;
      const key = chunkKey(transferId, headerSeq);
      // Synced: RocksDB's synced write makes the unsynced chunks before it in the log durable too.
      await context.write([{ type: "put", key: asBuffer(key), value: sealRecord(key, new TextEncoder().encode(groupId)) }], true);
      return encodeDescriptor({ transferId, chunks, bytes, crc32c: crc32cFinish(crc) });
    },
    async abort() {
      await writing.catch(() => undefined);
      await discardStaged(context, transferId);
    },
  };
}

/**
 * The chunks of staged snapshot data, each checked against its checksum as it
 * is read, and the whole against the descriptor's count, length and CRC at
 * the end (a CorruptionError if any differs).
 */
export async function* stagedChunks(context: StagingContext, staged: StagedSnapshot): AsyncGenerator<Uint8Array> {
  const start = chunkKey(staged.transferId, 0);
  const end = chunkKey(staged.transferId, staged.chunks);
  let seq = 0;
  let bytes = 0;
  let crc = crc32cInit;
  const where = `staged snapshot ${staged.transferId}`;
  for await (const [key, value] of context.db.iterate(start, end)) {
    const expected = chunkKey(staged.transferId, seq);
    if (Buffer.compare(key, asBuffer(expected)) !== 0) throw new CorruptionError(where, `chunk ${seq} is missing`);
    const chunk = openRecord(key, value);
    seq += 1;
    bytes += chunk.byteLength;
    crc = crc32cUpdate(crc, chunk);
    yield chunk;
    await eventLoopTurn();
  }
  if (seq !== staged.chunks || bytes !== staged.bytes || crc32cFinish(crc) !== staged.crc32c) {
    throw new CorruptionError(where, `read ${seq} chunks and ${bytes} bytes, staged ${staged.chunks} and ${staged.bytes} (or the CRC differs)`);
  }
}

/** Deletes a transfer's staged records. */
export async function discardStaged(context: StagingContext, transferId: string): Promise<void> {
  const prefix = transferPrefix(transferId);
  const ops: RawBatchOp[] = [];
  for await (const key of context.db.keys(prefix, prefixEnd(prefix))) ops.push({ type: "del", key });
  await context.write(ops, false);
}

async function storedSnapshotNames(context: StagingContext, groupId: GroupId, transferId: string): Promise<boolean> {
  let dataKey: Uint8Array;
  try {
    dataKey = new GroupKeys(groupId).snapshotData;
  } catch {
    return false; // not a group id: nothing can name it
  }
  const stored = await context.db.get(dataKey);
  return stored !== undefined && parseStagedDescriptor(openRecord(dataKey, stored))?.transferId === transferId;
}

/**
 * Deletes every staged transfer that no group's stored snapshot names (cut
 * off, declined or replaced); returns how many went. Called when the engine
 * opens.
 */
export async function sweepStagedSnapshots(context: StagingContext): Promise<number> {
  const transfers = new Map<string, GroupId | undefined>();
  for await (const key of context.db.keys(stagingPrefix, prefixEnd(stagingPrefix))) {
    if (key.length !== stagingPrefix.length + 12) continue;
    const transferId = key.readBigUInt64BE(stagingPrefix.length).toString(16).padStart(16, "0");
    if (!transfers.has(transferId)) transfers.set(transferId, undefined);
    if (key.readUInt32BE(stagingPrefix.length + 8) !== headerSeq) continue;
    const header = await context.db.get(key);
    if (header !== undefined) transfers.set(transferId, new TextDecoder().decode(openRecord(key, header)));
  }
  let swept = 0;
  for (const [transferId, groupId] of transfers) {
    if (groupId !== undefined && (await storedSnapshotNames(context, groupId, transferId))) continue;
    await discardStaged(context, transferId);
    swept += 1;
  }
  return swept;
}
