/**
 * A deterministic write workload for the kill -9 test: from a seed, a sequence
 * of operations, each ONE engine batch (persist Readies of several groups, apply
 * state machine writes, create a snapshot). The same seed against the same
 * state gives the same operations, so a crash-free replay is the oracle for
 * what a crashed run must have on disk.
 */
import type { ConfState } from "../../src/raft/types.ts";
import type { GroupStore, StorageEngine } from "../../src/storage/storage-engine.ts";
import { entry, ready } from "./helpers.ts";

export const crashGroupIds = ["g0", "g1", "g2"] as const;
const conf: ConfState = { voters: ["hs1", "hs2", "hs3"], votersOutgoing: [], learners: [], learnersNext: [] };
const encoder = new TextEncoder();

/** mulberry32: a small seeded PRNG in [0, 1). */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs the workload's operations one at a time against one engine. */
export class CrashWorkload {
  private readonly random: () => number;
  private readonly terms = new Map<string, number>();

  private constructor(private readonly engine: StorageEngine, readonly groups: readonly GroupStore[], seed: number) {
    this.random = prng(seed);
  }

  static async start(engine: StorageEngine, seed: number): Promise<CrashWorkload> {
    const groups: GroupStore[] = [];
    for (const id of crashGroupIds) groups.push(await engine.openGroup(id, conf.voters));
    return new CrashWorkload(engine, groups, seed);
  }

  private pickGroups(): GroupStore[] {
    const picked = this.groups.filter(() => this.random() < 0.6);
    return picked.length > 0 ? picked : [this.groups[Math.floor(this.random() * this.groups.length)]!];
  }

  /** Runs operation number `step`; resolves once its batch is written. */
  async step(step: number): Promise<void> {
    const roll = this.random();
    if (roll < 0.6) return this.persist();
    if (roll < 0.92) return this.apply(step);
    return this.snapshot();
  }

  private async persist(): Promise<void> {
    const items = this.pickGroups().map((group) => {
      const log = group.log;
      const hard = log.getHardState();
      let term = this.terms.get(group.groupId) ?? 1;
      let start = log.lastIndex() + 1;
      if (this.random() < 0.15) {
        // A new leader overwrites an uncommitted tail, possibly with fewer entries.
        term++;
        start = Math.max(hard.commit + 1, log.snapshot().metadata.index + 1, log.lastIndex() - 2);
      }
      this.terms.set(group.groupId, term);
      const count = 1 + Math.floor(this.random() * 4);
      const newEntries = Array.from({ length: count }, (_, i) => entry(start + i, term, Math.floor(this.random() * 1500)));
      const newLast = start + count - 1;
      const commit = Math.min(newLast, hard.commit + Math.floor(this.random() * 3));
      return { group, ready: ready({ entries: newEntries, hardState: { term, vote: "hs1", commit }, mustSync: true }) };
    });
    await this.engine.persistReadies(items);
  }

  private async apply(step: number): Promise<void> {
    const items = this.pickGroups().flatMap((group) => {
      const commit = group.log.getHardState().commit;
      if (group.appliedIndex >= commit) return [];
      const appliedIndex = Math.min(commit, group.appliedIndex + 1 + Math.floor(this.random() * 3));
      const key = encoder.encode(`k${Math.floor(this.random() * 8)}`);
      const change = this.random() < 0.2 ? { key, delete: true as const } : { key, value: encoder.encode(`v${step}`) };
      const marker = { key: encoder.encode("applied"), value: encoder.encode(String(appliedIndex)) };
      return [{ group, appliedIndex, writes: [change, marker] }];
    });
    if (items.length > 0) await this.engine.apply(items);
  }

  private async snapshot(): Promise<void> {
    const group = this.groups[Math.floor(this.random() * this.groups.length)]!;
    const keep = Math.floor(this.random() * 3);
    if (group.appliedIndex <= group.log.snapshot().metadata.index) return;
    await group.createSnapshot(group.appliedIndex, conf, encoder.encode(`snap@${group.appliedIndex}`), keep);
  }
}
