/**
 * One Raft group's slice of the shared RocksDB: its log mirror (the
 * {@link MemoryStorage} the core reads synchronously), its durable applied index
 * and its state machine data.
 */
import { assert } from "../raft/assert.ts";
import { SnapshotOutOfDateError, type MemoryStorage } from "../raft/memory-storage.ts";
import { isFurtherFloor, type CatchUpFloor, type ConfState, type GroupId, type LogIndex, type Ready, type Snapshot } from "../raft/types.ts";
import {
  encodeCatchUpFloor,
  encodeCounter,
  encodeEntryBody,
  encodeHardState,
  encodeLogPosition,
  encodeSnapshotMetadata,
} from "./codec.ts";
import type { EngineContext } from "./engine-context.ts";
import { groupRegistryKey, prefixEnd, type GroupKeys } from "./keys.ts";
import { openRecord, sealRecord, sealRecordInSlices } from "./records.ts";
import { asBuffer, type RawBatchOp } from "./rocksdb-promises.ts";

/** One change to a group's state machine data. */
export type KvWrite = { readonly key: Uint8Array; readonly value: Uint8Array } | { readonly key: Uint8Array; readonly delete: true };

/** The write batch of one step and what to change in memory once it is durable. */
export interface PlannedWrite {
  readonly ops: RawBatchOp[];
  /** Updates the mirror; called only after `ops` were written. */
  readonly commit: () => void;
}

/**
 * A group's durable state. Obtain one from `StorageEngine.openGroup`; pass
 * {@link log} to the Raft core as its storage. All writes go through the engine
 * (`persistReadies`, `apply`) or the methods here, which keep the mirror and the
 * disk in step.
 *
 * After a restart, if `appliedIndex < log.snapshot().metadata.index`, the node
 * crashed between persisting a leader's snapshot and restoring the state machine
 * from it, or before the restored state was taken up: restore from
 * `log.snapshot().data` (see {@link restoreStateMachine}) before applying anything.
 */
export class GroupStore {
  /** The durable applied index: as loaded, then as last written by apply or restore. */
  appliedIndex: LogIndex;
  /**
   * The durable catch-up floor (see Raft.catchUpFloor): none, or the commit
   * index of the member that asked this homeserver to host a copy made anew,
   * with the term of that member's last entry.
   */
  catchUpFloor: CatchUpFloor;
  private closed = false;
  private readonly reader: GroupReader;

  /** @internal Built by the engine only. */
  constructor(
    private readonly context: EngineContext,
    private readonly keys: GroupKeys,
    /** The uncompacted log, hard state and latest snapshot, mirrored in memory. */
    readonly log: MemoryStorage,
    appliedIndex: LogIndex,
    catchUpFloor: CatchUpFloor,
  ) {
    this.appliedIndex = appliedIndex;
    this.catchUpFloor = catchUpFloor;
    this.reader = new GroupReader(context, keys);
  }

  get groupId(): GroupId {
    return this.keys.groupId;
  }

  private put(key: Uint8Array, payload: Uint8Array): RawBatchOp {
    return { type: "put", key: asBuffer(key), value: sealRecord(key, payload) };
  }

  private deleteEntries(ops: RawBatchOp[], from: LogIndex, to: LogIndex): void {
    for (let index = from; index <= to; index++) ops.push({ type: "del", key: asBuffer(this.keys.logEntry(index)) });
  }

  /** @internal Marks the store unusable once the engine closed or dropped it. */
  markClosed(): void {
    this.closed = true;
  }

  private checkOpen(): void {
    assert(!this.closed, `group ${this.groupId} is closed`);
  }

  /**
   * @internal Plans step 1 of handling `ready`: its snapshot (replacing the whole
   * log), its entries (replacing stored entries from the first new index on) and
   * its hard state. Must run inside the log queue, so the mirror is current.
   */
  planPersist(ready: Ready): PlannedWrite {
    this.checkOpen();
    const ops: RawBatchOp[] = [];
    let firstIndex = this.log.firstIndex();
    let lastIndex = this.log.lastIndex();
    const snapshot = ready.snapshot;
    if (snapshot !== null) {
      const storedIndex = this.log.snapshot().metadata.index;
      if (snapshot.metadata.index <= storedIndex && storedIndex > 0) {
        throw new SnapshotOutOfDateError(snapshot.metadata.index, storedIndex);
      }
      this.planSnapshotRecords(ops, snapshot);
      ops.push(this.put(this.keys.logStart, encodeLogPosition(snapshot.metadata)));
      this.deleteEntries(ops, firstIndex, lastIndex);
      firstIndex = snapshot.metadata.index + 1;
      lastIndex = snapshot.metadata.index;
    }
    const kept = ready.entries.filter((entry) => entry.index >= firstIndex);
    if (kept.length > 0) {
      const start = kept[0]!.index;
      assert(start <= lastIndex + 1, `group ${this.groupId}: append at ${start} leaves a gap after ${lastIndex}`);
      // Entries up to the snapshot are committed: replacing one would contradict the snapshot.
      const snapshotIndex = snapshot?.metadata.index ?? this.log.snapshot().metadata.index;
      assert(start > snapshotIndex, `group ${this.groupId}: append at ${start} replaces entries covered by the snapshot at ${snapshotIndex}`);
      kept.forEach((entry, i) => {
        assert(entry.index === start + i, `group ${this.groupId}: entries not contiguous at ${entry.index}`);
        ops.push(this.put(this.keys.logEntry(entry.index), encodeEntryBody(entry)));
      });
      this.deleteEntries(ops, start + kept.length, lastIndex);
    }
    if (ready.hardState !== null) ops.push(this.put(this.keys.hardState, encodeHardState(ready.hardState)));
    const commit = (): void => {
      if (snapshot !== null) this.log.applySnapshot(snapshot);
      this.log.append(kept);
      if (ready.hardState !== null) this.log.setHardState(ready.hardState);
    };
    return { ops, commit };
  }

