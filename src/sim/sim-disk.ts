/**
 * A simulated node's disk: what survives a crash and what does not.
 *
 * Two copies of the Raft log exist. `live` is what the running core reads; it
 * sees every write at once. `durable` is what a restart finds. A synced write
 * (and, like a write-ahead log's fsync, every write issued before it) reaches
 * `durable`; an unsynced write waits in `pending` and a crash discards it.
 * The state machine's applied index and state are written durably with each
 * apply, as the design's "applied state and applied index in one batch".
 */
import { confAfterEntry } from "../raft/conf-change.ts";
import { MemoryStorage } from "../raft/memory-storage.ts";
import { EntryType, type ConfState, type Entry, type HardState, type LogIndex, type NodeId, type Snapshot, type Term } from "../raft/types.ts";

/** The simulated state machine's durable part: how far it applied, and a running hash of what. */
export interface AppliedState {
  readonly index: LogIndex;
  /** Running hash over every applied entry (see `state-machine.ts`). */
  readonly hash: number;
}

/** One Ready's write, kept as data until it is synced. */
interface Write {
  readonly snapshot: Snapshot | null;
  readonly entries: readonly Entry[];
  readonly hardState: HardState | null;
}

function applyWrite(s: MemoryStorage, w: Write): void {
  if (w.snapshot !== null) s.applySnapshot(w.snapshot);
  if (w.entries.length > 0) s.append(w.entries);
  if (w.hardState !== null) s.setHardState(w.hardState);
}

/** Per-node storage with crash semantics: {@link crash} loses exactly the unsynced writes. */
export class SimDisk {
  private durable: MemoryStorage;
  /** The storage the running core reads. Replaced by a copy of `durable` on crash. */
  live: MemoryStorage;
  private pending: Write[] = [];
  private appliedState: AppliedState = { index: 0, hash: 0 };

  /** A disk holding the group's bootstrap entry for initial member `voters`, or empty for a node added later. */
  constructor(voters: readonly NodeId[] = []) {
    this.durable = new MemoryStorage(voters);
    this.live = new MemoryStorage(voters);
  }

  /**
   * Writes a Ready's snapshot, entries and hard state. With `sync` the write
   * and every pending one become durable; without, they wait for the next sync.
   */
  write(snapshot: Snapshot | null, entries: readonly Entry[], hardState: HardState | null, sync: boolean): void {
    const w: Write = { snapshot, entries, hardState };
    applyWrite(this.live, w);
    this.pending.push(w);
    if (sync) this.sync();
  }

  /** Makes every pending write durable (an fsync). */
  sync(): void {
    for (const w of this.pending) applyWrite(this.durable, w);
    this.pending.length = 0;
  }

  /** The application's snapshot at `index` followed by compaction up to `compactIndex`; durable at once. */
  snapshotAndCompact(index: LogIndex, confState: ConfState, data: Uint8Array, compactIndex: LogIndex): void {
    this.sync();
    for (const s of [this.live, this.durable]) {
      s.createSnapshot(index, confState, data);
      s.compact(compactIndex);
    }
  }

  /** Records the state machine's progress durably, flushing earlier writes first (one synced batch). */
  saveApplied(state: AppliedState): void {
    this.sync();
    this.appliedState = state;
  }

  /** The state machine's durable progress, read on restart. */
  applied(): AppliedState {
    return this.appliedState;
  }

  /** Number of writes a crash would lose now. */
  pendingWrites(): number {
    return this.pending.length;
  }

  /** The durable hard state: the term and vote a restart would find. */
  durableHardState(): HardState {
    return this.durable.getHardState();
  }

  /** The durable log's last index and its term: what this node compares a candidate's log with. */
  durableLast(): { index: LogIndex; term: Term } {
    const index = this.durable.lastIndex();
    return { index, term: this.durable.term(index) };
  }

  /** The newest entry at or before `index` that the durable log holds: its index and term. */
  durableAtOrBefore(index: LogIndex): { index: LogIndex; term: Term } {
    const d = this.durable;
    const at = Math.min(index, d.lastIndex());
    return { index: at, term: at < d.firstIndex() - 1 ? 0 : d.term(at) };
  }

  /** Whether the durable log holds the entry (`index`, `term`), or a snapshot covering it. */
  durableHolds(index: LogIndex, term: Term): boolean {
    const d = this.durable;
    if (index <= d.snapshot().metadata.index || index < d.firstIndex() - 1) return true;
    return index <= d.lastIndex() && d.term(index) === term;
  }

  /**
   * The membership a restart from this disk would campaign with: the
   * snapshot's, with the conf changes of the durable log applied up to the
   * durable commit index (a restarted core applies them before it campaigns).
   */
  durableCampaignConf(): ConfState {
    const d = this.durable;
    const { index: snapshotIndex, confState } = d.snapshot().metadata;
    const to = Math.min(d.lastIndex(), Math.max(d.getHardState().commit, this.appliedState.index));
    let conf = confState;
    if (to <= snapshotIndex) return conf;
    for (const entry of d.entries(snapshotIndex + 1, to + 1, Number.MAX_SAFE_INTEGER)) {
      if (entry.type === EntryType.ConfChange) conf = confAfterEntry(conf, entry.data) ?? conf;
    }
    return conf;
  }

  /**
   * Loses everything, as a lost data directory does: the disk is as at its
   * first start, holding the bootstrap entry of `voters` (an initial member)
   * or nothing (a node added later).
   */
  wipe(voters: readonly NodeId[]): void {
    this.durable = new MemoryStorage(voters);
    this.live = new MemoryStorage(voters);
    this.pending.length = 0;
    this.appliedState = { index: 0, hash: 0 };
  }

  /**
   * Loses every unsynced write. The restarted core reads `live`, rebuilt as
   * a copy of `durable`, so later writes keep the two copies separate.
   */
  crash(): void {
    this.pending.length = 0;
    this.live = copyStorage(this.durable);
  }
}

/**
 * A copy of a MemoryStorage through its public API (entries are immutable and
 * shared). Keeps entries between the compaction point and the latest snapshot.
 */
export function copyStorage(source: MemoryStorage): MemoryStorage {
  const snap = source.snapshot();
  const { confState } = snap.metadata;
  const copy = new MemoryStorage();
  const compacted = source.firstIndex() - 1;
  if (snap.metadata.index === compacted && compacted > 0) {
    copy.applySnapshot(snap);
  } else if (compacted > 0) {
    // A stand-in for the compaction point; createSnapshot below restores the real snapshot.
    copy.applySnapshot({ metadata: { index: compacted, term: source.term(compacted), confState }, data: snap.data });
  }
  const last = source.lastIndex();
  if (last > compacted) copy.append(source.entries(compacted + 1, last + 1, Number.POSITIVE_INFINITY));
  if (snap.metadata.index > compacted) copy.createSnapshot(snap.metadata.index, confState, snap.data);
  copy.setHardState(source.getHardState());
  return copy;
}
