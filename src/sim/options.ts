/**
 * The simulator's options and knobs. A run is fully determined by its
 * options; knobs left out are drawn from the seed, so consecutive seeds also
 * explore different configurations (PreVote on or off, tiny messages, one
 * Append in flight, aggressive compaction, ...).
 */
import type { FaultEvent, FaultKind } from "./faults.ts";
import type { InvariantFactory } from "./invariants.ts";
import { Prng } from "./prng.ts";

/** Tunable parameters of a run. Times are virtual milliseconds; a tick is `tickMs`. */
export interface SimKnobs {
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatTicks: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly maxMessageBytes: number;
  readonly maxInflightMessages: number;
  readonly maxUncommittedBytes: number;
  readonly latencyMinMs: number;
  readonly latencyMaxMs: number;
  readonly fsyncMinMs: number;
  readonly fsyncMaxMs: number;
  readonly clients: number;
  readonly proposalChancePerTick: number;
  readonly clientPipeline: number;
  readonly payloadBytes: number;
  readonly ackTimeoutTicks: number;
  readonly snapshotIntervalEntries: number;
  readonly compactKeepEntries: number;
  /** Chance per tick of the fault phase that a new fault starts (drawn schedules only). */
  readonly faultChancePerTick: number;
  readonly maxFaultTicks: number;
  /** Ticks the healed cluster gets to elect a leader and commit and apply a fresh entry everywhere. */
  readonly livenessTicks: number;
  /** Nodes beyond the initial ones that membership changes may add. */
  readonly spareNodes: number;
  /** Events kept for a violation's trace. */
  readonly traceEvents: number;
  /**
   * Runs like the multi-group runtime: cores quiesce when idle, clients
   * propose in bursts (so the group does go idle), and a node learns that a
   * peer is lost (crashed, cut off, or frozen past a keepalive) as a broken
   * peer stream would tell it, calling `reportUnreachable` and `forgetLeader`.
   */
  readonly quiesce: boolean;
  /** Followers learn a new commit index with the next Append or at the next tick (RaftConfig.lazyCommitNotices). */
  readonly lazyCommitNotices: boolean;
  /** Ticks before a node notices a peer's stream broke (crash, partition); frozen peers take 5 times longer. */
  readonly peerLossDetectTicks: number;
  /**
   * With `quiesce`: a node quiet this many ticks is unloaded and its core
   * rebuilt from its disk in its quiet role (`RaftConfig.resume`), as the
   * runtime's hibernation does; 0 never.
   */
  readonly hibernateAfterTicks: number;
  /**
   * A leader's snapshot is restored this many fsync delays after it is stored
   * (0: at once), as the runtime restores off its Ready loop: meanwhile the
   * node stores, votes and answers but applies nothing and starts no election.
   */
  readonly restoreFsyncDelays: number;
  /**
   * About every other crash also loses the node's disk: it restarts as at its
   * first start (at most one node without its data at a time, the promise's
   * "a majority keep their disks"). Off unless given, so the runs of older
   * seeds do not move.
   */
  readonly lostDisks: boolean;
  /**
   * An initial voter that lost its disk holds its votes until the other
   * initial voters' commit indexes say it may vote (src/node/bootstrap-check.ts),
   * as the runtime's cluster group does. Off: the hazard that check closes.
   */
  readonly bootstrapCheck: boolean;
}

/** Everything that defines a run. */
export interface SimOptions {
  readonly seed: number;
  /** Initial voters (1 to 9). */
  readonly nodes: number;
  /** Ticks of the fault phase (a step is one tick of the whole cluster: every node ticks once). */
  readonly steps: number;
  /** Fault kinds drawn into the schedule; ignored when `schedule` is given. */
  readonly faults: ReadonlySet<FaultKind>;
  /** An explicit fault schedule (property tests generate these); otherwise one is drawn from the seed. */
  readonly schedule?: readonly FaultEvent[];
  readonly knobs?: Partial<SimKnobs>;
  /** Extra invariants checked besides the default ones, by name. */
  readonly extraInvariants?: Readonly<Record<string, InvariantFactory>>;
  /** Stop at the first violation (default true): later ones are usually its consequences. */
  readonly stopOnViolation?: boolean;
}

/** Independent random streams of a run, so changing one part (e.g. the schedule) does not shift the others. */
export const streams = { knobs: 1, network: 2, schedule: 3, faults: 4, workload: 5, fsync: 6, nodes: 100 } as const;

/** The knobs of a run: the given ones, the rest drawn from the seed. */
export function resolveKnobs(seed: number, given: Partial<SimKnobs> = {}): SimKnobs {
  const rng = new Prng(seed, streams.knobs);
  const drawn: SimKnobs = {
    tickMs: 10,
    electionTimeoutTicks: 10,
    heartbeatTicks: 1,
    preVote: rng.chance(0.7),
    checkQuorum: rng.chance(0.7),
    maxMessageBytes: rng.pick([200, 2048, 1 << 20]),
    maxInflightMessages: rng.pick([1, 4, 256]),
    maxUncommittedBytes: rng.pick([0, 4096]),
    latencyMinMs: 1,
    latencyMaxMs: rng.pick([3, 8]),
    fsyncMinMs: 0.2,
    fsyncMaxMs: rng.pick([1, 4]),
    clients: rng.range(1, 4),
    proposalChancePerTick: rng.pick([0.2, 0.5]),
    clientPipeline: rng.pick([1, 4, 16]),
    payloadBytes: rng.pick([16, 64]),
    ackTimeoutTicks: 40,
    snapshotIntervalEntries: rng.pick([4, 16, 64]),
    compactKeepEntries: rng.pick([0, 3, 20]),
    faultChancePerTick: 0.06,
    maxFaultTicks: 60,
    livenessTicks: 500,
    spareNodes: 3,
    traceEvents: 30,
    // Drawn last, so the draws above (and the runs of older seeds without quiescence) do not move.
    quiesce: rng.chance(0.4),
    peerLossDetectTicks: 2,
    // Drawn after everything else, for the same reason (each after the one before).
    hibernateAfterTicks: rng.chance(0.5) ? rng.range(1, 8) : 0,
    lazyCommitNotices: rng.chance(0.5),
    restoreFsyncDelays: rng.chance(0.5) ? rng.pick([5, 50]) : 0,
    // Not drawn: given explicitly (test/sim/lost-disk.test.ts, `--lost-disks`).
    lostDisks: false,
    bootstrapCheck: true,
  };
  return { ...drawn, ...given };
}
