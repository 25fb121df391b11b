/**
 * The RocksDB storage engine of a homeserver: one database shared by all of
 * its Raft groups (key layout in keys.ts). It persists each Ready before the
 * node sends the messages that depend on it, many groups' Readies in one synced
 * batch, and applies state machine changes with their applied index atomically,
 * so a crash at any point recovers exactly.
 */
import { mkdir } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { assert } from "../raft/assert.ts";
import { bootstrapLog, MemoryStorage } from "../raft/memory-storage.ts";
import { emptyConfState, emptyHardState, noCatchUpFloor, type CatchUpFloor, type GroupId, type LogIndex, type NodeId, type Ready } from "../raft/types.ts";
import { decodeCatchUpFloor, decodeCounter, encodeCatchUpFloor, encodeCounter, encodeEntryBody, encodeHardState, encodeLogPosition, encodeSnapshotMetadata } from "./codec.ts";
import type { EngineContext } from "./engine-context.ts";
import { injectedSyncDelay } from "./fault-hook.ts";
import { loadGroup } from "./group-loader.ts";
import { GroupReader, GroupStore, type KvWrite, type PlannedWrite } from "./group-store.ts";
import { describeKey, formatVersionKey, groupRegistryKey, groupRegistryPrefix, GroupKeys, parseKey, prefixEnd } from "./keys.ts";
import { CorruptionError, decodeRecord, openRecord, sealRecord } from "./records.ts";
import { asBuffer, RawDb, type RawBatchOp } from "./rocksdb-promises.ts";
import { SerialQueue } from "./serial-queue.ts";
import { discardStaged, parseStagedDescriptor, stageSnapshot, stagedChunks, sweepStagedSnapshots, type SnapshotStaging } from "./snapshot-staging.ts";

export { CorruptionError } from "./records.ts";
export { GroupReader, GroupStore, type KvWrite } from "./group-store.ts";
export { parseStagedDescriptor, type SnapshotStaging } from "./snapshot-staging.ts";

/** The on-disk format this code writes and reads. */
export const formatVersion = 1;

/** Options of {@link StorageEngine.open}. */
export interface StorageEngineOptions {
  /**
   * Whether writes that must be durable are fsynced (default true). Turn off
   * only in tests and benchmarks: without it a power loss can lose
   * acknowledged writes (a process crash cannot: RocksDB's WAL is in the page cache).
   */
  readonly sync?: boolean;
  /** Called with the duration of every synced batch write, for the fsync latency histogram. */
  readonly onSyncLatency?: (latencyMs: number) => void;
}

/** One group's state machine writes and the applied index they bring it to (see {@link StorageEngine.apply}). */
export interface AppliedWrites {
  readonly group: GroupStore;
  readonly appliedIndex: LogIndex;
  readonly writes: readonly KvWrite[];
}

/** Writes to local keys of a group's state key space that leave its applied index as it is (see GroupStore.planLocal). */
export interface LocalWrites {
  readonly group: GroupStore;
  readonly writes: readonly KvWrite[];
}

/** Thrown when the data directory holds a format this version cannot read. */
export class UnsupportedFormatError extends Error {
  constructor(readonly location: string, readonly version: number) {
    super(`the data directory ${location} holds storage format ${version}; this epochd reads format ${formatVersion}`);
    this.name = "UnsupportedFormatError";
  }
}

/** Counters of the engine's writes since it opened. */
export interface StorageEngineStats {
  readonly batches: number;
  readonly syncedBatches: number;
}

/** A RocksDB database holding the logs and state machines of many Raft groups. */
export class StorageEngine {
  private readonly groups = new Map<GroupId, GroupStore>();
  /** Groups whose openGroup is in progress: a second concurrent open would race the creation batch. */
  private readonly opening = new Set<GroupId>();
  private readonly context: EngineContext;
  private failure: unknown = undefined;
  private closed = false;
  private batches = 0;
  private syncedBatches = 0;

  private constructor(private readonly db: RawDb, private readonly options: StorageEngineOptions) {
    this.context = {
      db,
      logQueue: new SerialQueue(),
      stateQueue: new SerialQueue(),
      write: (ops, sync) => this.write(ops, sync),
    };
  }

  /**
   * Opens (creating if needed) the engine in directory `dir`. Fails if another
   * process holds it, or if it holds another storage format.
   */
  static async open(dir: string, options: StorageEngineOptions = {}): Promise<StorageEngine> {
    await mkdir(dir, { recursive: true });
    const db = await RawDb.open(dir);
    try {
      await checkFormat(db);
    } catch (error: unknown) {
      await db.close();
      throw error;
    }
    const engine = new StorageEngine(db, options);
    await sweepStagedSnapshots(engine.context);
    return engine;
  }

  /** Statistics of the writes made so far. */
  stats(): StorageEngineStats {
    return { batches: this.batches, syncedBatches: this.syncedBatches };
  }

