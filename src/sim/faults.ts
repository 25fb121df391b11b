/**
 * Fault kinds and fault schedules. A schedule is a list of {@link FaultEvent}s:
 * at a tick, a kind starts, and (for lasting faults) ends `durationTicks`
 * later. Each event carries two numbers `a` and `b` in [0, 1) that the kind
 * turns into concrete choices (how strong, which node) only when it starts,
 * so any schedule is valid for any cluster, and a schedule shrinks well in
 * property tests (smaller numbers, fewer events).
 *
 * Adding a fault kind = one name in {@link faultKinds} and one entry in
 * {@link faultSpecs}.
 */
import { ConfChangeType, type ConfChange, type ConfState, type NodeId } from "../raft/types.ts";
import { splitLinks, type Network } from "./network.ts";
import type { Prng } from "./prng.ts";

/** Every fault kind, in the order `--faults all` lists them. */
export const faultKinds = ["drop", "dup", "reorder", "partition", "crash", "pause", "membership", "transfer"] as const;

/** The name of one fault kind. */
export type FaultKind = (typeof faultKinds)[number];

/** One scheduled fault. */
export interface FaultEvent {
  readonly atTick: number;
  readonly kind: FaultKind;
  /** How long a lasting fault (drop, dup, reorder, partition, crash, pause) lasts. */
  readonly durationTicks: number;
  /** Kind-specific choice in [0, 1): strength or variant. */
  readonly a: number;
  /** Kind-specific choice in [0, 1): usually which node. */
  readonly b: number;
}

/** What a fault may do to the simulated cluster. The simulator implements it. */
export interface FaultContext {
  readonly rng: Prng;
  readonly network: Network;
  /** Number of nodes the cluster started with. */
  readonly initialNodes: number;
  /** Nodes up (not crashed, not retired), in slot order. Paused nodes count as up. */
  upNodes(): NodeId[];
  slotOf(node: NodeId): number;
  /** The running leader with the highest term, if any. */
  leader(): NodeId | null;
  /** The leader's membership, if there is a leader. */
  leaderConfState(): ConfState | null;
  crashedCount(): number;
  pausedCount(): number;
  isPaused(node: NodeId): boolean;
  crash(node: NodeId): void;
  /** Restarts a crashed node from its durable state; no-op otherwise. */
  restart(node: NodeId): void;
  /** Whether a crash may also lose the node's disk (the `lostDisks` knob). */
  readonly disksMayBeLost: boolean;
  /** Loses a crashed node's disk before its restart, unless another node has not yet recovered from losing its own. */
  loseDisk(node: NodeId): void;
  /** Whether a node that lost its disk has not yet recovered (votes again and applied what was committed when it lost it). */
  diskRecovering(): boolean;
  pause(node: NodeId): void;
  /** Ends a pause; no-op if not paused. */
  resume(node: NodeId): void;
  /** Proposes a membership change on the leader (ignored if there is none or it refuses). */
  proposeConfChange(change: ConfChange): void;
  /** A running node outside the configuration that may join: an earlier unused one or a new empty one. */
  joinableNode(): NodeId | null;
  /** Whether `node`'s disk holds no entry at all (it never received the group's log). */
  holdsNothing(node: NodeId): boolean;
  transferLeadership(to: NodeId): void;
  /** Runs `action` once, when the next leader is elected (before its first Ready is handled). */
  onNextLeader(action: (leader: NodeId) => void): void;
}

/** How to start one fault kind. Returns the action that ends it, or null when it is instantaneous. */
export interface FaultSpec {
  start(ctx: FaultContext, event: FaultEvent): (() => void) | null;
}

function pickBy<T>(items: readonly T[], x: number): T | undefined {
  return items[Math.min(items.length - 1, Math.floor(x * items.length))];
}

/** A node chosen by `b`, or the leader when `preferLeader` (a frequent, interesting target). */
function target(ctx: FaultContext, b: number, preferLeader: boolean): NodeId | undefined {
  const leader = ctx.leader();
  if (preferLeader && leader !== null) return leader;
  return pickBy(ctx.upNodes(), b);
}

/**
 * Nodes that may be down (crashed, or paused) at once: a minority of the
 * initial voters, so the cluster can stay available. A run that starts with
 * one voter may lose it: what a lone voter acknowledged must survive a restart
 * from its own disk alone (membership faults may have added nodes by then).
 */
