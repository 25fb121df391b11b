/**
 * Writes to a group's state key space that do not come from applying log
 * entries: inbox acks, and the gap markers queued after a snapshot restore.
 */
import type { GroupStore, KvWrite, StorageEngine } from "../storage/storage-engine.ts";

/** Writes local (non-replicated) keys of a group; resolves once they are in RocksDB. */
export type LocalWriter = (writes: readonly KvWrite[]) => Promise<void>;

/**
 * A {@link LocalWriter} over the engine's state-machine write queue, so local
 * writes are ordered with the driver's apply batches and never interleave with
 * one. The batch re-records the group's applied index unchanged: the index is
 * read when the queued batch is planned (after every earlier apply committed),
 * which is why it is a getter and not a value read now.
 */
export function localWriter(engine: StorageEngine, store: GroupStore): LocalWriter {
  return (writes) =>
    engine.apply([
      {
        group: store,
        get appliedIndex() {
          return store.appliedIndex;
        },
        writes,
      },
    ]);
}