  /** Plans the snapshot's two records; `sealedData`: its data record, sealed ahead (see {@link sealRecordInSlices}). */
  private planSnapshotRecords(ops: RawBatchOp[], snapshot: Snapshot, sealedData?: Buffer): void {
    ops.push(this.put(this.keys.snapshotMetadata, encodeSnapshotMetadata(snapshot.metadata)));
    ops.push({ type: "put", key: asBuffer(this.keys.snapshotData), value: sealedData ?? sealRecord(this.keys.snapshotData, snapshot.data) });
  }

  /** @internal Plans the state machine writes and applied index of one apply step. */
  planApply(appliedIndex: LogIndex, writes: readonly KvWrite[]): PlannedWrite {
    this.checkOpen();
    assert(appliedIndex >= this.appliedIndex, `group ${this.groupId}: applied index goes back from ${this.appliedIndex} to ${appliedIndex}`);
    const ops: RawBatchOp[] = [];
    for (const write of writes) {
      const key = this.keys.stateMachine(write.key);
      ops.push("delete" in write ? { type: "del", key: asBuffer(key) } : this.put(key, write.value));
    }
    ops.push(this.put(this.keys.appliedIndex, encodeCounter(appliedIndex)));
    return { ops, commit: () => (this.appliedIndex = appliedIndex) };
  }

  /**
   * Writes to this group's state key space that leave its applied index as
   * it is: local (non-replicated) keys another group's apply fills, such as
   * the inboxes, so they commit in the same batch as that apply.
   */
  planLocal(writes: readonly KvWrite[]): RawBatchOp[] {
    this.checkOpen();
    return writes.map((write) => {
      const key = this.keys.stateMachine(write.key);
      return "delete" in write ? { type: "del", key: asBuffer(key) } : this.put(key, write.value);
    });
  }

