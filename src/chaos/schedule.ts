/**
 * The fault schedule of a chaos run, drawn from a seed: the same seed, kinds and timing options give the
 * same list of faults (kinds, start times, durations, targets and parameters). Targets are roles
 * ("leader", "follower") or homeserver ids; roles are resolved when the fault starts, and the report
 * records which homeserver it hit.
 */
import { Prng } from "../sim/prng.ts";

/** Every fault kind the harness can inject. */
export const chaosFaultKinds = ["kill", "pause", "partition", "delay", "fsync-slow", "fsync-stall", "clock-jump"] as const;
/** One fault kind. */
export type ChaosFaultKind = (typeof chaosFaultKinds)[number];

/** Who a fault hits: the current leader of the cluster group, any follower, or a named homeserver. */
export type FaultTarget = "leader" | "follower" | `hs${number}`;

/** One scheduled fault. */
export interface ScheduledFault {
  readonly index: number;
  readonly kind: ChaosFaultKind;
  readonly atMs: number;
  readonly durationMs: number;
  readonly target: FaultTarget;
  /**
   * partition: "isolate" (target cut from all), "one-way" (target's outgoing bytes held), "pair" (target
   * and one other, named by `peer`); delay: milliseconds per direction; fsync-*: milliseconds per synced
   * write; clock-jump: milliseconds added to the target's wall clock (negative: backwards).
   */
  readonly mode?: "isolate" | "one-way" | "pair";
  readonly peer?: FaultTarget;
  readonly amountMs?: number;
}

/** Options that shape a schedule. */
export interface ScheduleOptions {
  readonly seed: number;
  readonly nodes: number;
  readonly kinds: readonly ChaosFaultKind[];
  /** Faults start no earlier than this and end before `faultsEndMs`. */
  readonly faultsStartMs: number;
  readonly faultsEndMs: number;
  /** Quiet time between the end of one fault and the start of the next, drawn in [min, max]. */
  readonly gapMsMin: number;
  readonly gapMsMax: number;
  /** Fault duration, drawn in [min, max]. */
  readonly durationMsMin: number;
  readonly durationMsMax: number;
}

function drawTarget(prng: Prng, nodes: number): FaultTarget {
  const roll = prng.int(3);
  if (roll === 0) return "leader";
  if (roll === 1) return "follower";
  return `hs${1 + prng.int(nodes)}`;
}

function drawParameters(prng: Prng, kind: ChaosFaultKind, nodes: number): Pick<ScheduledFault, "mode" | "peer" | "amountMs"> {
  switch (kind) {
    case "partition": {
      const mode = prng.pick(["isolate", "isolate", "one-way", "pair"] as const);
      return mode === "pair" ? { mode, peer: prng.chance(0.5) ? "leader" : `hs${1 + prng.int(nodes)}` } : { mode };
    }
    case "delay":
      return { amountMs: prng.range(20, 300) };
    case "fsync-slow":
      return { amountMs: prng.range(20, 200) };
    case "fsync-stall":
      return { amountMs: prng.range(2_000, 5_000) };
    case "clock-jump":
      return { amountMs: (prng.chance(0.5) ? 1 : -1) * prng.range(5_000, 120_000) };
    default:
      return {};
  }
}

/**
 * Draws the faults: one at a time, separated by quiet gaps, kinds cycled through a seeded shuffle so that
 * every kind appears as soon as the run is long enough for all of them.
 */
export function drawSchedule(options: ScheduleOptions): ScheduledFault[] {
  if (options.kinds.length === 0) return [];
  const prng = new Prng(options.seed, 7);
  const faults: ScheduledFault[] = [];
  let at = options.faultsStartMs;
  let deck: ChaosFaultKind[] = [];
  for (let index = 0; index < 10_000; index++) {
    if (deck.length === 0) deck = prng.shuffle([...options.kinds]);
    const kind = deck.pop()!;
    const durationMs = prng.range(options.durationMsMin, options.durationMsMax);
    if (at + durationMs > options.faultsEndMs) break;
    faults.push({ index, kind, atMs: at, durationMs, target: drawTarget(prng, options.nodes), ...drawParameters(prng, kind, options.nodes) });
    at += durationMs + prng.range(options.gapMsMin, options.gapMsMax);
  }
  return faults;
}