  private async write(ops: RawBatchOp[], sync: boolean): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    assert(!this.closed, "storage engine is closed");
    if (ops.length === 0) return;
    const synced = sync && this.options.sync !== false;
    const start = performance.now();
    if (synced) await injectedSyncDelay();
    try {
      await this.db.batch(ops, synced);
    } catch (error: unknown) {
      this.failure = new Error(`storage write failed; the engine accepts no more writes`, { cause: error });
      throw this.failure;
    }
    this.batches++;
    if (synced) {
      this.syncedBatches++;
      this.options.onSyncLatency?.(performance.now() - start);
    }
  }

  /** The ids of all groups stored, in byte order of their UTF-8 encoding. */
  async listGroups(): Promise<GroupId[]> {
    const ids: GroupId[] = [];
    for await (const [key, value] of this.db.iterate(groupRegistryPrefix, prefixEnd(groupRegistryPrefix))) {
      openRecord(key, value);
      const parsed = parseKey(key);
      if (parsed.space !== "engine" || parsed.groupId === undefined) {
        throw new CorruptionError(describeKey(key), "unexpected key in the group registry");
      }
      ids.push(parsed.groupId);
    }
    return ids;
  }

  /**
   * Loads group `groupId`: hard state, snapshot and the whole uncompacted log
   * go into the mirror the core reads. Every record of the group, state machine
   * data included, is checked; any mismatch throws {@link CorruptionError}.
   *
   * A group that does not exist is created: with `bootstrapVoters` (an initial
   * member of a new group) its log starts with the bootstrap entry of
   * `bootstrapLog`, exactly as `new MemoryStorage(bootstrapVoters)` does;
   * without (a member added later) it starts empty and learns everything from
   * the leader. `bootstrapVoters` is ignored for an existing group.
   * `catchUpFloor` (a copy made anew at a member's request; see
   * GroupStore.catchUpFloor) is written with a new group, and raised in an
   * existing one.
   */
  async openGroup(groupId: GroupId, bootstrapVoters: readonly NodeId[] = [], catchUpFloor: CatchUpFloor = noCatchUpFloor): Promise<GroupStore> {
    assert(!this.closed, "storage engine is closed");
    assert(!this.groups.has(groupId) && !this.opening.has(groupId), `group ${groupId} is already open`);
    const keys = new GroupKeys(groupId);
    this.opening.add(groupId);
    try {
      const registryKey = groupRegistryKey(groupId);
      const registered = await this.db.get(registryKey);
      let storedFloor = catchUpFloor;
      if (registered === undefined) {
        await this.context.logQueue.run(() => this.write(createGroupOps(keys, registryKey, bootstrapVoters, catchUpFloor), true));
      } else {
        storedFloor = catchUpFloorOf(registryKey, registered);
      }
      const loaded = await loadGroup(this.db, keys);
      const group = new GroupStore(this.context, keys, loaded.mirror, loaded.appliedIndex, storedFloor);
      this.groups.set(groupId, group);
      await group.raiseCatchUpFloor(catchUpFloor);
      return group;
    } finally {
      this.opening.delete(groupId);
    }
  }

  /**
   * Creates many new groups at once, as initial members with voters
   * `bootstrapVoters`, in ONE synced batch, and returns their stores: the same
   * records and mirrors `openGroup` makes one group at a time (one synced
   * write and one full read each), for a homeserver that takes on thousands
   * of groups. Fails, creating none, if any of them exists or is open.
   */
  async createGroups(groupIds: readonly GroupId[], bootstrapVoters: readonly NodeId[]): Promise<GroupStore[]> {
    assert(!this.closed, "storage engine is closed");
    assert(bootstrapVoters.length > 0, "createGroups needs initial voters");
    assert(new Set(groupIds).size === groupIds.length, "createGroups got a group id twice");
    for (const groupId of groupIds) {
      assert(!this.groups.has(groupId) && !this.opening.has(groupId), `group ${groupId} is already open`);
    }
    for (const groupId of groupIds) this.opening.add(groupId);
    try {
      const existing = await Promise.all(groupIds.map((groupId) => this.db.get(groupRegistryKey(groupId))));
      const taken = groupIds.filter((_, i) => existing[i] !== undefined);
      assert(taken.length === 0, `groups already exist: ${taken.slice(0, 5).join(", ")}`);
      const keys = groupIds.map((groupId) => new GroupKeys(groupId));
      const ops = keys.flatMap((k) => createGroupOps(k, groupRegistryKey(k.groupId), bootstrapVoters));
      await this.context.logQueue.run(() => this.write(ops, true));
      return keys.map((k) => {
        const store = new GroupStore(this.context, k, new MemoryStorage(bootstrapVoters), 0, noCatchUpFloor);
        this.groups.set(k.groupId, store);
        return store;
      });
    } finally {
      for (const groupId of groupIds) this.opening.delete(groupId);
    }
  }

  /**
   * Persists step 1 of many groups' Readies in ONE write batch, synced when any
   * of them must sync: per group its snapshot, entries and hard state. Then
   * updates each group's mirror so the core sees them. Call before sending the
   * Readies' messages. Each group at most once per call.
   */
  persistReadies(items: ReadonlyArray<{ readonly group: GroupStore; readonly ready: Ready }>): Promise<void> {
    assertDistinctGroups(items);
    return this.context.logQueue.run(() => this.writePlans(items.map(({ group, ready }) => group.planPersist(ready)), [], items.some(({ ready }) => ready.mustSync)));
  }

  /**
   * {@link persistReadies} and {@link apply} in ONE write batch, synced when
   * any Ready must sync: for a round with both entries to store and committed
   * entries to apply, one RocksDB write and one thread-pool turn instead of
   * two. Atomic, so a crash keeps both or neither.
   */
  persistAndApply(readies: ReadonlyArray<{ readonly group: GroupStore; readonly ready: Ready }>, applies: readonly AppliedWrites[], localWrites: readonly LocalWrites[] = []): Promise<void> {
    assertDistinctGroups(readies);
    return this.context.logQueue.run(() =>
      this.context.stateQueue.run(() => {
        const plans = [...readies.map(({ group, ready }) => group.planPersist(ready)), ...applies.map(({ group, appliedIndex, writes }) => group.planApply(appliedIndex, writes))];
        return this.writePlans(plans, localWrites.flatMap(({ group, writes }) => group.planLocal(writes)), readies.some(({ ready }) => ready.mustSync));
      }),
    );
  }

  /**
   * Writes the state machine changes and applied index of one or more groups
   * in one batch, with `localWrites` (see GroupStore.planLocal). Not synced: after a crash the log replays what was lost,
   * and the applied index always matches the data it was written with.
   */
  apply(items: readonly AppliedWrites[], localWrites: readonly LocalWrites[] = []): Promise<void> {
    return this.context.stateQueue.run(() =>
      this.writePlans(items.map(({ group, appliedIndex, writes }) => group.planApply(appliedIndex, writes)), localWrites.flatMap(({ group, writes }) => group.planLocal(writes)), false),
    );
  }

  /** Writes `plans` and `extraOps` in one batch, then updates the mirrors of the plans' groups. Inside the queues that planned them. */
  private async writePlans(plans: readonly PlannedWrite[], extraOps: readonly RawBatchOp[], sync: boolean): Promise<void> {
    await this.write([...plans.flatMap((plan) => plan.ops), ...extraOps], sync);
    for (const plan of plans) plan.commit();
  }

  /**
   * Opens again a group this process opened before and closed with
   * {@link closeGroup} (its Raft group hibernated): like `openGroup`, but its
   * state machine records are not all read and checked again (each is
   * checked whenever it is read).
   */
  async reopenGroup(groupId: GroupId): Promise<GroupStore> {
    assert(!this.closed, "storage engine is closed");
    assert(!this.groups.has(groupId) && !this.opening.has(groupId), `group ${groupId} is already open`);
    this.opening.add(groupId);
    try {
      const keys = new GroupKeys(groupId);
      const registryKey = groupRegistryKey(groupId);
      const [loaded, registered] = await Promise.all([loadGroup(this.db, keys, false), this.db.get(registryKey)]);
      const floor = registered === undefined ? noCatchUpFloor : catchUpFloorOf(registryKey, registered);
      const group = new GroupStore(this.context, keys, loaded.mirror, loaded.appliedIndex, floor);
      this.groups.set(groupId, group);
      return group;
    } finally {
      this.opening.delete(groupId);
    }
  }

  /** Reads of group `groupId`'s state machine records, whether or not its store is open. */
  reader(groupId: GroupId): GroupReader {
    assert(!this.closed, "storage engine is closed");
    return new GroupReader(this.context, new GroupKeys(groupId));
  }

  /**
   * Forgets an open group's store without touching its records (its Raft
   * group hibernates; `openGroup` loads it again). The caller guarantees no
   * write of it is queued.
   */
  closeGroup(store: GroupStore): void {
    store.markClosed();
    if (this.groups.get(store.groupId) === store) this.groups.delete(store.groupId);
  }

  /**
   * Deletes every record of group `groupId` (for a homeserver removed from the
   * group), in one synced batch. Closes the group's store if it is open.
   */
  async dropGroup(groupId: GroupId): Promise<void> {
    const keys = new GroupKeys(groupId);
    await this.context.logQueue.run(() =>
      this.context.stateQueue.run(async () => {
        const ops: RawBatchOp[] = [{ type: "del", key: asBuffer(groupRegistryKey(groupId)) }];
        for await (const [key] of this.db.iterate(keys.prefix, prefixEnd(keys.prefix))) ops.push({ type: "del", key });
        await this.write(ops, true);
        this.groups.get(groupId)?.markClosed();
        this.groups.delete(groupId);
      }),
    );
  }

  /**
   * Starts writing a leader's snapshot data for `groupId` to storage as it
   * arrives; its `finish` gives the descriptor the core holds in place of the
   * data (see snapshot-staging.ts).
   */
  stageSnapshot(groupId: GroupId): SnapshotStaging {
    assert(!this.closed, "storage engine is closed");
    return stageSnapshot(this.context, groupId);
  }

  /**
   * The chunks of snapshot data as the core holds it: read back from storage
   * for a staged snapshot's descriptor, else the data itself in one chunk.
   */
  snapshotChunks(data: Uint8Array): AsyncIterable<Uint8Array> {
    const staged = parseStagedDescriptor(data);
    return staged === undefined ? wholeData(data) : stagedChunks(this.context, staged);
  }

  /** Deletes the staged records `data` names, if it is a staged snapshot's descriptor (restored, or declined by the core). */
  async discardStagedSnapshot(data: Uint8Array): Promise<void> {
    const staged = parseStagedDescriptor(data);
    if (staged !== undefined && !this.closed) await discardStaged(this.context, staged.transferId);
  }

  /** RocksDB's estimate of the bytes the engine stores, for metrics. */
  approximateBytes(): Promise<number> {
    return this.db.approximateSize(Uint8Array.of(0x00), Uint8Array.of(0xff));
  }

  /** Waits for queued writes, then closes the database. Group stores become unusable. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.context.logQueue.drain();
    await this.context.stateQueue.drain();
    this.closed = true;
    for (const group of this.groups.values()) group.markClosed();
    this.groups.clear();
    await this.db.close();
  }
}

async function* wholeData(data: Uint8Array): AsyncGenerator<Uint8Array> {
  if (data.byteLength > 0) yield data;
}

/** The catch-up floor a group's registry record holds (see GroupStore.catchUpFloor); checks the record. */
function catchUpFloorOf(registryKey: Uint8Array, value: Uint8Array): CatchUpFloor {
  return decodeRecord(registryKey, openRecord(registryKey, value), decodeCatchUpFloor);
}