  /** The state machine value under `key`, checked; throws CorruptionError if it fails its checksum. */
  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.checkOpen();
    return this.reader.get(key);
  }

  /**
   * State machine pairs whose key starts with `prefix`, in key order, at most
   * `limit` of them (all when omitted). Each value is checked as it is read.
   */
  async *scan(prefix: Uint8Array, limit?: number, from?: Uint8Array): AsyncGenerator<[Uint8Array, Uint8Array]> {
    this.checkOpen();
    yield* this.reader.scan(prefix, limit, from);
  }

  /**
   * Records a snapshot of the application state at `index` (already applied,
   * with `confState` from the core's `confState()`), then compacts the log up to
   * `index - keepEntries` so followers slightly behind can still catch up from
   * the log. Not synced: losing it in a crash loses nothing the log cannot redo.
   */
  async createSnapshot(index: LogIndex, confState: ConfState, data: Uint8Array, keepEntries = 0): Promise<Snapshot> {
    assert(Number.isSafeInteger(keepEntries) && keepEntries >= 0, `keepEntries must be >= 0, got ${keepEntries}`);
    // Sealed before taking the log queue, in slices: appends keep going meanwhile.
    const sealedData = await sealRecordInSlices(this.keys.snapshotData, data);
    return this.context.logQueue.run(async () => {
      this.checkOpen();
      const storedIndex = this.log.snapshot().metadata.index;
      if (index <= storedIndex) throw new SnapshotOutOfDateError(index, storedIndex);
      assert(index <= this.log.lastIndex(), `group ${this.groupId}: snapshot at ${index} beyond last index ${this.log.lastIndex()}`);
      const snapshot: Snapshot = { metadata: { index, term: this.log.term(index), confState }, data };
      const ops: RawBatchOp[] = [];
      this.planSnapshotRecords(ops, snapshot, sealedData);
      const compactIndex = index - keepEntries;
      const firstIndex = this.log.firstIndex();
      if (compactIndex >= firstIndex) {
        ops.push(this.put(this.keys.logStart, encodeLogPosition({ index: compactIndex, term: this.log.term(compactIndex) })));
        this.deleteEntries(ops, firstIndex, compactIndex);
      }
      await this.context.write(ops, false);
      this.log.createSnapshot(index, confState, data);
      this.log.compact(compactIndex);
      return this.log.snapshot();
    });
  }

  /**
   * Replaces the whole state machine with `pairs`: used when installing a
   * leader's snapshot. Keys for which `keep` is true stay as they are (local
   * data that snapshots leave out). The pairs stream in, written in batches of
   * about {@link restoreBatchBytes} so that no batch holds the whole state; the
   * last is synced. The applied index does not move: the caller records it
   * with {@link recordRestored} once what the new state implies outside it is
   * written too (inbox gap markers). Until then the applied index stays below
   * the snapshot's, so a crash anywhere before restores again on start.
   */
  async restoreStateMachine(pairs: AsyncIterable<readonly [Uint8Array, Uint8Array]> | Iterable<readonly [Uint8Array, Uint8Array]>, keep?: (key: Uint8Array) => boolean): Promise<void> {
    this.checkOpen();
    const prefix = this.keys.stateMachinePrefix;
    let ops: RawBatchOp[] = [];
    let bytes = 0;
    // Each batch is a task of its own on the state queue, so other groups' applies go on between them
    // (nothing of this group is applied meanwhile: its driver holds it until the restore is done).
    const writeBatch = (batch: RawBatchOp[], sync: boolean): Promise<void> =>
      this.context.stateQueue.run(() => {
        this.checkOpen();
        return this.context.write(batch, sync);
      });
    const flushIfFull = async (): Promise<void> => {
      if (bytes < restoreBatchBytes) return;
      await writeBatch(ops, false);
      ops = [];
      bytes = 0;
    };
    for await (const key of this.context.db.keys(prefix, prefixEnd(prefix))) {
      if (keep?.(key.subarray(prefix.length)) === true) continue;
      ops.push({ type: "del", key });
      bytes += key.byteLength;
      await flushIfFull();
    }
    for await (const [key, value] of pairs) {
      if (keep?.(key) === true) continue;
      ops.push(this.put(this.keys.stateMachine(key), value));
      bytes += prefix.byteLength + key.byteLength + value.byteLength;
      await flushIfFull();
    }
    await writeBatch(ops, true);
  }

  /** Raises the catch-up floor to `floor` if that is further, synced (in the group's registry record, which older versions read as "the group exists"). */
  async raiseCatchUpFloor(floor: CatchUpFloor): Promise<void> {
    this.checkOpen();
    if (!isFurtherFloor(floor, this.catchUpFloor)) return;
    await this.context.stateQueue.run(() => {
      this.checkOpen();
      const key = groupRegistryKey(this.groupId);
      return this.context.write([this.put(key, encodeCatchUpFloor(floor))], true);
    });
    if (isFurtherFloor(floor, this.catchUpFloor)) this.catchUpFloor = floor;
  }

  /**
   * Moves the applied index to `appliedIndex`, synced: a restore from a
   * leader's snapshot at that index is done and taken up (see
   * {@link restoreStateMachine}).
   */
  async recordRestored(appliedIndex: LogIndex): Promise<void> {
    this.checkOpen();
    assert(appliedIndex >= this.appliedIndex, `group ${this.groupId}: applied index goes back from ${this.appliedIndex} to ${appliedIndex}`);
    await this.context.stateQueue.run(() => {
      this.checkOpen();
      return this.context.write([this.put(this.keys.appliedIndex, encodeCounter(appliedIndex))], true);
    });
    this.appliedIndex = appliedIndex;
  }
}

/** About the bytes of one write batch of a snapshot's restore. */
export const restoreBatchBytes = 4 << 20;

/**
 * Reads of one group's state machine records straight from RocksDB, without
 * its log: for a group whose store is not loaded (it hibernates).
 */
export class GroupReader {
  /** @internal Built by the engine and GroupStore only. */
  constructor(
    private readonly context: EngineContext,
    private readonly keys: GroupKeys,
  ) {}

  /** The state machine value under `key`, checked; throws CorruptionError if it fails its checksum. */
  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    const fullKey = this.keys.stateMachine(key);
    const value = await this.context.db.get(fullKey);
    return value === undefined ? undefined : openRecord(fullKey, value);
  }

  /**
   * State machine pairs whose key starts with `prefix`, in key order, at most
   * `limit` of them (all when omitted), from `from` (a key under `prefix`)
   * when given, for paging. Each value is checked as it is read.
   */
  async *scan(prefix: Uint8Array, limit?: number, from?: Uint8Array): AsyncGenerator<[Uint8Array, Uint8Array]> {
    const end = prefixEnd(this.keys.stateMachine(prefix));
    const start = this.keys.stateMachine(from ?? prefix);
    const skip = this.keys.stateMachinePrefix.length;
    for await (const [key, value] of this.context.db.iterate(start, end, limit ?? -1)) {
      yield [new Uint8Array(key.buffer, key.byteOffset + skip, key.length - skip), openRecord(key, value)];
    }
  }
}
