import type { Entry, LogIndex } from "../raft/types.ts";
import type { KvWrite, LocalWrites } from "../storage/storage-engine.ts";

/** What applying a batch of committed entries produced. */
export interface ApplyOutcome {
  /** Storage writes, committed with the new applied index in one batch. */
  readonly writes: KvWrite[];
  /** The result of each entry that has one, for the proposer waiting on it. */
  readonly results: ReadonlyMap<LogIndex, unknown>;
  /**
   * Writes to local keys of other groups' key spaces (the inboxes), committed
   * in the same batch as `writes`, so a crash keeps both or neither.
   */
  readonly localWrites?: readonly LocalWrites[];
  /** Local reactions to run once `writes` are in storage, so readers see what they announce. */
  readonly afterWrite?: () => void;
}

/**
 * A replicated state machine hosted by one Raft group. Apply must be
 * deterministic: the same entries give the same writes and results on every
 * homeserver, whatever its clock or configuration.
 */
export interface StateMachine {
  /**
   * Applies committed entries in log order (conf change and empty entries
   * included: skip them). May await storage reads and signature checks, but
   * nothing that differs between homeservers.
   */
  apply(entries: readonly Entry[]): Promise<ApplyOutcome>;
  /**
   * The state as of the last applied index, for a follower behind the
   * compacted log (log compaction itself copies nothing), as a stream of
   * chunks that the transport sends as they are read. Must capture that state
   * synchronously, before returning (the driver keeps applying while the
   * chunks are read): a storage iterator made at call time does.
   */
  snapshotChunks(): SnapshotChunks;
  /**
   * Writes a snapshot's state, read from `chunks`, over the whole stored
   * state; changes nothing in memory and leaves the applied index where it
   * is. The driver moves it (synced) once {@link afterRestore} is done too: a
   * crash before leaves it below the snapshot's index, and the driver restores
   * again on start. Runs off the Ready loop, while other groups apply: it may
   * touch only this group's own records.
   */
  restoreStored(chunks: SnapshotChunks): Promise<void>;
  /**
   * Takes up the state {@link restoreStored} wrote: reloads what is held in
   * memory and reacts (listeners, inbox gap markers). Runs in the Ready loop,
   * between two rounds, as apply does.
   */
  afterRestore(index: LogIndex): Promise<void>;
  /**
   * Optional: `entry`, the one right after the last entry applied, is now
   * stored durably here, in the term this node is in, which is the entry's
   * (this node leads the group or follows its leader). For work that may start before
   * the entry commits: a channel group's follower signs the commit the entry
   * will make the channel accept (docs/ARCHITECTURE.md, "Signing at store
   * time"). Called at most once per index and term; must not throw.
   */
  storedNext?(entry: Entry): void;
}

/** Snapshot data as a stream of byte chunks (their boundaries carry no meaning). */
export type SnapshotChunks = AsyncIterable<Uint8Array>;
