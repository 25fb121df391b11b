/**
 * The chaos run checker: a pure function of the run's history (client operations, what devices received,
 * every homeserver's final state) that reports every broken promise with enough context to debug it:
 *
 * - one-commit-per-epoch (P1): no two different commits are ever seen for one channel and epoch, in
 *   any answer, any device's read or any homeserver's final log;
 * - homeservers-agree: every homeserver's final log of a channel is the same sequence of events;
 * - durable (P2): every acknowledged commit and message is in every homeserver's final log, with the
 *   epoch (commits) or sequence (messages) it was acknowledged with; and nothing is in a log that no
 *   client ever submitted;
 * - linearizable: per channel, the commits accepted (acknowledged, or unanswered but found in the final
 *   log), the conflicts answered and the epochs read fit one ordered log (checker-linearizability.ts);
 * - delivered (P4): see checker-delivery.ts.
 */
import { checkLinearizable, type Model, type TimedOp } from "./checker-linearizability.ts";
import { checkDelivery } from "./checker-delivery.ts";
import type { FinalEvent, HistoryOp, RunHistory } from "./history.ts";

/** One broken promise. */
export interface Violation {
  readonly check: "one-commit-per-epoch" | "homeservers-agree" | "durable" | "linearizable" | "delivered" | "final-state";
  readonly channel?: string;
  readonly epoch?: number;
  readonly message: string;
  /** The operations and observations involved. */
  readonly context?: unknown;
}

/** Counts of what was checked, for the report. */
export interface CheckStats {
  channels: number;
  acknowledgedCommits: number;
  acknowledgedMessages: number;
  unknownCommitsApplied: number;
  linearizabilitySteps: number;
  linearizabilityUndecided: number;
  deliveredItems: number;
}

/** What the checker found. */
export interface CheckResult {
  readonly violations: Violation[];
  readonly stats: CheckStats;
}

/** A log as a persistent list, newest entry first; the empty log is a node of length 0 (never undefined: undefined means "rejected"). */
interface Log {
  readonly hash: string;
  readonly length: number;
  readonly prev: Log | undefined;
}

const emptyLog: Log = { hash: "", length: 0, prev: undefined };

/** One operation of the per-channel log specification. */
export type LogInput =
  | { readonly kind: "append"; readonly epoch: number; readonly hash: string }
  | { readonly kind: "conflict"; readonly epoch: number; readonly winner: string }
  | { readonly kind: "read"; readonly length: number };

function entryAt(log: Log, index: number): string | undefined {
  let cursor: Log | undefined = log;
  while (cursor !== undefined && cursor.length - 1 > index) cursor = cursor.prev;
  return cursor !== undefined && cursor.length - 1 === index ? cursor.hash : undefined;
}

/**
 * The sequential specification of a channel's commits: a log where "submit commit for epoch e" succeeds
 * iff e is the log's length, a lost race names the commit already at e, and a read returns the length.
 */
export const commitLogModel: Model<Log, LogInput> = {
  init: emptyLog,
  step(log, input) {
    const length = log.length;
    switch (input.kind) {
      case "append":
        return input.epoch === length ? { hash: input.hash, length: length + 1, prev: log } : undefined;
      case "conflict":
        return input.epoch < length && entryAt(log, input.epoch) === input.winner ? log : undefined;
      case "read":
        return input.length === length ? log : undefined;
    }
  },
  key: (log) => `${log.length}:${log.hash}`,
};

/** The channel's agreed final log: the first homeserver's that could be read. */
function referenceLogs(history: RunHistory): Map<string, readonly FinalEvent[]> {
  const logs = new Map<string, readonly FinalEvent[]>();
  for (const final of Object.values(history.final)) {
    if (!final.ok) continue;
    for (const [channel, view] of Object.entries(final.channels)) if (!logs.has(channel) || view.events.length > logs.get(channel)!.length) logs.set(channel, view.events);
  }
  return logs;
}