function maxDown(ctx: FaultContext): number {
  return ctx.initialNodes === 1 ? 1 : Math.floor((ctx.initialNodes - 1) / 2);
}

/** Isolates `nodes` from every other up node in both directions; returns the partition's handle. */
function isolate(ctx: FaultContext, nodes: readonly number[]): number {
  const others = ctx.upNodes().map((id) => ctx.slotOf(id)).filter((s) => !nodes.includes(s));
  return ctx.network.addPartition(splitLinks(nodes, others));
}

/**
 * Partitions, by variant (`a` in fifths): a random minority cut off; the
 * leader's minority cut off; one node that cannot send; one node that cannot
 * receive; the next leader cut off the moment it is elected, so it keeps
 * entries of its term nobody else has (the raw material of the Raft paper's
 * figure 8).
 */
function partition(ctx: FaultContext, event: FaultEvent): () => void {
  const up = ctx.upNodes();
  const slots = up.map((id) => ctx.slotOf(id));
  const variant = Math.floor(event.a * 5);
  if (variant === 4) {
    let handle = -1;
    let armed = true;
    ctx.onNextLeader((leader) => {
      if (armed) handle = isolate(ctx, [ctx.slotOf(leader)]);
    });
    return () => {
      armed = false;
      ctx.network.removePartition(handle);
    };
  }
  let links: [number, number][];
  if (variant <= 1) {
    const size = 1 + ctx.rng.int(Math.max(1, Math.floor(up.length / 2)));
    const shuffled = ctx.rng.shuffle([...slots]);
    const leader = ctx.leader();
    if (variant === 1 && leader !== null) shuffled.unshift(...shuffled.splice(shuffled.indexOf(ctx.slotOf(leader)), 1));
    links = splitLinks(shuffled.slice(0, size), shuffled.slice(size));
  } else {
    const node = ctx.slotOf(target(ctx, event.b, event.b < 0.3) ?? up[0]!);
    const others = slots.filter((s) => s !== node);
    links = others.map((o) => (variant === 2 ? [node, o] : [o, node]));
  }
  const handle = ctx.network.addPartition(links);
  return () => ctx.network.removePartition(handle);
}

function crash(ctx: FaultContext, event: FaultEvent): (() => void) | null {
  if (ctx.crashedCount() >= maxDown(ctx)) return null;
  const node = target(ctx, event.b, event.a < 0.3);
  if (node === undefined) return null;
  ctx.crash(node);
  // With lost disks on, about every other crash also loses the disk (a bit of `a` the leader preference does not read).
  const losesDisk = ctx.disksMayBeLost && Math.floor(event.a * 1024) % 2 === 1;
  return () => {
    if (losesDisk) ctx.loseDisk(node);
    ctx.restart(node);
  };
}

function pause(ctx: FaultContext, event: FaultEvent): (() => void) | null {
  if (ctx.pausedCount() >= maxDown(ctx)) return null;
  const node = target(ctx, event.b, event.a < 0.3);
  if (node === undefined || ctx.isPaused(node)) return null;
  ctx.pause(node);
  return () => ctx.resume(node);
}

