import type { Logger } from "pino";
import { isConfMember } from "../raft/conf-change.ts";
import { RawNode, type RaftConfig, type RaftEvent, type RaftStatus } from "../raft/raw-node.ts";
import { mayLeaveBeforePersist, MessageType, type ConfChange, type ConfState, type Entry, type GroupId, type HardState, type LogIndex, type Message, type NodeId, type Ready, type Term, type Transport } from "../raft/types.ts";
import type { GroupStore, StorageEngine } from "../storage/storage-engine.ts";
import { NotLeaderError, OutcomeUnknownError, ProposalDroppedError, ProposalRefusedError, UnknownGroupError } from "./errors.ts";
import { planLeaderTransfers } from "./leader-balancer.ts";
import type { StateMachine } from "./state-machine.ts";

/** Timing and limits of every group a driver hosts. */
export type GroupRaftSettings = Pick<
  RaftConfig,
  "electionTimeoutTicks" | "heartbeatTicks" | "preVote" | "checkQuorum" | "maxMessageBytes" | "maxInflightMessages" | "maxUncommittedBytes" | "maxCommittedBytesPerReady"
>;

/** Per-group choices made when a group is added. */
export interface AddGroupOptions {
  /**
   * Let the group quiesce when idle (see `RaftConfig.quiesce`): it then
   * costs nothing per tick. Default false.
   */
  readonly quiesce?: boolean;
  /** Count the group in leader balancing (see {@link RaftDriverOptions.balanceLeadersEveryMs}). Default false. */
  readonly balanceLeadership?: boolean;
}

/** Observers for metrics; every member optional. */
export interface DriverObserver {
  onProposal?(groupId: GroupId): void;
  onCommitted?(groupId: GroupId, entries: number): void;
  onEvent?(groupId: GroupId, event: RaftEvent): void;
  onApplyLag?(groupId: GroupId, entries: number): void;
}

/** Settings of a {@link RaftDriver}. */
export interface RaftDriverOptions {
  readonly selfId: NodeId;
  readonly engine: StorageEngine;
  readonly transport: Transport;
  readonly logger: Logger;
  readonly raft: GroupRaftSettings;
  /** Wall-clock length of one Raft tick. */
  readonly tickIntervalMs: number;
  /** Source of the cores' randomized election timeouts. */
  readonly random: () => number;
  /** Take a snapshot (and compact the log) every this many applied entries. */
  readonly snapshotEveryEntries: number;
  /** Entries kept behind a snapshot, so a follower slightly behind needs no snapshot. */
  readonly snapshotKeepEntries: number;
  /** The client address of a homeserver, for "not leader" hints. */
  readonly clientAddressOf: (id: NodeId) => string;
  readonly observer?: DriverObserver;
  /** Called when the node can no longer run safely (a storage failure); the process must stop. */
  readonly onFatal: (error: unknown) => void;
  /**
   * How often to look at leadership of the groups added with
   * `balanceLeadership` and hand some over when this homeserver leads more
   * than its share (see leader-balancer.ts); 0 or absent: never.
   */
  readonly balanceLeadersEveryMs?: number;
  /** Most leadership transfers started per balancing round. Default 20. */
  readonly balanceTransfersMax?: number;
  /**
   * Told when a group this homeserver leads gets a message from a homeserver
   * outside its membership (one removed that never learned it was).
   */
  readonly onForeignMessage?: (from: NodeId, groupId: GroupId) => void;
  /**
   * Asked, on a group's leader, before a proposal a follower forwarded is
   * appended; false keeps it out of the log (the hook may propose it later).
   */
  readonly admitForwarded?: (groupId: GroupId, message: Message) => boolean;
}

/** The committed outcome of a proposal. */
export interface Applied {
  readonly index: LogIndex;
  readonly term: Term;
  readonly result: unknown;
}

interface ProposalWaiter {
  readonly term: Term;
  readonly resolve: (applied: Applied) => void;
  readonly reject: (error: Error) => void;
}

