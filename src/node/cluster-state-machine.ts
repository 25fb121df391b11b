import { decodeKvCommand } from "../kv/kv-command.ts";
import { decodePairs, snapshotPairs } from "../multiraft/pairs-snapshot.ts";
import type { ApplyOutcome, StateMachine } from "../multiraft/state-machine.ts";
import { EntryType, type Entry, type LogIndex } from "../raft/types.ts";
import type { GroupStore, KvWrite } from "../storage/storage-engine.ts";
import { decodeSetHomeserver, setHomeserverOp, type HomeserverRecord } from "./directory-command.ts";

/** What a proposer of a cluster-group entry learns once it is applied. */
export type ClusterResult = { ok: true } | { ok: false; reason: string };

const kvPrefix = 0x6b; // "k"
const directoryPrefix = 0x64; // "d"

function prefixed(prefix: number, key: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + key.byteLength);
  out[0] = prefix;
  out.set(key, 1);
  return out;
}

/**
 * The state machine of the cluster group: the cluster directory (which
 * homeservers exist and where) and the replicated key-value store used by
 * the runtime and the Raft benchmark. Apply is a pure function of entries;
 * `onDirectoryChange` lets the process update its peer links afterwards.
 */
export class ClusterStateMachine implements StateMachine {
  private readonly directory = new Map<string, HomeserverRecord>();

  constructor(
    private readonly store: GroupStore,
    private readonly onDirectoryChange: (record: HomeserverRecord) => void = () => {},
  ) {}

  /** Loads the directory from storage; call once before serving. */
  async load(): Promise<void> {
    this.directory.clear();
    for await (const [, value] of this.store.scan(Uint8Array.of(directoryPrefix))) {
      const record = decodeSetHomeserver(value);
      if (record !== undefined) this.directory.set(record.id, record);
    }
  }

  /** The homeservers the directory knows. */
  homeservers(): ReadonlyMap<string, HomeserverRecord> {
    return this.directory;
  }

  apply(entries: readonly Entry[]): ApplyOutcome {
    const writes: KvWrite[] = [];
    const results = new Map<LogIndex, ClusterResult>();
    for (const entry of entries) {
      if (entry.type !== EntryType.Normal || entry.data.byteLength === 0) continue;
      if (entry.data[1] === setHomeserverOp) {
        const record = decodeSetHomeserver(entry.data);
        if (record === undefined) {
          results.set(entry.index, { ok: false, reason: "malformed homeserver record" });
          continue;
        }
        this.directory.set(record.id, record);
        writes.push({ key: prefixed(directoryPrefix, new TextEncoder().encode(record.id)), value: entry.data });
        results.set(entry.index, { ok: true });
        this.onDirectoryChange(record);
        continue;
      }
      const command = decodeKvCommand(entry.data);
      if (command === undefined) {
        results.set(entry.index, { ok: false, reason: "malformed command" });
        continue;
      }
      writes.push({ key: prefixed(kvPrefix, command.key), value: command.value });
      results.set(entry.index, { ok: true });
    }
    return { writes, results };
  }

  /** Reads a key of the key-value store as of the last applied index. */
  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.store.get(prefixed(kvPrefix, key));
  }

  snapshotData(): Promise<Uint8Array> {
    return snapshotPairs(this.store);
  }

  async restore(data: Uint8Array, index: LogIndex): Promise<void> {
    await this.store.restoreStateMachine(decodePairs(data), index);
    await this.load();
    for (const record of this.directory.values()) this.onDirectoryChange(record);
  }
}