/** The records of a new group: an empty snapshot at index 0 and, for an initial member, the bootstrap entry. */
function createGroupOps(keys: GroupKeys, registryKey: Uint8Array, bootstrapVoters: readonly NodeId[], catchUpFloor: CatchUpFloor = noCatchUpFloor): RawBatchOp[] {
  const put = (key: Uint8Array, payload: Uint8Array): RawBatchOp => ({ type: "put", key: asBuffer(key), value: sealRecord(key, payload) });
  const origin = { index: 0, term: 0 };
  const bootstrap = bootstrapVoters.length > 0 ? bootstrapLog(bootstrapVoters) : undefined;
  const ops = [
    put(registryKey, encodeCatchUpFloor(catchUpFloor)),
    put(keys.hardState, encodeHardState(bootstrap?.hardState ?? emptyHardState)),
    put(keys.snapshotMetadata, encodeSnapshotMetadata({ ...origin, confState: emptyConfState })),
    put(keys.snapshotData, new Uint8Array(0)),
    put(keys.logStart, encodeLogPosition(origin)),
    put(keys.appliedIndex, encodeCounter(0)),
  ];
  if (bootstrap !== undefined) ops.push(put(keys.logEntry(bootstrap.entry.index), encodeEntryBody(bootstrap.entry)));
  return ops;
}

/** Each group's Ready at most once per write: two would plan against the same mirror. */
function assertDistinctGroups(items: ReadonlyArray<{ readonly group: GroupStore }>): void {
  const seen = new Set<GroupId>();
  for (const { group } of items) {
    assert(!seen.has(group.groupId), `group ${group.groupId} appears twice in one persist`);
    seen.add(group.groupId);
  }
}

/** Writes the format version into an empty database, or checks the one stored. */
async function checkFormat(db: RawDb): Promise<void> {
  const stored = await db.get(formatVersionKey);
  if (stored === undefined) {
    for await (const [key] of db.iterate(Uint8Array.of(0x00), undefined, 1)) {
      throw new CorruptionError(describeKey(key), "the database has records but no format version record");
    }
    const version = encodeCounter(formatVersion);
    await db.batch([{ type: "put", key: asBuffer(formatVersionKey), value: sealRecord(formatVersionKey, version) }], true);
    return;
  }
  const version = decodeRecord(formatVersionKey, openRecord(formatVersionKey, stored), (bytes) => decodeCounter(bytes, "format version"));
  if (version !== formatVersion) throw new UnsupportedFormatError(db.location, version);
}
