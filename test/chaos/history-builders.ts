/**
 * Builders of chaos histories for the checker's tests: a correct history made by playing operations
 * against a sequential log at chosen instants (so it is linearizable by construction), with final states
 * and deliveries that agree with it; tests then break one thing and expect that one check to fire.
 */
import type { Delivery, FinalEvent, HistoryOp, HomeserverFinal, RunHistory } from "../../src/chaos/history.ts";

/** One planned operation: what happens at instant `atMs`, seen by the client from atMs - before to atMs + after. */
export interface PlannedOp {
  readonly kind: "append" | "conflict" | "read" | "message";
  readonly atMs: number;
  readonly beforeMs: number;
  readonly afterMs: number;
  readonly process: string;
}

/** A mutable history under construction. */
export interface Built {
  ops: HistoryOp[];
  /** The channel's log: commits and messages in order. */
  log: FinalEvent[];
  deliveries: Delivery[];
  sentTexts: Record<string, Record<string, string>>;
}

export const channel = "c";
export const homeservers = ["hs1", "hs2", "hs3"];

/** Plays `plan` (sorted by atMs) against a sequential log. */
export function buildHistory(plan: readonly PlannedOp[]): Built {
  const built: Built = { ops: [], log: [], deliveries: [], sentTexts: { [channel]: {} } };
  let epoch = 0;
  let id = 0;
  const commits: string[] = [];
  for (const p of [...plan].sort((a, b) => a.atMs - b.atMs)) {
    const base = { id: id++, process: p.process, channel, invokeMs: p.atMs - p.beforeMs, endMs: p.atMs + p.afterMs };
    const sequence = built.log.length + 1;
    if (p.kind === "append") {
      const hash = `commit-${epoch}`;
      built.ops.push({ ...base, kind: "commit", outcome: "ok", epoch, hash });
      built.log.push({ sequence, kind: "commit", epoch, hash });
      commits.push(hash);
      epoch++;
    } else if (p.kind === "conflict" && epoch > 0) {
      const lost = epoch - 1;
      built.ops.push({ ...base, kind: "commit", outcome: "fail", epoch: lost, hash: `loser-${base.id}`, winner: { epoch: lost, hash: commits[lost]! } });
    } else if (p.kind === "read") {
      built.ops.push({ ...base, kind: "read", outcome: "ok", epoch });
    } else if (p.kind === "message") {
      const hash = `message-${base.id}`;
      built.ops.push({ ...base, kind: "message", outcome: "ok", epoch, hash, sequence });
      built.log.push({ sequence, kind: "message", epoch, hash });
      built.sentTexts[channel]![String(sequence)] = `text ${base.id}`;
    }
  }
  // A reader device that received everything, in order, and is caught up.
  built.deliveries.push({
    device: "reader@hs1",
    channel,
    joinedAtEpoch: 0,
    items: built.log.map((e) => ({ sequence: e.sequence, kind: e.kind, epoch: e.epoch, ...(e.kind === "message" ? { text: built.sentTexts[channel]![String(e.sequence)]! } : {}) })),
    caughtUp: true,
  });
  return built;
}

/** The RunHistory of `built`, with every homeserver holding `logs[hs]` (default: the built log). */
export function toRunHistory(built: Built, logs: Partial<Record<string, FinalEvent[]>> = {}): RunHistory {
  const final: Record<string, HomeserverFinal> = {};
  for (const hs of homeservers) {
    const events = logs[hs] ?? built.log;
    final[hs] = { ok: true, channels: { [channel]: { epoch: events.filter((e) => e.kind === "commit").length, events } } };
  }
  return { ops: built.ops, deliveries: built.deliveries, final, sentTexts: built.sentTexts };
}

/** A small correct history: commits, a lost race, messages and reads, some overlapping. */
export function correctPlan(): PlannedOp[] {
  return [
    { kind: "append", atMs: 10, beforeMs: 5, afterMs: 5, process: "a" },
    { kind: "message", atMs: 20, beforeMs: 3, afterMs: 3, process: "b" },
    { kind: "append", atMs: 30, beforeMs: 8, afterMs: 4, process: "b" },
    { kind: "conflict", atMs: 32, beforeMs: 9, afterMs: 2, process: "a" },
    { kind: "read", atMs: 33, beforeMs: 10, afterMs: 10, process: "r" },
    { kind: "append", atMs: 50, beforeMs: 15, afterMs: 5, process: "a" },
    { kind: "message", atMs: 60, beforeMs: 3, afterMs: 3, process: "a" },
    { kind: "read", atMs: 70, beforeMs: 2, afterMs: 2, process: "r" },
  ];
}
