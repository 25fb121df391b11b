import { assert } from "./assert.ts";
import { Raft, type ProposalResult, type QuietState, type RaftConfig } from "./raft.ts";
import type { ReplicationState } from "./progress.ts";
import {
  Role,
  isFurtherFloor,
  type CatchUpFloor,
  type ConfChange,
  type ConfState,
  type GroupId,
  type HardState,
  type LogIndex,
  type Message,
  type NodeId,
  type Ready,
  type SoftState,
  type Term,
} from "./types.ts";

export { defaultRaftConfig, quiesceContext, type ProposalResult, type QuietState, type RaftConfig, type RaftEvent } from "./raft.ts";

/** The leader's view of one member's replication. */
export interface ProgressStatus {
  readonly match: LogIndex;
  readonly next: LogIndex;
  readonly state: ReplicationState;
  readonly learner: boolean;
}

/** How {@link RawNode.ready} collects. */
export interface ReadyOptions {
  /**
   * The application cannot apply now (it is restoring a snapshot it was
   * handed): the Ready hands out no committed entries, so that the node can
   * go on storing entries, voting and answering its leader meanwhile. The
   * entries are handed out by a later Ready without this option.
   */
  readonly withholdApply?: boolean;
}

/** A snapshot of a node's state, for operators and tests. */
export interface RaftStatus {
  readonly id: NodeId;
  readonly groupId: GroupId;
  readonly term: Term;
  readonly vote: NodeId;
  readonly commit: LogIndex;
  readonly applied: LogIndex;
  readonly role: Role;
  readonly leader: NodeId;
  readonly lastIndex: LogIndex;
  /** Term of the last log entry. */
  readonly lastTerm: Term;
  readonly confState: ConfState;
  /** This node neither votes nor campaigns (it may have lost its storage; see holdVotes and awaitTerm). */
  readonly votesHeld: boolean;
  /** Filled on the leader only. */
  readonly progress: ReadonlyMap<NodeId, ProgressStatus>;
}

/**
 * The Raft core's interface to the world, in the style of etcd's RawNode:
 * inputs (`tick`, `step`, `propose`, ...) change memory only, and `ready()`
 * hands out what to persist, send and apply, acknowledged by `advance()`.
 * Single-threaded and synchronous; `step` may be called while a Ready is
 * being handled, but `ready()` again only after `advance()`.
 */
export class RawNode {
  private readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  private outstanding: Ready | null = null;

  constructor(config: RaftConfig) {
    this.raft = new Raft(config);
    this.prevSoftState = this.softState();
    this.prevHardState = config.storage.initialState().hardState;
  }

  tick(): void {
    this.raft.tick();
  }

  step(message: Message): void {
    this.raft.step(message);
  }

  /** Starts an election now (a pre-election first when PreVote is on). */
  campaign(): void {
    this.raft.hup(this.raft.config.preVote ? "pre-election" : "election");
  }

  /**
   * While `held`, this node starts no election (by its timeout, a leadership
   * transfer or {@link campaign}) but still votes: for a node that cannot
   * apply for a while, which as leader could serve nothing.
   */
  holdCampaigns(held: boolean): void {
    this.raft.campaignsHeld = held;
  }

  /**
   * While `held`, this node grants no vote or pre-vote and starts no
   * election: for a node that may have lost its storage and, with it, the
   * votes it cast and the entries it acknowledged. It still stores entries a
   * leader sends and answers it, so it catches up meanwhile.
   */
  holdVotes(held: boolean): void {
    this.raft.votesHeld = held;
  }

  /**
   * Raises the catch-up floor of a copy made anew (see Raft.catchUpFloor) to
   * `floor` if that is further: until it has applied up to `floor.index` it
   * starts no election and votes only for a log at least as up to date as
   * `floor`; and it takes no message of a term before `floor.term` (see
   * Raft.fenceTerm). Persist it first.
   */
  raiseCatchUpFloor(floor: CatchUpFloor): void {
    if (!isFurtherFloor(floor, this.raft.catchUpFloor)) return;
    this.raft.catchUpFloor = floor;
    this.raft.fenceTerm(floor.term);
  }

  /** The catch-up floor this copy was made with (see Raft.catchUpFloor; index 0 when none). */
  catchUpFloor(): CatchUpFloor {
    return this.raft.catchUpFloor;
  }

  /** Whether this node knows no membership yet or has not applied up to its catch-up floor (it campaigns not, and votes only for logs past the floor). */
  catchingUp(): boolean {
    return this.raft.catchingUp();
  }