interface ReadWaiter {
  index: LogIndex;
  readonly resolve: (index: LogIndex) => void;
  readonly reject: (error: Error) => void;
}

/** One Raft group hosted by this homeserver. */
interface HostedGroup {
  readonly groupId: GroupId;
  readonly store: GroupStore;
  readonly node: RawNode;
  readonly stateMachine: StateMachine;
  readonly proposals: Map<LogIndex, ProposalWaiter>;
  /** Read requests by context, waiting for their read index, then for apply to reach it. */
  readonly reads: Map<string, ReadWaiter>;
  appliedIndex: LogIndex;
  lastSnapshotIndex: LogIndex;
  /** A background snapshot is being taken. */
  snapshotting: boolean;
  /** Counted in leader balancing. */
  readonly balanced: boolean;
  /** Index of the empty entry this node appended when it last became leader of the group. */
  termStartIndex: LogIndex;
}

/**
 * Runs many Raft groups in one process: ticks them, routes peer messages to
 * them, and handles their Readies together, so the entries and hard states
 * of all groups that have work share ONE synced RocksDB batch. Per Ready the
 * order is the contract's: persist, then send, then apply, then advance.
 *
 * Nothing here walks every group per tick or per round: only awake groups
 * tick, and only groups given an input since their last empty Ready are
 * asked for one. A quiet group costs memory only.
 */
export class RaftDriver {
  private readonly groups = new Map<GroupId, HostedGroup>();
  /** Groups whose core is not quiesced: the only ones ticked. Invariant: holds every such hosted group. */
  private readonly awake = new Set<HostedGroup>();
  /** Groups given an input since their last empty Ready: the only ones the Ready loop asks. */
  private readonly dirty = new Set<HostedGroup>();
  private ticker: NodeJS.Timeout | undefined;
  private balancer: NodeJS.Timeout | undefined;
  private loopScheduled = false;
  private loopRunning: Promise<void> | undefined;
  private stopped = false;
  private readCounter = 0;

  constructor(private readonly options: RaftDriverOptions) {}

  /** Hosts a group over its loaded store; restores its state machine if a snapshot got ahead of it. */
  async addGroup(store: GroupStore, stateMachine: StateMachine, options: AddGroupOptions = {}): Promise<void> {
    const snapshot = store.log.snapshot();
    if (store.appliedIndex < snapshot.metadata.index) {
      // A crash between installing a leader's snapshot and restoring the state from it.
      await stateMachine.restore(snapshot.data, snapshot.metadata.index);
      store.appliedIndex = snapshot.metadata.index;
    }
    const groupId = store.groupId;
    const node = new RawNode({
      ...this.options.raft,
      id: this.options.selfId,
      groupId,
      storage: store.log,
      random: this.options.random,
      applied: store.appliedIndex,
      quiesce: options.quiesce ?? false,
      onEvent: (event) => this.onRaftEvent(groupId, event),
    });
    const group: HostedGroup = {
      groupId,
      store,
      node,
      stateMachine,
      proposals: new Map(),
      reads: new Map(),
      appliedIndex: store.appliedIndex,
      lastSnapshotIndex: snapshot.metadata.index,
      snapshotting: false,
      balanced: options.balanceLeadership ?? false,
      termStartIndex: 0,
    };
    this.groups.set(groupId, group);
    this.touch(group);
  }

  /**
   * Stops hosting `groupId` (this homeserver is no longer one of its
   * members); its callers fail. Resolves once no Ready of it is in flight,
   * so the caller may then drop its storage.
   */
  async removeGroup(groupId: GroupId): Promise<void> {
    const group = this.groups.get(groupId);
    if (group === undefined) return;
    this.groups.delete(groupId);
    this.awake.delete(group);
    this.dirty.delete(group);
    for (const waiter of group.proposals.values()) waiter.reject(new OutcomeUnknownError(groupId, "this homeserver left the group"));
    for (const read of group.reads.values()) read.reject(new OutcomeUnknownError(groupId, "this homeserver left the group"));
    group.proposals.clear();
    group.reads.clear();
    await this.loopRunning;
  }