/** Membership changes through the leader: remove, demote, promote, joint swap, add a learner. */
function membership(ctx: FaultContext, event: FaultEvent): null {
  const conf = ctx.leaderConfState();
  if (conf === null || conf.votersOutgoing.length > 0) return null;
  // A node recovering from a lost disk and a fresh one made voter could be a majority without data.
  if (ctx.diskRecovering()) return null;
  const minVoters = Math.min(3, ctx.initialNodes);
  const voter = pickBy(conf.voters, event.b);
  const learner = pickBy(conf.learners, event.b);
  const step = (type: ConfChangeType, nodeId: NodeId): ConfChange => ({ steps: [{ type, nodeId }], leaveJoint: false });
  const variant = Math.floor(event.a * 5);
  // Never two voters that hold nothing: they know no membership, so they vote for nobody, and only a
  // leader could send them the log (seed 4261 with lost disks: two fresh nodes swapped in, neither
  // reached, and no leader could be elected for good). The runtime makes a voter only of a caught-up learner.
  const emptyVoter = conf.voters.some((id) => ctx.holdsNothing(id));
  const mayMakeVoter = (id: NodeId): boolean => !emptyVoter || !ctx.holdsNothing(id);
  if (variant === 0 && voter !== undefined && conf.voters.length > minVoters) {
    ctx.proposeConfChange(step(ConfChangeType.RemoveNode, voter));
  } else if (variant === 1 && voter !== undefined && conf.voters.length > minVoters) {
    ctx.proposeConfChange(step(ConfChangeType.AddLearner, voter)); // demote
  } else if (variant === 2 && learner !== undefined) {
    if (mayMakeVoter(learner)) ctx.proposeConfChange(step(ConfChangeType.AddVoter, learner)); // promote
  } else if (variant === 3 && voter !== undefined) {
    // Joint consensus: a learner (or a fresh node) becomes a voter and a voter leaves, in one change.
    const incoming = learner ?? ctx.joinableNode();
    if (incoming === null || !mayMakeVoter(incoming)) return null;
    ctx.proposeConfChange({
      steps: [
        { type: ConfChangeType.AddVoter, nodeId: incoming },
        { type: ConfChangeType.RemoveNode, nodeId: voter },
      ],
      leaveJoint: false,
    });
  } else {
    const fresh = ctx.joinableNode();
    if (fresh !== null) ctx.proposeConfChange(step(ConfChangeType.AddLearner, fresh));
  }
  return null;
}

function transfer(ctx: FaultContext, event: FaultEvent): null {
  const conf = ctx.leaderConfState();
  const leader = ctx.leader();
  if (conf === null || leader === null) return null;
  const to = pickBy(
    conf.voters.filter((v) => v !== leader),
    event.b,
  );
  if (to !== undefined) ctx.transferLeadership(to);
  return null;
}

/** Every fault kind's behaviour. */
export const faultSpecs: Readonly<Record<FaultKind, FaultSpec>> = {
  drop: {
    start(ctx, e) {
      const handle = ctx.network.addImpairment({ dropRate: 0.05 + 0.45 * e.a, duplicateRate: 0, reorderJitterMs: 0 });
      return () => ctx.network.removeImpairment(handle);
    },
  },
  dup: {
    start(ctx, e) {
      const handle = ctx.network.addImpairment({ dropRate: 0, duplicateRate: 0.05 + 0.45 * e.a, reorderJitterMs: 0 });
      return () => ctx.network.removeImpairment(handle);
    },
  },
  reorder: {
    start(ctx, e) {
      const handle = ctx.network.addImpairment({ dropRate: 0, duplicateRate: 0, reorderJitterMs: 5 + 150 * e.a });
      return () => ctx.network.removeImpairment(handle);
    },
  },
  partition: { start: partition },
  crash: { start: crash },
  pause: { start: pause },
  membership: { start: membership },
  transfer: { start: transfer },
};

/** Parses a `--faults` list ("all", "none" or comma-separated kinds); throws on an unknown kind. */
export function parseFaultKinds(text: string): Set<FaultKind> {
  if (text === "all") return new Set(faultKinds);
  if (text === "none" || text === "") return new Set();
  const kinds = new Set<FaultKind>();
  for (const name of text.split(",")) {
    const kind = faultKinds.find((k) => k === name.trim());
    if (kind === undefined) throw new RangeError(`unknown fault kind "${name}" (known: ${faultKinds.join(", ")}, all)`);
    kinds.add(kind);
  }
  return kinds;
}

/** Schedule knobs. */
export interface ScheduleOptions {
  readonly steps: number;
  readonly faultChancePerTick: number;
  readonly maxFaultTicks: number;
}

/** Draws a fault schedule from `rng`: at each tick, with some chance, one fault of an enabled kind. */
export function drawSchedule(rng: Prng, kinds: ReadonlySet<FaultKind>, options: ScheduleOptions): FaultEvent[] {
  const enabled = faultKinds.filter((k) => kinds.has(k));
  const events: FaultEvent[] = [];
  if (enabled.length === 0) return events;
  for (let tick = 0; tick < options.steps; tick++) {
    if (!rng.chance(options.faultChancePerTick)) continue;
    const kind = rng.pick(enabled);
    const durationTicks = rng.range(5, options.maxFaultTicks);
    events.push({ atTick: tick, kind, durationTicks, a: rng.float(), b: rng.float() });
  }
  return events;
}
