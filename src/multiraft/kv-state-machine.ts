/**
 * A minimal replicated key-value state machine for groups that hold nothing
 * else (the test groups of the many-groups test and benchmark): a committed
 * Put (src/kv/kv-command.ts) writes its value under its key; other entries
 * are skipped. All state lives in the group's RocksDB key space.
 */
import { decodeKvCommand } from "../kv/kv-command.ts";
import type { Entry, LogIndex } from "../raft/types.ts";
import type { GroupStore, KvWrite } from "../storage/storage-engine.ts";
import { decodePairChunks, snapshotChunks } from "./pairs-snapshot.ts";
import type { ApplyOutcome, SnapshotChunks, StateMachine } from "./state-machine.ts";

/** The key-value state machine of one group; apply results are `true` for every Put applied. */
export class KvStateMachine implements StateMachine {
  constructor(private readonly store: GroupStore) {}

  apply(entries: readonly Entry[]): Promise<ApplyOutcome> {
    const writes: KvWrite[] = [];
    const results = new Map<LogIndex, unknown>();
    for (const entry of entries) {
      if (entry.type !== 0 || entry.data.byteLength === 0) continue;
      const command = decodeKvCommand(entry.data);
      if (command === undefined) continue;
      writes.push({ key: command.key.slice(), value: command.value.slice() });
      results.set(entry.index, true);
    }
    return Promise.resolve({ writes, results });
  }

  /** The value stored under `key`, as of the last applied entry. */
  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.store.get(key);
  }

  snapshotChunks(): SnapshotChunks {
    return snapshotChunks((prefix) => this.store.scan(prefix));
  }

  restoreStored(chunks: SnapshotChunks): Promise<void> {
    return this.store.restoreStateMachine(decodePairChunks(chunks));
  }

  /** Holds nothing in memory. */
  afterRestore(): Promise<void> {
    return Promise.resolve();
  }
}
