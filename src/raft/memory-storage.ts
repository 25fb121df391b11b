import { assert } from "./assert.ts";
import { encodeConfChange } from "./conf-change.ts";
import {
  ConfChangeType,
  EntryType,
  emptyConfState,
  emptyHardState,
  type ConfState,
  type Entry,
  type HardState,
  type LogIndex,
  type LogStorage,
  type NodeId,
  type Snapshot,
  type Term,
} from "./types.ts";

/** Thrown by {@link MemoryStorage.entries} and `term` when the index was compacted away. */
export class LogCompactedError extends Error {
  constructor(readonly index: LogIndex, readonly firstIndex: LogIndex) {
    super(`log index ${index} is compacted (first index ${firstIndex})`);
    this.name = "LogCompactedError";
  }
}

/** Thrown when a snapshot older than the stored one is applied or created. */
export class SnapshotOutOfDateError extends Error {
  constructor(readonly index: LogIndex, readonly storedIndex: LogIndex) {
    super(`snapshot at ${index} is older than the stored one at ${storedIndex}`);
    this.name = "SnapshotOutOfDateError";
  }
}

/**
 * The stable log held in memory: the whole {@link LogStorage} contract, plus
 * the writes the I/O layer makes after each Ready. The simulator uses it as a
 * node's disk; the RocksDB engine uses it as the mirror it reads from.
 *
 * Invariant: `log[0]` is a dummy entry at the snapshot's index and term, so
 * `log[i - offset]` is the entry at index i and the log is never empty.
 */
export class MemoryStorage implements LogStorage {
  private hardState: HardState = emptyHardState;
  private snap: Snapshot;
  private log: Entry[];

  /**
   * An empty log, or with `voters` the log of an initial member of a new group:
   * its bootstrap entry at index 1 (see {@link bootstrapLog}).
   */
  constructor(voters: readonly NodeId[] = []) {
    this.snap = { metadata: { index: 0, term: 0, confState: emptyConfState }, data: new Uint8Array(0) };
    this.log = [dummyEntry(0, 0)];
    if (voters.length > 0) {
      const { entry, hardState } = bootstrapLog(voters);
      this.log.push(entry);
      this.hardState = hardState;
    }
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.hardState, confState: this.snap.metadata.confState };
  }

  /** The persisted hard state. */
  getHardState(): HardState {
    return this.hardState;
  }

  setHardState(hardState: HardState): void {
    this.hardState = hardState;
  }

  private get offset(): LogIndex {
    return this.log[0]!.index;
  }

  firstIndex(): LogIndex {
    return this.offset + 1;
  }

  lastIndex(): LogIndex {
    return this.offset + this.log.length - 1;
  }

  term(index: LogIndex): Term {
    const offset = this.offset;
    if (index < offset) throw new LogCompactedError(index, offset + 1);
    const entry = this.log[index - offset];
    assert(entry !== undefined, `term(${index}) beyond last index ${this.lastIndex()}`);
    return entry.term;
  }

  entries(lo: LogIndex, hi: LogIndex, maxBytes: number): Entry[] {
    const offset = this.offset;
    if (lo <= offset) throw new LogCompactedError(lo, offset + 1);
    assert(hi <= this.lastIndex() + 1, `entries(${lo}, ${hi}) beyond last index ${this.lastIndex()}`);
    return limitBytes(this.log.slice(lo - offset, hi - offset), maxBytes);
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces everything with `snapshot`: the log restarts after it. */
  applySnapshot(snapshot: Snapshot): void {
    const { index, term } = snapshot.metadata;
    if (index <= this.snap.metadata.index && this.snap.metadata.index > 0) {
      throw new SnapshotOutOfDateError(index, this.snap.metadata.index);
    }
    this.snap = snapshot;
    this.log = [dummyEntry(index, term)];
  }

  /**
   * Records a snapshot of the application state at `index` (already applied),
   * without discarding the log; call {@link compact} to release entries.
   */
  createSnapshot(index: LogIndex, confState: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) throw new SnapshotOutOfDateError(index, this.snap.metadata.index);
    assert(index <= this.lastIndex(), `snapshot index ${index} beyond last index ${this.lastIndex()}`);
    this.snap = { metadata: { index, term: this.term(index), confState }, data };
    return this.snap;
  }

  /** Discards entries up to and including `compactIndex`, which must be applied. */
  compact(compactIndex: LogIndex): void {
    const offset = this.offset;
    if (compactIndex <= offset) return;
    assert(compactIndex <= this.lastIndex(), `compact(${compactIndex}) beyond last index ${this.lastIndex()}`);
    const entry = this.log[compactIndex - offset]!;
    this.log = [dummyEntry(entry.index, entry.term), ...this.log.slice(compactIndex - offset + 1)];
  }

  /**
   * Appends entries, replacing any stored entries from the first new index on.
   * Entries already compacted are ignored. The new entries must be contiguous
   * with the stored log.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1]!.index;
    if (last < first) return;
    const kept = entries[0]!.index < first ? entries.slice(first - entries[0]!.index) : entries;
    const start = kept[0]!.index;
    assert(start <= this.lastIndex() + 1, `append at ${start} leaves a gap after ${this.lastIndex()}`);
    this.log.length = start - this.offset;
    for (const entry of kept) this.log.push(entry);
  }
}

/**
 * The first entry of every group: at index 1 and term 1, committed, a conf
 * change adding the initial voters. Every initial member starts with it; a
 * member added later receives it like any entry (or a snapshot past it), so
 * membership is always rebuilt from the log.
 */
export function bootstrapLog(voters: readonly NodeId[]): { entry: Entry; hardState: HardState } {
  assert(voters.length > 0 && new Set(voters).size === voters.length, "bootstrap needs distinct voters");
  const data = encodeConfChange({ steps: voters.map((nodeId) => ({ type: ConfChangeType.AddVoter, nodeId })), leaveJoint: false });
  return { entry: { index: 1, term: 1, type: EntryType.ConfChange, data }, hardState: { term: 1, vote: "", commit: 1 } };
}

function dummyEntry(index: LogIndex, term: Term): Entry {
  return { index, term, type: 0, data: new Uint8Array(0) };
}

/** The size the byte limits count for an entry: its payload plus a fixed header. */
export function entryBytes(entry: Entry): number {
  return entry.data.byteLength + 24;
}

/** The longest prefix of `entries` within `maxBytes`, and always at least one entry. */
export function limitBytes<T extends Entry>(entries: T[], maxBytes: number): T[] {
  if (entries.length === 0) return entries;
  let total = entryBytes(entries[0]!);
  let count = 1;
  while (count < entries.length) {
    total += entryBytes(entries[count]!);
    if (total > maxBytes) break;
    count++;
  }
  return count === entries.length ? entries : entries.slice(0, count);
}
