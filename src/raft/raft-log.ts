import { assert } from "./assert.ts";
import { LogCompactedError, limitBytes } from "./memory-storage.ts";
import type { Entry, LogIndex, LogStorage, Snapshot, Term } from "./types.ts";

/**
 * Entries and a snapshot accepted by the core but not yet written to stable
 * storage. Invariant: `entries[i]` has index `offset + i`; when `snapshot` is
 * set, `offset === snapshot.metadata.index + 1` or entries follow it.
 */
class Unstable {
  snapshot: Snapshot | null = null;
  entries: Entry[] = [];

  constructor(public offset: LogIndex) {}

  /** The term at `index` if the unstable part knows it. */
  maybeTerm(index: LogIndex): Term | undefined {
    if (index < this.offset) {
      const snap = this.snapshot;
      return snap !== null && snap.metadata.index === index ? snap.metadata.term : undefined;
    }
    return this.entries[index - this.offset]?.term;
  }

  truncateAndAppend(entries: readonly Entry[]): void {
    const after = entries[0]!.index;
    if (after === this.offset + this.entries.length) {
      for (const entry of entries) this.entries.push(entry);
    } else if (after <= this.offset) {
      // Replaces the unstable part and, once persisted, the stored entries from `after` on.
      this.offset = after;
      this.entries = entries.slice();
    } else {
      this.entries = this.entries.slice(0, after - this.offset).concat(entries);
    }
  }

  /** Forgets entries up to `index` once they are stable, if the one at `index` still has `term`. */
  stableTo(index: LogIndex, term: Term): void {
    if (index < this.offset || this.maybeTerm(index) !== term) return;
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
  }

  restore(snapshot: Snapshot): void {
    this.offset = snapshot.metadata.index + 1;
    this.entries = [];
    this.snapshot = snapshot;
  }
}

/**
 * The log as the core sees it: stable storage followed by unstable entries,
 * with the commit and apply positions.
 * Invariant: `applied <= committed <= lastIndex()`.
 */
export class RaftLog {
  readonly unstable: Unstable;
  committed: LogIndex;
  applied: LogIndex;

  constructor(readonly storage: LogStorage, committed: LogIndex, applied: LogIndex) {
    this.unstable = new Unstable(storage.lastIndex() + 1);
    const first = storage.firstIndex();
    this.committed = Math.max(committed, applied, first - 1);
    this.applied = Math.max(applied, first - 1);
    assert(this.committed <= this.lastIndex(), `committed ${this.committed} beyond last index ${this.lastIndex()}`);
  }

  firstIndex(): LogIndex {
    const snap = this.unstable.snapshot;
    return snap !== null ? snap.metadata.index + 1 : this.storage.firstIndex();
  }

  lastIndex(): LogIndex {
    const u = this.unstable;
    if (u.entries.length > 0) return u.offset + u.entries.length - 1;
    if (u.snapshot !== null) return u.snapshot.metadata.index;
    return this.storage.lastIndex();
  }

  /** The term at `index`, or undefined when it is compacted away or beyond the log. */
  term(index: LogIndex): Term | undefined {
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return undefined;
    const unstableTerm = this.unstable.maybeTerm(index);
    if (unstableTerm !== undefined) return unstableTerm;
    try {
      return this.storage.term(index);
    } catch (error) {
      if (error instanceof LogCompactedError) return undefined;
      throw error;
    }
  }

  lastTerm(): Term {
    const term = this.term(this.lastIndex());
    assert(term !== undefined, "the last entry's term is always known");
    return term;
  }

  matchTerm(index: LogIndex, term: Term): boolean {
    return this.term(index) === term;
  }

  /** Raft's election restriction: is a log ending at (`lastIndex`, `lastTerm`) at least as up to date as ours? */
  isUpToDate(lastIndex: LogIndex, lastTerm: Term): boolean {
    const ourLastTerm = this.lastTerm();
    return lastTerm > ourLastTerm || (lastTerm === ourLastTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi) within `maxBytes` (at least one), or undefined if `lo` is compacted. */
  slice(lo: LogIndex, hi: LogIndex, maxBytes: number): Entry[] | undefined {
    if (lo < this.firstIndex()) return undefined;
    assert(hi <= this.lastIndex() + 1, `slice(${lo}, ${hi}) beyond last index ${this.lastIndex()}`);
    if (lo >= hi) return [];
    const offset = this.unstable.offset;
    let stored: Entry[] = [];
    if (lo < offset) {
      try {
        stored = this.storage.entries(lo, Math.min(hi, offset), maxBytes);
      } catch (error) {
        if (error instanceof LogCompactedError) return undefined;
        throw error;
      }
      if (stored.length < Math.min(hi, offset) - lo) return stored;
    }
    if (hi <= offset) return stored;
    const fresh = this.unstable.entries.slice(Math.max(lo, offset) - offset, hi - offset);
    return limitBytes(stored.length > 0 ? stored.concat(fresh) : fresh, maxBytes);
  }

  /**
   * The follower's side of AppendEntries: if our log has (`prevIndex`, `prevTerm`),
   * appends what conflicts or is new, commits up to `leaderCommit` within the
   * matched prefix, and returns the index of the last new entry. Returns
   * undefined when the previous entry does not match.
   */
  maybeAppend(prevIndex: LogIndex, prevTerm: Term, leaderCommit: LogIndex, entries: readonly Entry[]): LogIndex | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNew = prevIndex + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      assert(conflict > this.committed, `entry ${conflict} conflicts with the committed prefix (${this.committed})`);
      this.append(entries.slice(conflict - prevIndex - 1));
    }
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  /** The index of the first entry whose term differs from ours or that we lack, or 0 if all match. */
  findConflict(entries: readonly Entry[]): LogIndex {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * For fast backtracking: the largest index <= `index` whose term is <= `term`,
   * with that term. Entries after it cannot match a log whose entry at `index`
   * has `term`, so a whole term is skipped per round trip instead of one entry.
   */
  findConflictByTerm(index: LogIndex, term: Term): { index: LogIndex; term: Term } {
    for (let i = Math.min(index, this.lastIndex()); i >= 0; i--) {
      const t = this.term(i);
      if (t === undefined) return { index: i, term: 0 };
      if (t <= term) return { index: i, term: t };
    }
    return { index: 0, term: 0 };
  }

  /** Appends entries after truncating any conflicting suffix; returns the new last index. */
  append(entries: readonly Entry[]): LogIndex {
    if (entries.length === 0) return this.lastIndex();
    const after = entries[0]!.index - 1;
    assert(after >= this.committed, `append after ${after} would overwrite committed ${this.committed}`);
    this.unstable.truncateAndAppend(entries);
    return this.lastIndex();
  }

  commitTo(index: LogIndex): void {
    if (index <= this.committed) return;
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  appliedTo(index: LogIndex): void {
    if (index === 0) return;
    assert(index <= this.committed && index >= this.applied, `applied ${index} outside [${this.applied}, ${this.committed}]`);
    this.applied = index;
  }

  /** Committed entries not yet applied, at most `maxBytes` (at least one). */
  nextCommittedEntries(maxBytes: number): Entry[] {
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1, maxBytes) ?? [];
  }

  /** Replaces the log by a snapshot received from the leader. */
  restore(snapshot: Snapshot): void {
    this.committed = snapshot.metadata.index;
    this.unstable.restore(snapshot);
  }

  stableTo(index: LogIndex, term: Term): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: LogIndex): void {
    const snap = this.unstable.snapshot;
    if (snap !== null && snap.metadata.index === index) this.unstable.snapshot = null;
  }

  /** The latest snapshot: the unstable one being installed, or the stored one. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }
}