function checkOneCommitPerEpoch(history: RunHistory, out: Violation[]): void {
  const seen = new Map<string, Map<string, string[]>>();
  const note = (channel: string, epoch: number, hash: string, source: string) => {
    const key = `${channel}#${epoch}`;
    const byHash = seen.get(key) ?? new Map<string, string[]>();
    seen.set(key, byHash);
    const sources = byHash.get(hash) ?? [];
    if (sources.length < 5) sources.push(source);
    byHash.set(hash, sources);
  };
  for (const op of history.ops) {
    if (op.kind === "commit" && op.outcome === "ok") note(op.channel, op.epoch!, op.hash!, `op ${op.id} acknowledged to ${op.process} at ${op.endMs} ms`);
    if (op.kind === "commit" && op.winner !== undefined) note(op.channel, op.winner.epoch, op.winner.hash, `op ${op.id}: conflict answer to ${op.process} named it winner`);
    for (const c of op.commitsSeen ?? []) note(op.channel, c.epoch, c.hash, `op ${op.id}: ${op.process} read it at sequence ${c.sequence}`);
  }
  for (const [hs, final] of Object.entries(history.final)) {
    if (!final.ok) continue;
    for (const [channel, view] of Object.entries(final.channels)) for (const e of view.events) if (e.kind === "commit") note(channel, e.epoch, e.hash, `${hs}'s final log, sequence ${e.sequence}`);
  }
  for (const [key, byHash] of seen) {
    if (byHash.size < 2) continue;
    const [channel, epochText] = key.split("#");
    out.push({ check: "one-commit-per-epoch", channel: channel!, epoch: Number(epochText), message: `${byHash.size} different commits for epoch ${epochText} of ${channel}`, context: Object.fromEntries(byHash) });
  }
}

function eventKey(e: FinalEvent): string {
  return `${e.sequence}/${e.kind}/${e.epoch}/${e.hash}`;
}

function checkAgreement(history: RunHistory, out: Violation[]): void {
  const readable = Object.entries(history.final).filter(([, f]) => f.ok) as Array<[string, Extract<RunHistory["final"][string], { ok: true }>]>;
  for (const [hs, final] of Object.entries(history.final)) if (!final.ok) out.push({ check: "final-state", message: `${hs} could not be read at the end: ${final.error}` });
  const channels = new Set(readable.flatMap(([, f]) => Object.keys(f.channels)));
  for (const channel of channels) {
    const views = readable.filter(([, f]) => channel in f.channels).map(([hs, f]) => ({ hs, events: f.channels[channel]?.events }));
    const [first, ...rest] = views;
    for (const other of rest) {
      const a = first!.events?.map(eventKey) ?? [];
      const b = other.events?.map(eventKey) ?? [];
      const at = a.findIndex((k, i) => k !== b[i]);
      if (a.length === b.length && at < 0) continue;
      const index = at < 0 ? Math.min(a.length, b.length) : at;
      out.push({
        check: "homeservers-agree",
        channel,
        message: `${first!.hs} and ${other.hs} hold different logs of ${channel} (${a.length} and ${b.length} events), first difference at position ${index}`,
        context: { [first!.hs]: a.slice(index, index + 3), [other.hs]: b.slice(index, index + 3) },
      });
    }
  }
}

function checkDurable(history: RunHistory, out: Violation[], stats: CheckStats): void {
  const submitted = new Set(history.ops.filter((o) => o.kind === "commit" || o.kind === "message").map((o) => `${o.channel}#${o.hash}`));
  for (const [hs, final] of Object.entries(history.final)) {
    if (!final.ok) continue;
    for (const op of history.ops) {
      if (op.outcome !== "ok" || (op.kind !== "commit" && op.kind !== "message")) continue;
      // Only the homeservers hosting a channel's group at the end hold (and were asked for) its log.
      if (!(op.channel in final.channels)) continue;
      const events = final.channels[op.channel]!.events;
      const found = events.find((e) => e.hash === op.hash);
      const expected = op.kind === "commit" ? found?.kind === "commit" && found.epoch === op.epoch : found?.kind === "message" && found.sequence === op.sequence;
      if (!expected) {
        out.push({
          check: "durable",
          channel: op.channel,
          ...(op.epoch === undefined ? {} : { epoch: op.epoch }),
          message: `acknowledged ${op.kind} ${op.hash!.slice(0, 12)} (op ${op.id} by ${op.process}, acknowledged at ${op.endMs} ms) is ${found === undefined ? "missing from" : `at the wrong place (sequence ${found.sequence}, epoch ${found.epoch}) in`} ${hs}'s final log`,
          context: op,
        });
      }
    }
    for (const [channel, view] of Object.entries(final.channels)) {
      for (const e of view.events) {
        if (e.kind !== "proposal" && !submitted.has(`${channel}#${e.hash}`)) out.push({ check: "durable", channel, epoch: e.epoch, message: `${hs}'s log of ${channel} holds a ${e.kind} at sequence ${e.sequence} that no client submitted` });
      }
    }
  }
  stats.acknowledgedCommits = history.ops.filter((o) => o.kind === "commit" && o.outcome === "ok").length;
  stats.acknowledgedMessages = history.ops.filter((o) => o.kind === "message" && o.outcome === "ok").length;
}

