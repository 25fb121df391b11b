/**
 * The deterministic cluster simulator: N instances of the real Raft core in
 * virtual time, driven by one event queue ordered by (time, sequence). A run
 * has a fault phase (`steps` ticks, faults from the schedule, clients
 * proposing) and a liveness phase (everything healed: a leader must be
 * elected and a fresh proposal applied on every voter within `livenessTicks`).
 * Invariants are checked as events happen; the first violation stops the run.
 */
import { defaultRaftConfig, type ProposalResult, type RaftEvent, type RawNode } from "../raft/raw-node.ts";
import { MessageType, Role, type ConfChange, type ConfState, type Entry, type LogIndex, type Message, type NodeId } from "../raft/types.ts";
import { EventQueue } from "./event-queue.ts";
import { drawSchedule, faultSpecs, type FaultContext, type FaultEvent } from "./faults.ts";
import { defaultInvariants, InvariantSet, type ClusterView } from "./invariants.ts";
import { Network } from "./network.ts";
import { resolveKnobs, streams, type SimKnobs, type SimOptions } from "./options.ts";
import { Prng } from "./prng.ts";
import { SimDisk } from "./sim-disk.ts";
import { SimNode, type NodeHost } from "./sim-node.ts";
import { bootstrapAnswerOf, BootstrapProgress } from "../node/bootstrap-check.ts";
import { TraceRing, type TraceDetail } from "./trace.ts";
import { Workload } from "./workload.ts";

/** One broken invariant, with what is needed to reproduce and understand it. */
export interface Violation {
  readonly seed: number;
  readonly invariant: string;
  readonly message: string;
  /** Virtual time of the violation. */
  readonly atMs: number;
  /** The last events before it, oldest first. */
  readonly trace: readonly string[];
}

/** The outcome of one run. */
export interface SimResult {
  readonly seed: number;
  readonly nodes: number;
  /** Ticks of the fault phase that ran. */
  readonly steps: number;
  /** All ticks, including the liveness phase. */
  readonly ticks: number;
  /** Core `tick()` calls summed over nodes. */
  readonly nodeTicks: number;
  /** Node ticks skipped because the node's group was quiet (0 unless the `quiesce` knob is on). */
  readonly quiescedTicks: number;
  /** Times a quiet node's core was unloaded and rebuilt from disk in its quiet role (the `hibernateAfterTicks` knob). */
  readonly hibernations: number;
  /** Leader's snapshots restored after a while (the `restoreFsyncDelays` knob), the node applying nothing meanwhile. */
  readonly restoresTakenUp: number;
  /** Restarts with a lost disk (the `lostDisks` knob). */
  readonly disksLost: number;
  readonly elections: number;
  /** Highest log index any node applied. */
  readonly commits: number;
  readonly proposals: number;
  /** Client proposals acknowledged as committed. */
  readonly acked: number;
  readonly faults: number;
  /** Snapshots followers installed from a leader. */
  readonly snapshotsInstalled: number;
  readonly messages: number;
  readonly events: number;
  /** Ticks the healed cluster needed to pass the liveness check (-1 if it did not). */
  readonly recoveryTicks: number;
  readonly violations: readonly Violation[];
  readonly knobs: SimKnobs;
}

const groupId = "sim";
const probePrefix = "probe#";

/** Runs one simulation to completion and returns its result. */
export function runSimulation(options: SimOptions): SimResult {
  return new Simulator(options).run();
}