  /**
   * Whether this homeserver leads `groupId` and has applied the first entry
   * of its term: everything committed before it became leader is then
   * applied here, so its state machine is current for deciding what to admit.
   */
  leaderReady(groupId: GroupId): boolean {
    const group = this.groups.get(groupId);
    return group !== undefined && group.node.leader() === this.options.selfId && group.appliedIndex >= group.termStartIndex;
  }

  /** Whether `groupId` is hosted here. */
  hosts(groupId: GroupId): boolean {
    return this.groups.has(groupId);
  }

  /** The membership of `groupId` as its core knows it now. */
  confState(groupId: GroupId): ConfState {
    return this.group(groupId).node.confState();
  }

  /**
   * Records that `group`'s core got an input: it may have a Ready, and it
   * ticks exactly while it is not quiesced. Call after every input.
   */
  private touch(group: HostedGroup): void {
    this.dirty.add(group);
    if (group.node.isQuiesced()) this.awake.delete(group);
    else this.awake.add(group);
    this.schedule();
  }

  /** How many groups are hosted and how many of them are awake (ticking). */
  counts(): { readonly groups: number; readonly awake: number } {
    return { groups: this.groups.size, awake: this.awake.size };
  }

  private onRaftEvent(groupId: GroupId, event: RaftEvent): void {
    this.options.observer?.onEvent?.(groupId, event);
    const log = this.options.logger;
    switch (event.kind) {
      case "became-leader": {
        const group = this.groups.get(groupId);
        if (group !== undefined) group.termStartIndex = group.node.status().lastIndex;
        log.info({ groupId, term: event.term }, "became leader");
        break;
      }
      case "became-follower":
        if (event.leader !== "") log.info({ groupId, term: event.term, leader: event.leader }, "following leader");
        break;
      case "became-pre-candidate":
      case "became-candidate":
        // A leader change starts here: worth a line when diagnosing one.
        log.info({ groupId, term: event.term, kind: event.kind }, "no leader heard from: campaigning");
        break;
      case "conf-change-applied":
        log.info({ groupId, index: event.index, confState: event.confState }, "membership changed");
        break;
      case "snapshot-restored":
        log.info({ groupId, index: event.index, term: event.term }, "installing snapshot from leader");
        break;
      default:
        break;
    }
  }

  /** Starts the tick clock. */
  start(): void {
    this.ticker = setInterval(() => {
      for (const group of this.awake) {
        group.node.tick();
        this.dirty.add(group);
        if (group.node.isQuiesced()) this.awake.delete(group);
      }
      this.schedule();
    }, this.options.tickIntervalMs);
    const every = this.options.balanceLeadersEveryMs ?? 0;
    if (every > 0) {
      this.balancer = setInterval(() => this.balanceLeaders(), every);
      this.balancer.unref();
    }
  }

  /**
   * One round of leader balancing: walks the balanced groups (once per
   * round, not per tick) and starts the planned transfers. A transfer wakes
   * the group; it goes quiet again under its new leader.
   */
  private balanceLeaders(): void {
    if (this.stopped) return;
    const groups = [];
    for (const group of this.groups.values()) {
      if (!group.balanced) continue;
      const conf = group.node.confState();
      if (conf.votersOutgoing.length > 0) continue;
      groups.push({ groupId: group.groupId, leader: group.node.leader(), voters: conf.voters });
    }
    const plan = planLeaderTransfers(this.options.selfId, groups, { maxTransfers: this.options.balanceTransfersMax ?? 20, slackGroups: 2 });
    for (const { groupId, to } of plan) this.transferLeadership(groupId, to);
    if (plan.length > 0) this.options.logger.debug({ transfers: plan.length }, "leader balancing: handing over groups");
  }

