/** Shared helpers of the storage tests: temp dirs, seeds, entries and a comparable dump of a group's log. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MemoryStorage } from "../../src/raft/memory-storage.ts";
import type { Entry, HardState, LogIndex, SnapshotMetadata, Term } from "../../src/raft/types.ts";
import { EntryType, emptyHardState, type Ready } from "../../src/raft/types.ts";

/** A fresh directory under the OS temp dir; remove it with {@link removeDir}. */
export function makeTempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `epochd-storage-${label}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** The fast-check seed: FC_SEED from the environment, or a random one, printed so a failure reproduces. */
export function propertySeed(name: string): number {
  const fromEnv = process.env["FC_SEED"];
  const seed = fromEnv !== undefined ? Number(fromEnv) : Math.floor(Math.random() * 0x7fffffff);
  console.log(`[${name}] fast-check seed ${seed} (rerun with FC_SEED=${seed})`);
  return seed;
}

const encoder = new TextEncoder();

/** A normal entry whose data names its index and term, so a moved or stale entry shows. */
export function entry(index: LogIndex, term: Term, bytes = 0): Entry {
  const label = encoder.encode(`e${index}t${term}`);
  const data = new Uint8Array(label.length + bytes);
  data.set(label);
  return { index, term, type: EntryType.Normal, data };
}

/** Entries [from, to] at `term`. */
export function entries(from: LogIndex, to: LogIndex, term: Term, bytes = 0): Entry[] {
  const result: Entry[] = [];
  for (let index = from; index <= to; index++) result.push(entry(index, term, bytes));
  return result;
}

/** A Ready carrying only what storage looks at. */
export function ready(fields: Partial<Pick<Ready, "entries" | "hardState" | "snapshot" | "mustSync">>): Ready {
  return {
    softState: null,
    hardState: fields.hardState ?? null,
    entries: fields.entries ?? [],
    snapshot: fields.snapshot ?? null,
    committedEntries: [],
    messages: [],
    readStates: [],
    mustSync: fields.mustSync ?? true,
  };
}

/** Everything the LogStorage contract exposes, as plain data to compare with toEqual. */
export interface LogDump {
  hardState: HardState;
  confVoters: readonly string[];
  firstIndex: LogIndex;
  lastIndex: LogIndex;
  terms: Term[];
  entries: { index: LogIndex; term: Term; type: EntryType; data: number[] }[];
  snapshot: SnapshotMetadata;
  snapshotData: number[];
}

/** Reads the whole contract surface of `log`: terms from firstIndex - 1 on, every entry, the snapshot. */
export function dumpLog(log: MemoryStorage): LogDump {
  const first = log.firstIndex();
  const last = log.lastIndex();
  const terms: Term[] = [];
  for (let index = first - 1; index <= last; index++) terms.push(log.term(index));
  const stored = last >= first ? log.entries(first, last + 1, Number.MAX_SAFE_INTEGER) : [];
  const { hardState, confState } = log.initialState();
  return {
    hardState: { ...emptyHardState, ...hardState },
    confVoters: confState.voters,
    firstIndex: first,
    lastIndex: last,
    terms,
    entries: stored.map((e) => ({ index: e.index, term: e.term, type: e.type, data: Array.from(e.data) })),
    snapshot: log.snapshot().metadata,
    snapshotData: Array.from(log.snapshot().data),
  };
}