/** The log operations of one channel: resolved against the final log where the client had no answer. */
function logOps(ops: readonly HistoryOp[], finalCommits: ReadonlyMap<string, number>, stats: CheckStats): TimedOp<LogInput>[] {
  const timed: TimedOp<LogInput>[] = [];
  for (const op of ops) {
    const returnMs = op.endMs ?? Infinity;
    if (op.kind === "read" && op.outcome === "ok") timed.push({ id: op.id, callMs: op.invokeMs, returnMs, input: { kind: "read", length: op.epoch! } });
    if (op.kind !== "commit") continue;
    const selfWon = op.winner !== undefined && op.winner.hash === op.hash && op.winner.epoch === op.epoch;
    if (op.outcome === "ok" || selfWon) timed.push({ id: op.id, callMs: op.invokeMs, returnMs, input: { kind: "append", epoch: op.epoch!, hash: op.hash! } });
    else if (op.outcome === "fail" && op.winner !== undefined) timed.push({ id: op.id, callMs: op.invokeMs, returnMs, input: { kind: "conflict", epoch: op.winner.epoch, winner: op.winner.hash } });
    else if ((op.outcome === "unknown" || op.outcome === "pending") && finalCommits.get(op.hash!) === op.epoch) {
      stats.unknownCommitsApplied++;
      timed.push({ id: op.id, callMs: op.invokeMs, returnMs: Infinity, input: { kind: "append", epoch: op.epoch!, hash: op.hash! } });
    }
  }
  return timed;
}

function checkLinearizableChannels(history: RunHistory, out: Violation[], stats: CheckStats): void {
  const logs = referenceLogs(history);
  const byChannel = new Map<string, HistoryOp[]>();
  for (const op of history.ops) if (op.kind === "commit" || op.kind === "read") byChannel.set(op.channel, [...(byChannel.get(op.channel) ?? []), op]);
  for (const [channel, ops] of byChannel) {
    const finalCommits = new Map((logs.get(channel) ?? []).filter((e) => e.kind === "commit").map((e) => [e.hash, e.epoch] as const));
    const timed = logOps(ops, finalCommits, stats);
    const result = checkLinearizable(timed, commitLogModel);
    stats.linearizabilitySteps += result.steps;
    if (result.verdict === "unknown") stats.linearizabilityUndecided++;
    if (result.verdict !== "violation") continue;
    const byId = new Map(ops.map((o) => [o.id, o]));
    out.push({
      check: "linearizable",
      channel,
      message: `the commits, conflicts and reads of ${channel} fit no single ordered log: ${result.longestPrefix.length} of ${timed.length} operations linearize at most`,
      context: { lastLinearized: result.longestPrefix.slice(-4).map((id) => byId.get(id)), stuckOn: result.stuckOn.map((id) => byId.get(id)) },
    });
  }
}

/** Runs every check on `history`. */
export function checkHistory(history: RunHistory): CheckResult {
  const violations: Violation[] = [];
  const stats: CheckStats = { channels: 0, acknowledgedCommits: 0, acknowledgedMessages: 0, unknownCommitsApplied: 0, linearizabilitySteps: 0, linearizabilityUndecided: 0, deliveredItems: 0 };
  stats.channels = new Set(history.ops.map((o) => o.channel)).size;
  checkOneCommitPerEpoch(history, violations);
  checkAgreement(history, violations);
  checkDurable(history, violations, stats);
  checkLinearizableChannels(history, violations, stats);
  const delivery = checkDelivery(history.deliveries, referenceLogs(history), history.ops, history.sentTexts);
  violations.push(...delivery.violations);
  stats.deliveredItems = delivery.deliveredItems;
  return { violations, stats };
}