/** The simulator. Use {@link runSimulation}; the class is exported for tests that poke at one run. */
export class Simulator implements NodeHost, FaultContext {
  nowMs = 0;
  readonly knobs: SimKnobs;
  readonly rng: Prng;
  readonly network: Network;
  readonly invariants: InvariantSet;
  readonly cluster: ClusterView;
  readonly initialNodes: number;
  readonly nodes: SimNode[] = [];
  private readonly byId = new Map<NodeId, SimNode>();
  private readonly queue = new EventQueue();
  private readonly trace_: TraceRing;
  private readonly fsyncRng: Prng;
  private readonly workload: Workload;
  private readonly violations: Violation[] = [];
  private readonly activeFaults = new Set<() => void>();
  private readonly faultSchedule: readonly FaultEvent[];
  private tickCount = 0;
  private phase: "setup" | "faults" | "liveness" | "done" = "setup";
  private elections = 0;
  private commits = 0;
  private faultsStarted = 0;
  private snapshotsInstalled = 0;
  private events = 0;
  private probe: { data: Uint8Array; sinceTick: number; appliedBy: Set<NodeId> } | null = null;
  private probeSeq = 0;
  private recoveryTicks = -1;
  private nextLeaderActions: ((leader: NodeId) => void)[] = [];
  private readonly initialVoters: readonly NodeId[];
  /** Nodes that lost their disk and have not yet applied what was committed when they did: the commit index to reach. */
  private readonly recoveringDisks = new Map<NodeId, LogIndex>();
  /**
   * Bootstrap checks of initial voters that lost their disk. The check
   * survives a crash (the runtime's file); its answers and verdict do not.
   */
  private readonly bootstrapChecks = new Map<NodeId, { incarnation: number; progress?: BootstrapProgress }>();