  /**
   * Steps no message until {@link adoptTerm}: for a node that lost its
   * storage, and with it the term the group had reached. Answering a leader
   * deposed meanwhile could let it commit over entries this node had
   * acknowledged.
   */
  awaitTerm(): void {
    this.raft.termUnknown = true;
  }

  /**
   * Takes `term` as the group's term (a follower with no leader, if it is
   * higher than this node's) and steps messages again. This node may have
   * voted in that term before it lost its storage, so it counts its vote
   * there as cast and votes again only in a later term. The new term and vote
   * are in the next Ready's hard state; leaders of older terms are refused.
   */
  adoptTerm(term: Term): void {
    const raft = this.raft;
    raft.termUnknown = false;
    if (term > raft.term) raft.becomeFollower(term, "");
    if (raft.vote === "") raft.vote = raft.id;
  }

  /**
   * The newest entry known committed that is already in stable storage (the
   * storage's log is updated only once its write is done): its index and term.
   */
  storedCommitted(): { index: LogIndex; term: Term } {
    const log = this.raft.log;
    const index = Math.min(log.committed, log.storage.lastIndex());
    return { index, term: log.term(index) ?? 0 };
  }

  propose(data: Uint8Array): ProposalResult {
    return this.raft.propose(data);
  }

  /** Proposes on the leader or forwards to it; false when no leader is known. The outcome shows in the log. */
  proposeAnywhere(data: Uint8Array): boolean {
    return this.raft.proposeAnywhere(data);
  }

  proposeConfChange(change: ConfChange): ProposalResult {
    return this.raft.proposeConfChange(change);
  }

  transferLeadership(to: NodeId): void {
    this.raft.transferLeadership(to);
  }

  readIndex(context: Uint8Array): void {
    this.raft.readIndex(context);
  }

  /** Whether a leader with lazy commit notices holds a commit index some follower has not been told. */
  commitNoticePending(): boolean {
    return this.raft.commitNoticePending;
  }

  /** Sends the commit notices due now instead of at the next tick (see `Raft.flushCommitNotices`); false if none was due. */
  flushCommitNotices(): boolean {
    return this.raft.flushCommitNotices();
  }

  /** The connection to the leader was lost: campaign soon unless a leader speaks up. */
  forgetLeader(): void {
    this.raft.forgetLeader();
  }

  reportUnreachable(id: NodeId): void {
    this.raft.reportUnreachable(id);
  }

  reportSnapshot(id: NodeId, ok: boolean): void {
    this.raft.reportSnapshot(id, ok);
  }

  /** Whether the group is quiet here: `tick()` does nothing until another input wakes it. */
  isQuiesced(): boolean {
    return this.raft.quiesced;
  }

  /**
   * The node's quiet role when it may be unloaded now (see `RaftConfig.resume`):
   * quiesced, everything applied, nothing pending, no Ready outstanding.
   */
  quietState(): QuietState | undefined {
    if (this.outstanding !== null) return undefined;
    return this.raft.quietState();
  }

  /** The term this node is in: cheaper than `status()`. */
  term(): Term {
    return this.raft.term;
  }

  /** The leader this node knows of, or "": cheaper than `status()`. */
  leader(): NodeId {
    return this.raft.lead;
  }

  /**
   * The data of the snapshot this node took from a leader and has not yet
   * handed out in a Ready, or null: whether a Snapshot message just stepped
   * was installed (the same data) or declined.
   */
  pendingSnapshotData(): Uint8Array | null {
    return this.raft.log.unstable.snapshot?.data ?? null;
  }

  /** Membership as of the applied index: what a snapshot taken now must record. */
  confState(): ConfState {
    return this.raft.confState;
  }

  /**
   * The membership this node would campaign with: the applied one plus the
   * conf changes it knows committed and has yet to apply (it campaigns only
   * once it applied them).
   */
  campaignConfState(): ConfState {
    return this.raft.campaignConfState();
  }

  /**
   * Whether this node's log holds a conf change it has not applied, committed
   * or not. When it holds none and its applied membership is two voters, itself
   * and another, it holds every committed entry: the leader commits nothing past
   * a conf change before applying it, so every entry after that membership's
   * own was committed by a quorum of it, which needs this node.
   */
  holdsUnappliedConfChange(): boolean {
    return this.raft.holdsUnappliedConfChange();
  }

  private softState(): SoftState {
    return { leader: this.raft.lead, role: this.raft.role };
  }