  /** Stops ticking and waits for the Ready loop to finish; pending callers get UNAVAILABLE. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.ticker !== undefined) clearInterval(this.ticker);
    if (this.balancer !== undefined) clearInterval(this.balancer);
    await this.loopRunning;
    for (const group of this.groups.values()) {
      for (const waiter of group.proposals.values()) waiter.reject(new OutcomeUnknownError(group.groupId, "the homeserver is stopping"));
      for (const read of group.reads.values()) read.reject(new OutcomeUnknownError(group.groupId, "the homeserver is stopping"));
      group.proposals.clear();
      group.reads.clear();
    }
  }

  /** Delivers messages received from peer `from`, each to its group. */
  receive(from: NodeId, messages: readonly Message[]): void {
    if (this.stopped) return;
    for (const m of messages) {
      if (m.from !== from) continue;
      const group = this.groups.get(m.groupId);
      if (group === undefined) continue;
      if (group.node.leader() === this.options.selfId) {
        if (this.options.onForeignMessage !== undefined && !isConfMember(group.node.confState(), from)) this.options.onForeignMessage(from, m.groupId);
        if (m.type === MessageType.Propose && this.options.admitForwarded?.(m.groupId, m) === false) continue;
      }
      group.node.step(m);
      this.touch(group);
    }
    this.schedule();
  }

  /**
   * The connection to peer `id` broke: groups it leads start electing at
   * once, quiet ones included (they wake). Walks every group, but only when a
   * stream breaks.
   */
  peerLost(id: NodeId): void {
    for (const group of this.groups.values()) {
      if (group.node.leader() !== id) continue;
      group.node.forgetLeader();
      this.touch(group);
    }
  }

  reportSnapshot(to: NodeId, groupId: GroupId, ok: boolean): void {
    const group = this.groups.get(groupId);
    if (group === undefined) return;
    group.node.reportSnapshot(to, ok);
    this.touch(group);
  }

  reportUnreachable(to: NodeId): void {
    for (const group of this.groups.values()) group.node.reportUnreachable(to);
  }

  private group(groupId: GroupId): HostedGroup {
    const group = this.groups.get(groupId);
    if (group === undefined) throw new UnknownGroupError(groupId);
    return group;
  }

  status(groupId: GroupId): RaftStatus {
    return this.group(groupId).node.status();
  }

  /** The leader group `groupId` knows of here, or "" (cheaper than `status`). */
  leaderOf(groupId: GroupId): NodeId {
    return this.group(groupId).node.leader();
  }

  groupIds(): GroupId[] {
    return [...this.groups.keys()];
  }

  /** Proposes `data`; resolves once it is committed and applied here, with its result. */
  propose(groupId: GroupId, data: Uint8Array): Promise<Applied> {
    const group = this.group(groupId);
    this.options.observer?.onProposal?.(groupId);
    const result = group.node.propose(data);
    this.touch(group);
    return this.await(group, result);
  }

  /** Proposes on the leader or forwards to it, fire and forget; false when no leader is known. */
  proposeAnywhere(groupId: GroupId, data: Uint8Array): boolean {
    const group = this.groups.get(groupId);
    if (group === undefined || this.stopped) return false;
    const sent = group.node.proposeAnywhere(data);
    this.touch(group);
    return sent;
  }

  /** Proposes a membership change; resolves once it is applied here. */
  proposeConfChange(groupId: GroupId, change: ConfChange): Promise<Applied> {
    const group = this.group(groupId);
    const result = group.node.proposeConfChange(change);
    this.touch(group);
    return this.await(group, result);
  }

  private await(group: HostedGroup, result: ReturnType<RawNode["propose"]>): Promise<Applied> {
    if (!result.ok) {
      if (result.reason === "not-leader") throw this.notLeader(group);
      throw new ProposalRefusedError(group.groupId, result.reason);
    }
    const { index, term } = result;
    const applied = new Promise<Applied>((resolve, reject) => group.proposals.set(index, { term, resolve, reject }));
    this.schedule();
    return applied;
  }

  private notLeader(group: HostedGroup): NotLeaderError {
    const leader = group.node.status().leader;
    return new NotLeaderError(group.groupId, leader, leader === "" ? "" : this.options.clientAddressOf(leader));
  }