  constructor(readonly options: SimOptions) {
    if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > 9) {
      throw new RangeError(`nodes must be an integer in [1, 9], got ${options.nodes}`);
    }
    if (!Number.isInteger(options.steps) || options.steps < 0) throw new RangeError(`steps must be a non-negative integer`);
    const seed = options.seed;
    this.knobs = resolveKnobs(seed, options.knobs);
    this.initialNodes = options.nodes;
    this.rng = new Prng(seed, streams.faults);
    this.fsyncRng = new Prng(seed, streams.fsync);
    this.network = new Network(new Prng(seed, streams.network), this.knobs, options.nodes + this.knobs.spareNodes);
    this.trace_ = new TraceRing(this.knobs.traceEvents);
    const invariants = { ...defaultInvariants, ...options.extraInvariants };
    this.invariants = new InvariantSet(invariants, (name, message) => this.violate(name, message));
    this.cluster = {
      nodes: () => this.nodes.filter((n) => !n.retired).map((n) => n.id),
      campaignConfsOf: (id) => this.byId.get(id)?.campaignConfs() ?? [],
      lastOf: (id) => {
        const n = this.byId.get(id);
        return n === undefined || n.retired ? undefined : n.disk.durableLast();
      },
      hardStateOf: (id) => this.byId.get(id)?.disk.durableHardState(),
      // A leader may count an acknowledgement sent before its sender lost its disk, as no protocol can
      // prevent; commit-durability counts such a node as holding the entry (durability and
      // leader-completeness still check nothing is lost).
      votesHeld: (id) => this.byId.get(id)?.votesHeld ?? false,
      recoveringDisk: (id) => this.recoveringDisks.has(id),
      holds: (id, index, term) => this.recoveringDisks.has(id) || (this.byId.get(id)?.disk.durableHolds(index, term) ?? false),
    };
    this.faultSchedule =
      options.schedule ??
      drawSchedule(new Prng(seed, streams.schedule), options.faults, { ...this.knobs, steps: options.steps });
    if (this.knobs.quiesce) this.network.onPartition = (links) => this.streamsBroken(links);
    const voters = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    this.initialVoters = voters;
    for (const id of voters) this.addNode(new SimDisk(voters), true);
    this.workload = new Workload(new Prng(seed, streams.workload), this.knobs, {
      nodeIds: () => this.liveIds(voters),
      propose: (node, data, done) => this.proposeOn(node, data, done),
      acked: (node, entry) => this.invariants.clientAcked(node, entry),
    });
  }

  // ---- NodeHost ---------------------------------------------------------------------------------

  schedule(atMs: number, fire: () => void): void {
    this.queue.push(atMs, fire);
  }

  fsyncDelayMs(): number {
    const { fsyncMinMs, fsyncMaxMs } = this.knobs;
    return fsyncMinMs + this.fsyncRng.float() * (fsyncMaxMs - fsyncMinMs);
  }

  trace(node: NodeId, what: string, detail?: TraceDetail): void {
    this.trace_.record(this.nowMs, node, what, detail);
  }

  fail(node: SimNode, error: unknown): void {
    const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    this.violate("core-error", `${node.id} threw ${text}`);
  }

  send(from: SimNode, messages: readonly Message[]): void {
    for (const m of messages) {
      this.invariants.messageSent(m);
      const to = this.byId.get(m.to);
      if (to === undefined) continue;
      const copies = this.network.route(from.slot, to.slot, this.nowMs);
      if (copies === 0 && m.type === MessageType.Snapshot) this.reportSnapshot(from, m.to, false);
      const incarnation = from.incarnation;
      for (let i = 0; i < copies; i++) this.queue.push(this.network.arrivals[i]!, () => this.deliver(from, to, m, incarnation));
    }
  }

  private deliver(from: SimNode, to: SimNode, m: Message, senderIncarnation: number): void {
    // A stream the receiver knows broke (its sender crashed) delivers nothing more of what was sent on it.
    const closed = (to.streamsClosed.get(from.id) ?? -1) >= senderIncarnation;
    const ok = to.up && !closed && !this.network.isBlocked(from.slot, to.slot);
    if (m.type === MessageType.Snapshot) this.reportSnapshot(from, m.to, ok);
    if (!ok) return;
    this.trace_.record(this.nowMs, to.id, to.paused ? "recv(p)" : "recv", m);
    to.input({ kind: "message", message: m });
  }

  private reportSnapshot(from: SimNode, to: NodeId, ok: boolean): void {
    const incarnation = from.incarnation;
    this.queue.push(this.nowMs + this.knobs.latencyMinMs, () => {
      if (from.incarnation === incarnation) from.input({ kind: "call", run: (raw) => raw.reportSnapshot(to, ok) });
    });
  }

  applied(node: SimNode, entry: Entry): void {
    if (entry.index > this.commits) this.commits = entry.index;
    this.workload.applied(node.id, entry);
    const probe = this.probe;
    if (probe !== null && entry.data.length === probe.data.length && sameBytes(entry.data, probe.data)) {
      probe.appliedBy.add(node.id);
    }
  }

  coreEvent(node: SimNode, event: RaftEvent): void {
    if (event.kind === "became-leader") {
      this.elections++;
      this.trace(node.id, "leader", `term ${event.term}`);
      const actions = this.nextLeaderActions;
      this.nextLeaderActions = [];
      for (const action of actions) action(node.id);
    } else if (event.kind === "conf-change-applied") {
      this.membershipApplied(node, event.confState, event.index);
    } else if (event.kind === "snapshot-restored") {
      this.snapshotsInstalled++;
      this.trace(node.id, "snap-in", `${event.index}@${event.term}`);
      node.confKnownIndex = Math.max(node.confKnownIndex, event.index);
      this.retireRemoved();
    }
  }

  /**
   * Tracks membership: when each node joined, which configuration index each
   * node knows, and removals. A removed node is stopped for good once every
   * voter of the configuration that removed it has applied that configuration
   * (or a later one): stopping it earlier could leave a voter that still
   * needs its vote, as a real deployment would not. Every node applies the
   * same configurations in log order, so indexes order them.
   */
  private membershipApplied(node: SimNode, conf: ConfState, index: number): void {
    node.confKnownIndex = Math.max(node.confKnownIndex, index);
    const members = new Set([...conf.voters, ...conf.votersOutgoing, ...conf.learners, ...conf.learnersNext]);
    for (const id of members) {
      const member = this.byId.get(id);
      if (member !== undefined && index < member.joinedAtIndex) member.joinedAtIndex = index;
    }
    for (const n of this.nodes) {
      if (!members.has(n.id) && index > n.joinedAtIndex && n.removal === null) n.removal = { index, conf };
    }
    this.retireRemoved();
  }

  private retireRemoved(): void {
    for (const n of this.nodes) {
      const removal = n.removal;
      if (n.retired || removal === null) continue;
      const voters = [...removal.conf.voters, ...removal.conf.votersOutgoing];
      if (voters.every((v) => (this.byId.get(v)?.confKnownIndex ?? 0) >= removal.index)) {
        this.trace(n.id, "retire", `removed by the configuration at ${removal.index}`);
        n.retire();
      }
    }
  }

  private violate(invariant: string, message: string): void {
    const limit = (this.options.stopOnViolation ?? true) ? 1 : 10;
    if (this.violations.length >= limit) return;
    const trace = this.trace_.format();
    this.violations.push({ seed: this.options.seed, invariant, message, atMs: this.nowMs, trace });
  }

  // ---- nodes ------------------------------------------------------------------------------------

  private addNode(disk: SimDisk, joined: boolean): SimNode {
    const slot = this.nodes.length;
    const id = `n${slot + 1}`;
    const random = new Prng(this.options.seed, streams.nodes + slot).asFunction();
    const k = this.knobs;
    const node = new SimNode(id, slot, disk, this, { ...k, inboxMax: 4096 }, (storage, applied, onEvent) => ({
      ...defaultRaftConfig(id, groupId, storage, random),
      electionTimeoutTicks: k.electionTimeoutTicks,
      heartbeatTicks: k.heartbeatTicks,
      preVote: k.preVote,
      checkQuorum: k.checkQuorum,
      maxMessageBytes: k.maxMessageBytes,
      maxInflightMessages: k.maxInflightMessages,
      maxUncommittedBytes: k.maxUncommittedBytes,
      quiesce: k.quiesce,
      lazyCommitNotices: k.lazyCommitNotices,
      applied,
      onEvent,
    }));
    if (joined) node.joinedAtIndex = 0;
    this.nodes.push(node);
    this.byId.set(id, node);
    if (this.phase !== "setup") node.start();
    return node;
  }

  private proposeOn(id: NodeId, data: Uint8Array, done: (result: ProposalResult | null) => void): void {
    const node = this.byId.get(id);
    if (node === undefined || !node.up) {
      done(null);
      return;
    }
    node.input({ kind: "call", run: (raw) => done(raw.propose(data)) });
  }

  private sendToLeader(what: string, action: (raw: RawNode) => void): void {
    const id = this.leader();
    if (id === null) return;
    this.trace(id, "fault", what);
    this.byId.get(id)!.input({ kind: "call", run: action });
  }

  /** Ids of the nodes not retired (clients know the membership), or `fallback` if none is left. */
  private liveIds(fallback: readonly NodeId[]): readonly NodeId[] {
    const ids = this.nodes.filter((n) => !n.retired).map((n) => n.id);
    return ids.length > 0 ? ids : fallback;
  }

  // ---- FaultContext -----------------------------------------------------------------------------

  upNodes(): NodeId[] {
    return this.nodes.filter((n) => n.up).map((n) => n.id);
  }

  slotOf(node: NodeId): number {
    return this.byId.get(node)!.slot;
  }

  leader(): NodeId | null {
    let best: SimNode | null = null;
    for (const n of this.nodes) {
      if (n.up && n.role === Role.Leader && (best === null || n.term > best.term)) best = n;
    }
    return best?.id ?? null;
  }

  leaderConfState(): ConfState | null {
    const id = this.leader();
    return id === null ? null : this.byId.get(id)!.raw!.confState();
  }

  crashedCount(): number {
    return this.nodes.filter((n) => !n.up && !n.retired).length;
  }

  pausedCount(): number {
    return this.nodes.filter((n) => n.paused).length;
  }

  isPaused(node: NodeId): boolean {
    return this.byId.get(node)?.paused ?? false;
  }

  crash(node: NodeId): void {
    const n = this.byId.get(node);
    if (n === undefined || !n.up) return;
    this.trace(node, "crash", `${n.disk.pendingWrites()} unsynced writes lost`);
    n.crash();
    // A check not finished runs again from the start (the runtime's file): deaf until the term is learned again.
    if (this.bootstrapChecks.has(node)) n.awaitTermOnStart();
    if (this.knobs.quiesce) {
      const crashed = n.incarnation - 1;
      for (const other of this.nodes) if (other !== n) this.peerLost(other, n, this.knobs.peerLossDetectTicks, crashed);
    }
  }

  /** Partition started: the sending side of every cut link sees its stream to the receiver break. */
  private streamsBroken(links: readonly (readonly [number, number])[]): void {
    for (const [from, to] of links) {
      const sender = this.nodes[from];
      const receiver = this.nodes[to];
      if (sender !== undefined && receiver !== undefined) this.peerLost(sender, receiver, this.knobs.peerLossDetectTicks);
    }
  }

  /**
   * After `delayTicks`, `node` learns that its stream to `lost` broke, as the
   * runtime's transport reports it: `reportUnreachable`, and `forgetLeader`
   * if `lost` leads its group (a quiet follower wakes and may campaign).
   * When `lost` crashed (`crashedIncarnation`), nothing it sent before
   * reaches `node` after that: the broken stream carried it, and a message
   * still in flight could otherwise bring back a dead leader (seed 1813 with
   * lost disks: the followers, quiet again, waited for it for good).
   */
  private peerLost(node: SimNode, lost: SimNode, delayTicks: number, crashedIncarnation?: number): void {
    const incarnation = node.incarnation;
    this.queue.push(this.nowMs + delayTicks * this.knobs.tickMs, () => {
      if (node.incarnation !== incarnation || !node.up) return;
      node.input({
        kind: "call",
        run: (raw) => {
          if (crashedIncarnation !== undefined) node.streamsClosed.set(lost.id, Math.max(crashedIncarnation, node.streamsClosed.get(lost.id) ?? -1));
          raw.reportUnreachable(lost.id);
          if (raw.leader() === lost.id) {
            this.trace(node.id, "peer-lost", lost.id);
            raw.forgetLeader();
          }
        },
      });
    });
  }

  restart(node: NodeId): void {
    const n = this.byId.get(node);
    if (n === undefined || n.up || n.retired) return;
    this.trace(node, "restart", `applied ${n.disk.applied().index}`);
    n.start();
  }

  diskRecovering(): boolean {
    return this.recoveringDisks.size > 0;
  }

  get disksMayBeLost(): boolean {
    return this.knobs.lostDisks;
  }

  loseDisk(node: NodeId): void {
    const n = this.byId.get(node);
    if (n === undefined || n.up || n.retired) return;
    if ([...this.recoveringDisks.keys()].some((other) => other !== node)) return;
    const committed = Math.max(0, ...this.nodes.map((other) => other.raw?.status().commit ?? other.disk.durableHardState().commit));
    // Not during a membership change: a removed node that holds the newest entries stands for no election, and
    // with this one holding its vote the configuration being left may have no quorum (a limit named in
    // docs/ARCHITECTURE.md).
    if (this.nodes.some((other) => !other.retired && (other.confState()?.votersOutgoing.length ?? 0) > 0)) return;
    // Nor before every member applied the last change (seed 96 with every fault and lost disks: n2, demoted to
    // a learner and holding the newest entries, cannot campaign; the voters that have not applied the demotion
    // still need its vote or this one's, and this one waits for a leader to catch up from).
    const memberships = new Set(this.nodes.filter((o) => !o.retired && (o.confState()?.voters.length ?? 0) > 0).map((o) => membershipKey(o.confState()!)));
    if (memberships.size > 1) return;
    // Not while a node added later is still behind (it may be a voter that never had the data): with this one
    // that could be a majority of a configuration without it. An initial voter merely behind is fine.
    if (this.nodes.some((other) => other !== n && !other.retired && !this.initialVoters.includes(other.id) && other.disk.durableLast().index < committed)) return;
    // Nodes added later stand for joined homeservers and channel-group copies, which come back empty and
    // do not learn the term (the open case in docs/ARCHITECTURE.md): only initial voters lose their disks.
    if (!this.initialVoters.includes(node)) return;
    this.trace(node, "disk-lost", `bootstrap entry; the cluster committed ${committed}`);
    n.loseDisk(this.initialVoters);
    this.recoveringDisks.set(node, committed);
    if (this.initialVoters.length > 1 && this.knobs.bootstrapCheck) {
      n.holdVotes(true);
      n.awaitTermOnStart();
      this.bootstrapChecks.set(node, { incarnation: -1 });
    }
  }

  /**
   * One round of every pending bootstrap check: each initial voter the node
   * can reach both ways answers its commit index (the runtime's notices), and
   * the node's votes are released as `bootstrapVerdict` allows.
   */
  private runBootstrapChecks(): void {
    for (const [id, check] of this.bootstrapChecks) {
      const node = this.byId.get(id)!;
      const raw = node.raw;
      if (raw === null || node.paused) continue;
      if (check.progress === undefined || check.incarnation !== node.incarnation) {
        check.incarnation = node.incarnation;
        check.progress = new BootstrapProgress(id, this.initialVoters.filter((p) => p !== id));
      }
      const progress = check.progress;
      // Everyone reachable answers at every tick (the runtime asks whom the answers name, every interval).
      for (const other of this.nodes) {
        if (other === node || other.raw === null || other.paused || this.network.isBlocked(node.slot, other.slot) || this.network.isBlocked(other.slot, node.slot)) continue;
        progress.record(other.id, bootstrapAnswerOf(other.raw.status(), () => undefined));
      }
      const { verdict, reached } = progress.advance();
      if (verdict.kind === "waiting") continue;
      if (reached) {
        this.trace(id, "term-adopted", String(verdict.term));
        node.adoptTerm(verdict.term);
      }
      // What the node's disk holds, not its memory: a crash right after the release must not undo it.
      const status = raw.status();
      if (!progress.mayVote(node.disk.durableAtOrBefore(status.commit), status)) continue;
      this.trace(id, "votes-released", verdict.kind === "ran" ? `caught up past term ${verdict.term} or with its leader` : "a new cluster");
      node.holdVotes(false);
      this.bootstrapChecks.delete(id);
    }
    // Without its data until it votes again and has applied what was committed when it lost it.
    for (const [id, target] of this.recoveringDisks) {
      const n = this.byId.get(id);
      if (n === undefined || n.retired || (n.state.index >= target && !this.bootstrapChecks.has(id))) this.recoveringDisks.delete(id);
    }
  }

  pause(node: NodeId): void {
    this.trace(node, "pause");
    const n = this.byId.get(node);
    n?.pause();
    if (n === undefined || !this.knobs.quiesce) return;
    // A frozen process keeps its connections; keepalive pings notice it, later than a crash.
    const pausedSince = this.nowMs;
    for (const other of this.nodes) {
      if (other === n) continue;
      this.queue.push(this.nowMs + 5 * this.knobs.peerLossDetectTicks * this.knobs.tickMs, () => {
        if (n.paused && n.pausedSinceMs === pausedSince) this.peerLost(other, n, 0);
      });
    }
  }

  resume(node: NodeId): void {
    const n = this.byId.get(node);
    if (n === undefined || !n.paused) return;
    this.trace(node, "resume");
    n.resume();
  }

  proposeConfChange(change: ConfChange): void {
    const text = change.steps.map((s) => `${["", "add-voter", "add-learner", "remove"][s.type]} ${s.nodeId}`).join(", ");
    this.sendToLeader(`conf change: ${text}`, (raw) => {
      const result = raw.proposeConfChange(change);
      if (!result.ok) this.trace(raw.status().id, "refused", result.reason);
    });
  }

  holdsNothing(node: NodeId): boolean {
    const n = this.byId.get(node);
    return n === undefined || n.disk.durableLast().index === 0;
  }

  joinableNode(): NodeId | null {
    const idle = this.nodes.find((n) => n.up && n.joinedAtIndex === Number.POSITIVE_INFINITY && !n.retired);
    if (idle !== undefined) return idle.id;
    if (this.nodes.length >= this.initialNodes + this.knobs.spareNodes) return null;
    return this.addNode(new SimDisk(), false).id;
  }

  transferLeadership(to: NodeId): void {
    this.sendToLeader(`transfer to ${to}`, (raw) => raw.transferLeadership(to));
  }

  onNextLeader(action: (leader: NodeId) => void): void {
    this.nextLeaderActions.push(action);
  }

  // ---- the run ----------------------------------------------------------------------------------

  /** Runs the fault phase, then the liveness phase, and returns the result. */
  run(): SimResult {
    const tickMs = this.knobs.tickMs;
    this.phase = "faults";
    for (const node of this.nodes) node.start();
    for (const event of this.faultSchedule) {
      this.queue.push((event.atTick + 0.5) * tickMs, () => this.startFault(event));
    }
    this.queue.push(tickMs, () => this.tick());
    const stopOnViolation = this.options.stopOnViolation ?? true;
    while (!this.isDone()) {
      const event = this.queue.pop();
      if (event === undefined) break;
      this.nowMs = event.atMs;
      this.events++;
      event.fire();
      if (stopOnViolation && this.violations.length > 0) break;
    }
    return this.result();
  }

  private isDone(): boolean {
    return this.phase === "done";
  }

  private startFault(event: FaultEvent): void {
    if (this.phase !== "faults") return;
    this.faultsStarted++;
    this.trace("*", "fault", `${event.kind} a=${event.a.toFixed(2)} b=${event.b.toFixed(2)} for ${event.durationTicks} ticks`);
    const end = faultSpecs[event.kind].start(this, event);
    if (end === null) return;
    this.activeFaults.add(end);
    this.queue.push(this.nowMs + event.durationTicks * this.knobs.tickMs, () => {
      if (this.activeFaults.delete(end)) end();
    });
  }

  private tick(): void {
    this.tickCount++;
    for (const node of this.nodes) node.input({ kind: "tick" });
    if (this.bootstrapChecks.size > 0 || this.recoveringDisks.size > 0) this.runBootstrapChecks();
    if (this.phase === "faults" && this.clientsBusy()) this.workload.tick(this.tickCount);
    if (this.phase === "faults" && this.tickCount >= this.options.steps) this.heal();
    else if (this.phase === "liveness") this.checkLiveness();
    if (this.phase !== "done") this.queue.push(this.nowMs + this.knobs.tickMs, () => this.tick());
  }

  /** With quiescence, clients propose in bursts (20 ticks of every 60), so the group goes idle between them. */
  private clientsBusy(): boolean {
    return !this.knobs.quiesce || this.tickCount % 60 < 20;
  }

  /** Ends every fault: network healed, crashed nodes restarted, paused ones resumed. */
  private heal(): void {
    this.phase = "liveness";
    this.trace("*", "heal", `after ${this.tickCount} ticks`);
    for (const end of this.activeFaults) end();
    this.activeFaults.clear();
    this.nextLeaderActions = [];
    this.network.healAll();
    for (const node of this.nodes) {
      if (!node.up && !node.retired) this.restart(node.id);
      else if (node.paused) this.resume(node.id);
    }
  }

  /** Liveness: a leader commits a fresh entry that every voter applies, within the budget. */
  private checkLiveness(): void {
    const elapsed = this.tickCount - this.options.steps;
    const leaderId = this.leader();
    const leader = leaderId === null ? undefined : this.byId.get(leaderId);
    const probe = this.probe;
    if (leader !== undefined && probe !== null && probe.appliedBy.size > 0) {
      const conf = leader.raw!.confState();
      const voters = [...conf.voters, ...conf.votersOutgoing];
      if (voters.every((v) => probe.appliedBy.has(v))) {
        this.recoveryTicks = elapsed;
        this.phase = "done";
        this.invariants.finished({ voters: voters.map((id) => ({ id, applied: this.byId.get(id)!.state })) });
        return;
      }
    }
    if (leader !== undefined && (probe === null || this.tickCount - probe.sinceTick > 3 * this.knobs.electionTimeoutTicks)) {
      const data = new TextEncoder().encode(`${probePrefix}${this.probeSeq++}`);
      const fresh = { data, sinceTick: this.tickCount, appliedBy: new Set<NodeId>() };
      this.probe = fresh;
      leader.input({
        kind: "call",
        run: (raw) => {
          if (!raw.propose(data).ok && this.probe === fresh) this.probe = null;
        },
      });
    }
    if (elapsed >= this.knobs.livenessTicks) {
      const why = leader === undefined ? "no leader" : this.describeLiveness(leader, probe?.appliedBy);
      this.violate("liveness", `the healed cluster made no progress in ${elapsed} ticks (${why})`);
      this.phase = "done";
    }
  }

  private describeLiveness(leader: SimNode, appliedBy: ReadonlySet<NodeId> | undefined): string {
    const conf = leader.raw!.confState();
    const nodes = this.nodes.map((n) => {
      const state = n.retired ? "retired" : !n.up ? "down" : n.paused ? "paused" : n.role;
      return `${n.id}:${state}@t${n.term}/applied ${n.state.index}${appliedBy?.has(n.id) === true ? "+probe" : ""}`;
    });
    const voters = `voters [${conf.voters.join(",")}]${conf.votersOutgoing.length > 0 ? ` outgoing [${conf.votersOutgoing.join(",")}]` : ""}`;
    return `leader ${leader.id}; ${voters}; learners [${conf.learners.join(",")}]; ${nodes.join(" ")}`;
  }

  private result(): SimResult {
    return {
      seed: this.options.seed,
      nodes: this.options.nodes,
      steps: Math.min(this.tickCount, this.options.steps),
      ticks: this.tickCount,
      nodeTicks: this.nodes.reduce((sum, n) => sum + n.tickCount, 0),
      quiescedTicks: this.nodes.reduce((sum, n) => sum + n.quiescedTicks, 0),
      hibernations: this.nodes.reduce((sum, n) => sum + n.hibernations, 0),
      restoresTakenUp: this.nodes.reduce((sum, n) => sum + n.restoresTakenUp, 0),
      disksLost: this.nodes.reduce((sum, n) => sum + n.disksLost, 0),
      elections: this.elections,
      commits: this.commits,
      proposals: this.workload.stats.proposed,
      acked: this.workload.stats.acked,
      faults: this.faultsStarted,
      snapshotsInstalled: this.snapshotsInstalled,
      messages: this.network.stats.sent,
      events: this.events,
      recoveryTicks: this.recoveryTicks,
      violations: this.violations,
      knobs: this.knobs,
    };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A membership's identity, independent of the order of its ids. */
function membershipKey(conf: ConfState): string {
  return [conf.voters, conf.votersOutgoing, conf.learners, conf.learnersNext].map((ids) => [...ids].sort().join(",")).join("|");
}