  private hardState(): HardState {
    return { term: this.raft.term, vote: this.raft.vote, commit: this.raft.log.committed };
  }

  /**
   * Whether `ready()` has anything to hand out. False while a Ready is
   * outstanding. With `withholdApply` (see {@link ReadyOptions}), committed
   * entries do not count, and a snapshot waiting to be installed makes it
   * false: nothing after it may be stored before it is.
   */
  hasReady(options: ReadyOptions = {}): boolean {
    if (this.outstanding !== null) return false;
    const raft = this.raft;
    if (options.withholdApply === true && raft.log.unstable.snapshot !== null) return false;
    const soft = this.prevSoftState;
    const hard = this.prevHardState;
    return (
      raft.messages.length > 0 ||
      raft.readStates.length > 0 ||
      raft.log.unstable.entries.length > 0 ||
      raft.log.unstable.snapshot !== null ||
      (options.withholdApply !== true && raft.log.committed > raft.log.applied) ||
      raft.lead !== soft.leader ||
      raft.role !== soft.role ||
      raft.term !== hard.term ||
      raft.vote !== hard.vote ||
      raft.log.committed !== hard.commit
    );
  }

  /**
   * Collects the pending work. Handle it as the {@link Ready} contract says,
   * then call `advance()`. A Ready carrying a snapshot hands out no committed
   * entries: they follow once the snapshot is installed (the next Ready).
   */
  ready(options: ReadyOptions = {}): Ready {
    assert(this.outstanding === null, "ready() called again before advance()");
    const raft = this.raft;
    assert(options.withholdApply !== true || raft.log.unstable.snapshot === null, "ready() withholding apply while a snapshot waits to be installed");
    const soft = this.softState();
    const hard = this.hardState();
    const prev = this.prevHardState;
    const hardChanged = hard.term !== prev.term || hard.vote !== prev.vote || hard.commit !== prev.commit;
    const entries = raft.log.unstable.entries.slice();
    const snapshot = raft.log.unstable.snapshot;
    const ready: Ready = {
      softState: soft.leader !== this.prevSoftState.leader || soft.role !== this.prevSoftState.role ? soft : null,
      hardState: hardChanged ? hard : null,
      entries,
      snapshot,
      committedEntries: snapshot !== null || options.withholdApply === true ? [] : raft.log.nextCommittedEntries(raft.config.maxCommittedBytesPerReady),
      messages: raft.messages,
      readStates: raft.readStates,
      mustSync: hard.term !== prev.term || hard.vote !== prev.vote || entries.length > 0 || snapshot !== null,
    };
    raft.messages = [];
    raft.readStates = [];
    this.outstanding = ready;
    return ready;
  }

  /** Acknowledges the outstanding Ready: it was persisted, sent and applied. */
  advance(): void {
    const ready = this.outstanding;
    assert(ready !== null, "advance() without an outstanding ready()");
    this.outstanding = null;
    const log = this.raft.log;
    if (ready.softState !== null) this.prevSoftState = ready.softState;
    if (ready.hardState !== null) this.prevHardState = ready.hardState;
    const lastEntry = ready.entries[ready.entries.length - 1];
    if (lastEntry !== undefined) log.stableTo(lastEntry.index, lastEntry.term);
    if (ready.snapshot !== null) {
      log.stableSnapTo(ready.snapshot.metadata.index);
      if (ready.snapshot.metadata.index > log.applied) this.raft.appliedTo(ready.snapshot.metadata.index, []);
    }
    const lastCommitted = ready.committedEntries[ready.committedEntries.length - 1];
    if (lastCommitted !== undefined && lastCommitted.index > log.applied) {
      this.raft.appliedTo(lastCommitted.index, ready.committedEntries);
    }
  }

  status(): RaftStatus {
    const raft = this.raft;
    const progress = new Map<NodeId, ProgressStatus>();
    if (raft.role === Role.Leader) {
      for (const [id, p] of raft.progress) progress.set(id, { match: p.match, next: p.next, state: p.state, learner: p.isLearner });
    }
    return {
      id: raft.id,
      groupId: raft.groupId,
      term: raft.term,
      vote: raft.vote,
      commit: raft.log.committed,
      applied: raft.log.applied,
      role: raft.role,
      leader: raft.lead,
      lastIndex: raft.log.lastIndex(),
      lastTerm: raft.log.lastTerm(),
      confState: raft.confState,
      votesHeld: raft.votesHeld || raft.termUnknown,
      progress,
    };
  }
}
