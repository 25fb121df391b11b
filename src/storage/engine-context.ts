/**
 * What a {@link GroupStore} needs from the engine that owns it: the database,
 * the write queues and the one place batches are written. Kept apart so the
 * group store and the engine do not import each other.
 */
import type { RawBatchOp, RawDb } from "./rocksdb-promises.ts";
import type { SerialQueue } from "./serial-queue.ts";

/** The engine's shared parts, as seen by its groups. */
export interface EngineContext {
  readonly db: RawDb;
  /** Orders every write touching a group's log, hard state or snapshot, and the mirror updates after them. */
  readonly logQueue: SerialQueue;
  /** Orders every write touching state machine data or applied indexes. */
  readonly stateQueue: SerialQueue;
  /**
   * Writes `ops` as one atomic batch, synced when `sync` is true (and the engine
   * syncs at all). After a failed write the engine refuses every later one: the
   * mirrors may no longer match the disk.
   */
  write(ops: RawBatchOp[], sync: boolean): Promise<void>;
}