  /**
   * A linearizable read point: resolves with an index once this node has
   * applied everything committed before the call, as confirmed by a quorum.
   */
  readIndex(groupId: GroupId): Promise<LogIndex> {
    const group = this.group(groupId);
    const status = group.node.status();
    if (status.leader === "") throw this.notLeader(group);
    const context = `r${++this.readCounter}`;
    const read = new Promise<LogIndex>((resolve, reject) => group.reads.set(context, { index: -1, resolve, reject }));
    group.node.readIndex(new TextEncoder().encode(context));
    this.touch(group);
    return read;
  }

  /** Starts an election for `groupId` now (a pre-election first with PreVote), rather than at its timeout. */
  campaign(groupId: GroupId): void {
    const group = this.group(groupId);
    group.node.campaign();
    this.touch(group);
  }

  transferLeadership(groupId: GroupId, to: NodeId): void {
    const group = this.group(groupId);
    group.node.transferLeadership(to);
    this.touch(group);
  }

  // ---- the Ready loop ----------------------------------------------------------------------------

  private schedule(): void {
    if (this.loopScheduled || this.stopped) return;
    this.loopScheduled = true;
    setImmediate(() => {
      this.loopScheduled = false;
      if (this.loopRunning !== undefined) return;
      this.loopRunning = this.runReadyLoop().finally(() => {
        this.loopRunning = undefined;
      });
    });
  }

  private async runReadyLoop(): Promise<void> {
    try {
      for (let round = 0; round < 1000 && !this.stopped; round++) {
        const batch: Array<{ group: HostedGroup; ready: Ready }> = [];
        for (const group of this.dirty) {
          if (group.node.hasReady()) batch.push({ group, ready: group.node.ready() });
          else this.dirty.delete(group);
        }
        if (batch.length === 0) return;
        await this.handleReadies(batch);
      }
      this.schedule();
    } catch (error) {
      this.stopped = true;
      if (this.ticker !== undefined) clearInterval(this.ticker);
      if (this.balancer !== undefined) clearInterval(this.balancer);
      this.options.onFatal(error);
    }
  }

  private async handleReadies(batch: Array<{ group: HostedGroup; ready: Ready }>): Promise<void> {
    // 1. Persist entries, hard states and snapshots of every group in one synced batch. A Ready whose
    //    only change is the commit index is skipped: the commit index may be persisted lazily (a
    //    restarted node learns it again), and skipping saves a RocksDB write per round on the leader.
    //    A leader's Appends and heartbeats leave first, so followers write in parallel with it.
    const toPersist = batch.filter(({ group, ready }) => !onlyCommitChanged(ready, group.store.log.getHardState()));
    const early: Message[] = [];
    const late: Message[] = [];
    for (const { ready } of batch) for (const m of ready.messages) (toPersist.length > 0 && !mayLeaveBeforePersist(m) ? late : early).push(m);
    if (early.length > 0) this.options.transport.send(early);
    if (toPersist.length > 0) await this.options.engine.persistReadies(toPersist.map(({ group, ready }) => ({ group: group.store, ready })));
    for (const { group, ready } of batch) {
      if (ready.snapshot !== null) {
        await group.stateMachine.restore(ready.snapshot.data, ready.snapshot.metadata.index);
        this.failProposalsUpTo(group, ready.snapshot.metadata.index);
        group.appliedIndex = ready.snapshot.metadata.index;
        group.lastSnapshotIndex = ready.snapshot.metadata.index;
      }
    }
    // 2. Only now may messages that depend on that state leave.
    if (late.length > 0) this.options.transport.send(late);
    // 3. Apply committed entries; state changes and applied indexes in one batch.
    const applies = [];
    const outcomes = [];
    for (const { group, ready } of batch) {
      if (ready.committedEntries.length === 0) continue;
      const outcome = await group.stateMachine.apply(ready.committedEntries);
      const appliedIndex = ready.committedEntries[ready.committedEntries.length - 1]!.index;
      applies.push({ group: group.store, appliedIndex, writes: outcome.writes });
      outcomes.push({ group, entries: ready.committedEntries, results: outcome.results, appliedIndex, afterWrite: outcome.afterWrite, localWrites: outcome.localWrites });
    }
    if (applies.length > 0) await this.options.engine.apply(applies, outcomes.flatMap((o) => o.localWrites ?? []));
    for (const { afterWrite } of outcomes) afterWrite?.();
    // 4. Answer callers and advance the cores.
    for (const { group, entries, results, appliedIndex } of outcomes) {
      group.appliedIndex = appliedIndex;
      this.options.observer?.onCommitted?.(group.groupId, entries.length);
      this.answerProposals(group, entries, results);
    }
    for (const { group, ready } of batch) {
      this.trackReads(group, ready);
      group.node.advance();
      this.options.observer?.onApplyLag?.(group.groupId, group.node.status().commit - group.appliedIndex);
      this.maybeSnapshot(group);
    }
  }

