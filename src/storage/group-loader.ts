/**
 * Loads one group's records into a {@link MemoryStorage} mirror, checking every
 * record's checksum and that the records agree with each other: a log without
 * gaps that starts right after its recorded start, a snapshot inside it, a
 * commit index within it. Anything else is a {@link CorruptionError}.
 */
import { MemoryStorage } from "../raft/memory-storage.ts";
import type { Entry, GroupId, HardState, LogIndex, SnapshotMetadata } from "../raft/types.ts";
import {
  decodeCounter,
  decodeEntryBody,
  decodeHardState,
  decodeLogPosition,
  decodeSnapshotMetadata,
  type LogPosition,
} from "./codec.ts";
import { describeKey, GroupKind, parseKey, prefixEnd, type GroupKeys } from "./keys.ts";
import { CorruptionError, decodeRecord, openRecord } from "./records.ts";
import type { RawDb } from "./rocksdb-promises.ts";

/** What a group's records hold, as loaded. */
export interface LoadedGroup {
  readonly mirror: MemoryStorage;
  readonly appliedIndex: LogIndex;
  /** State machine records checked (their values are read on demand). */
  readonly stateMachineRecords: number;
}

interface RawGroup {
  hardState?: HardState;
  snapshotMetadata?: SnapshotMetadata;
  snapshotData?: Uint8Array;
  logStart?: LogPosition;
  appliedIndex?: LogIndex;
  entries: Entry[];
  stateMachineRecords: number;
}

/**
 * Reads and checks every record of the group under `keys`; throws {@link CorruptionError} on any problem.
 * With `stateMachine` false the state machine records are skipped (they are checked as they are read
 * anyway): for reloading a group this process already loaded and checked whole.
 */
export async function loadGroup(db: RawDb, keys: GroupKeys, stateMachine = true): Promise<LoadedGroup> {
  const raw = await readRecords(db, keys, stateMachine);
  const where = `group ${JSON.stringify(keys.groupId)}`;
  const missing = (what: string): never => {
    throw new CorruptionError(where, `its ${what} record is missing`);
  };
  const hardState = raw.hardState ?? missing("hard state");
  const metadata = raw.snapshotMetadata ?? missing("snapshot metadata");
  const data = raw.snapshotData ?? missing("snapshot data");
  const logStart = raw.logStart ?? missing("log start");
  const appliedIndex = raw.appliedIndex ?? missing("applied index");
  checkLog(where, keys, logStart, raw.entries);
  const mirror = buildMirror(where, { metadata, data }, logStart, raw.entries);
  if (hardState.commit > mirror.lastIndex()) {
    throw new CorruptionError(where, `commit index ${hardState.commit} is beyond the last log index ${mirror.lastIndex()}`);
  }
  mirror.setHardState(hardState);
  return { mirror, appliedIndex, stateMachineRecords: raw.stateMachineRecords };
}

async function readRecords(db: RawDb, keys: GroupKeys, stateMachine: boolean): Promise<RawGroup> {
  const raw: RawGroup = { entries: [], stateMachineRecords: 0 };
  const end = stateMachine ? prefixEnd(keys.prefix) : keys.stateMachinePrefix;
  for await (const [key, value] of db.iterate(keys.prefix, end)) {
    const payload = openRecord(key, value);
    const parsed = parseKey(key);
    if (parsed.space !== "group" || parsed.groupId !== keys.groupId) {
      throw new CorruptionError(describeKey(key), `unexpected key inside group ${JSON.stringify(keys.groupId)}`);
    }
    switch (parsed.kind) {
      case GroupKind.HardState:
        raw.hardState = decodeRecord(key, payload, decodeHardState);
        break;
      case GroupKind.SnapshotMetadata:
        raw.snapshotMetadata = decodeRecord(key, payload, decodeSnapshotMetadata);
        break;
      case GroupKind.SnapshotData:
        raw.snapshotData = payload;
        break;
      case GroupKind.LogStart:
        raw.logStart = decodeRecord(key, payload, decodeLogPosition);
        break;
      case GroupKind.AppliedIndex:
        raw.appliedIndex = decodeRecord(key, payload, (bytes) => decodeCounter(bytes, "applied index"));
        break;
      case GroupKind.LogEntry: {
        const index = parsed.index!;
        raw.entries.push(decodeRecord(key, payload, (bytes) => decodeEntryBody(index, bytes)));
        break;
      }
      case GroupKind.StateMachine:
        raw.stateMachineRecords++;
        break;
    }
  }
  return raw;
}

function checkLog(where: string, keys: GroupKeys, logStart: LogPosition, entries: readonly Entry[]): void {
  let expected = logStart.index + 1;
  for (const entry of entries) {
    if (entry.index < expected) {
      throw new CorruptionError(describeKey(keys.logEntry(entry.index)), `entry is at or before the log start ${logStart.index}`);
    }
    if (entry.index > expected) {
      throw new CorruptionError(where, `log entry ${expected} is missing (the log jumps to ${entry.index})`);
    }
    expected++;
  }
}

/**
 * Rebuilds the mirror through MemoryStorage's own operations. When the log was
 * compacted to before the snapshot (entries kept for slow followers), the log
 * start is installed as a data-less snapshot first and the real snapshot is
 * recorded on top of the loaded entries.
 */
function buildMirror(
  where: string,
  snapshot: { metadata: SnapshotMetadata; data: Uint8Array },
  logStart: LogPosition,
  entries: Entry[],
): MemoryStorage {
  const { metadata } = snapshot;
  if (logStart.index > metadata.index) {
    throw new CorruptionError(where, `log start ${logStart.index} is after the snapshot at ${metadata.index}`);
  }
  // A group starts with a snapshot at index 0 and no membership: members come from conf change entries.
  const mirror = new MemoryStorage();
  if (logStart.index === metadata.index) {
    if (logStart.term !== metadata.term) {
      throw new CorruptionError(where, `log start term ${logStart.term} differs from the snapshot's term ${metadata.term}`);
    }
    if (metadata.index > 0) mirror.applySnapshot(snapshot);
    mirror.append(entries);
    return mirror;
  }
  if (logStart.index > 0) {
    mirror.applySnapshot({ metadata: { ...metadata, index: logStart.index, term: logStart.term }, data: new Uint8Array(0) });
  }
  mirror.append(entries);
  if (metadata.index > mirror.lastIndex() || mirror.term(metadata.index) !== metadata.term) {
    throw new CorruptionError(where, `the snapshot at ${metadata.index} (term ${metadata.term}) does not match the log`);
  }
  mirror.createSnapshot(metadata.index, metadata.confState, snapshot.data);
  return mirror;
}