  private answerProposals(group: HostedGroup, entries: readonly Entry[], results: ReadonlyMap<LogIndex, unknown>): void {
    for (const entry of entries) {
      const waiter = group.proposals.get(entry.index);
      if (waiter === undefined) continue;
      group.proposals.delete(entry.index);
      if (entry.term === waiter.term) waiter.resolve({ index: entry.index, term: entry.term, result: results.get(entry.index) });
      else waiter.reject(new ProposalDroppedError(group.groupId));
    }
  }

  private failProposalsUpTo(group: HostedGroup, index: LogIndex): void {
    for (const [proposalIndex, waiter] of group.proposals) {
      if (proposalIndex > index) continue;
      group.proposals.delete(proposalIndex);
      waiter.reject(new OutcomeUnknownError(group.groupId, "a snapshot replaced the log"));
    }
  }

  private trackReads(group: HostedGroup, ready: Ready): void {
    if (ready.softState !== null) {
      // Leadership moved: requests the old leader held will never be answered.
      for (const read of group.reads.values()) if (read.index < 0) read.reject(new ProposalDroppedError(group.groupId));
      for (const [context, read] of group.reads) if (read.index < 0) group.reads.delete(context);
    }
    const decoder = new TextDecoder();
    for (const state of ready.readStates) {
      const read = group.reads.get(decoder.decode(state.context));
      if (read !== undefined) read.index = state.index;
    }
    for (const [context, read] of group.reads) {
      if (read.index < 0 || read.index > group.appliedIndex) continue;
      group.reads.delete(context);
      read.resolve(read.index);
    }
  }

  /**
   * Snapshots a group whose log grew by `snapshotEveryEntries` since the last
   * one, in the background: the state machine captures a point-in-time view
   * synchronously (a RocksDB iterator), so the Ready loop, heartbeats
   * included, never waits for a large snapshot to be read and written.
   */
  private maybeSnapshot(group: HostedGroup): void {
    const { snapshotEveryEntries, snapshotKeepEntries } = this.options;
    if (group.snapshotting || group.appliedIndex - group.lastSnapshotIndex < snapshotEveryEntries) return;
    group.snapshotting = true;
    const index = group.appliedIndex;
    const confState = group.node.confState();
    group.stateMachine
      .snapshotData()
      .then((data) => group.store.createSnapshot(index, confState, data, snapshotKeepEntries).then(() => data.byteLength))
      .then(
        (bytes) => {
          group.lastSnapshotIndex = Math.max(group.lastSnapshotIndex, index);
          this.options.logger.info({ groupId: group.groupId, index, bytes }, "snapshot taken, log compacted");
        },
        (error: unknown) => this.options.logger.warn({ groupId: group.groupId, index, err: error }, "snapshot not taken"),
      )
      .finally(() => {
        group.snapshotting = false;
      });
  }
}

/** Whether the only thing `ready` asks to persist is a new commit index. */
function onlyCommitChanged(ready: Ready, persisted: HardState): boolean {
  if (ready.entries.length > 0 || ready.snapshot !== null) return false;
  const hard = ready.hardState;
  return hard === null || (hard.term === persisted.term && hard.vote === persisted.vote);
}
