import { assert } from "./assert.ts";
import { applyConfChange, confAfterEntry, encodeConfChange } from "./conf-change.ts";
import { entryBytes } from "./memory-storage.ts";
import { Progress } from "./progress.ts";
import { JointQuorum, VoteResult } from "./quorum.ts";
import { RaftLog } from "./raft-log.ts";
import { ReadOnlyQueue } from "./read-only.ts";
import {
  EntryType,
  MessageType,
  Role,
  message,
  noCatchUpFloor,
  type CatchUpFloor,
  type ConfChange,
  type ConfState,
  type Entry,
  type GroupId,
  type LogIndex,
  type LogStorage,
  type Message,
  type NodeId,
  type ReadState,
  type Snapshot,
  type Term,
} from "./types.ts";

/** Settings of one Raft node. See {@link defaultRaftConfig} for working values. */
export interface RaftConfig {
  readonly id: NodeId;
  readonly groupId: GroupId;
  readonly storage: LogStorage;
  /** Ticks without hearing from a leader before a follower campaigns; randomized in [T, 2T). */
  readonly electionTimeoutTicks: number;
  /** Ticks between a leader's heartbeats. Must be well below the election timeout. */
  readonly heartbeatTicks: number;
  /** Seeded source of randomness in [0, 1); the core never calls Math.random. */
  readonly random: () => number;
  /** Ask "could I win?" before raising the term, so a rejoining node cannot disrupt a healthy leader. */
  readonly preVote: boolean;
  /** A leader steps down after an election timeout without hearing from a quorum; followers then ignore votes while they hear a leader. */
  readonly checkQuorum: boolean;
  /** Most entry bytes per Append message (at least one entry is always sent). */
  readonly maxMessageBytes: number;
  /** Most Append messages in flight to one follower in replicate state. */
  readonly maxInflightMessages: number;
  /** The leader refuses proposals while more than this many entry bytes are uncommitted; 0 for no limit. */
  readonly maxUncommittedBytes: number;
  /** Most entry bytes handed out for applying in one Ready (at least one entry). */
  readonly maxCommittedBytesPerReady: number;
  /** The index the state machine has applied, when restarting. */
  readonly applied: LogIndex;
  /** The catch-up floor, when restarting (see {@link Raft.catchUpFloor}). Default none. */
  readonly catchUpFloor?: CatchUpFloor;
  /** Observer for role changes and similar notable events (logging, metrics, simulator checks). */
  readonly onEvent?: (event: RaftEvent) => void;
  /**
   * Let an idle group go quiet: a leader with nothing in flight sends one
   * last heartbeat marked {@link quiesceContext}, and from then on neither it
   * nor its caught-up followers do anything on `tick()` until an input wakes
   * them (see {@link Raft.quiesced}). Default off.
   */
  readonly quiesce?: boolean;
  /**
   * Tell followers a new commit index with the next Append (which carries
   * it anyway) or at the next tick, instead of in an empty Append of its own
   * at once. Under steady load that spares every follower a message, a Ready
   * round and a storage write per entry (it applies entry k while it stores
   * k + 1); an idle follower applies up to a tick later. For groups whose
   * followers need not apply at once. Default off.
   */
  readonly lazyCommitNotices?: boolean;
  /**
   * Start quiet, in the role this node had when its runtime unloaded it (see
   * {@link QuietState}), instead of as a follower knowing no leader. Only for
   * a node unloaded cleanly while quiesced, with `quiesce` on.
   */
  readonly resume?: QuietState;
}

/**
 * What a quiesced node's role was when its runtime unloaded it from memory
 * (everything persisted and applied, nothing in flight), so that reloading it
 * restores the same quiet group instead of starting an election. The term
 * and the log come from storage, unchanged since: no other input reached the
 * node in between (the runtime queues them until the node is loaded again).
 */
export interface QuietState {
  /** The leader of the current term: this node itself, or the one it follows. */
  readonly leader: NodeId;
  /** A follower's index up to which its log is known to match the leader's (see `leaderMatchIndex`). */
  readonly leaderMatchIndex: LogIndex;
}

/** Returns a configuration with the defaults epochd runs with. */
export function defaultRaftConfig(id: NodeId, groupId: GroupId, storage: LogStorage, random: () => number): RaftConfig {
  return {
    id,
    groupId,
    storage,
    random,
    electionTimeoutTicks: 10,
    heartbeatTicks: 1,
    preVote: true,
    checkQuorum: true,
    maxMessageBytes: 1 << 20,
    maxInflightMessages: 256,
    maxUncommittedBytes: 64 << 20,
    maxCommittedBytesPerReady: 64 << 20,
    applied: 0,
  };
}

/** Notable changes, reported through {@link RaftConfig.onEvent}. */
export type RaftEvent =
  | { kind: "became-leader" | "became-follower" | "became-candidate" | "became-pre-candidate"; term: Term; leader: NodeId }
  /** A follower heard from a leader it did not know (it had stepped down to a higher term with no leader yet). */
  | { kind: "leader-known"; term: Term; leader: NodeId }
  | { kind: "conf-change-applied"; confState: ConfState; index: LogIndex }
  | { kind: "snapshot-restored"; index: LogIndex; term: Term };

/** Why a proposal was refused; `leader` names the leader to retry with ("" if unknown). */
export type ProposalResult =
  | { ok: true; index: LogIndex; term: Term }
  | { ok: false; reason: "not-leader" | "leadership-transfer" | "conf-change-pending" | "overloaded"; leader: NodeId };

const transferContext = new TextEncoder().encode("transfer");

/**
 * The context of a leader's last heartbeat before its group goes quiet. A
 * follower that holds everything the leader committed goes quiet too, without
 * answering. Reserved: a read request carrying it is ignored.
 */
export const quiesceContext: Uint8Array = new TextEncoder().encode("quiesce");

/**
 * The context of an empty Append that only moves a follower's commit index,
 * sent to a replicating follower, which has answered (or will answer) the
 * Appends up to its end. Its answer would tell the leader nothing, so a
 * follower that accepts it and already knew it matched that far sends none:
 * one peer message less per write and follower. Lost, it costs nothing; the
 * next Append or heartbeat carries the commit index too.
 */
const commitOnlyContext = new TextEncoder().encode("commit");

type Campaign = "pre-election" | "election" | "transfer";

/**
 * One node of one Raft group: a pure state machine. Inputs only change memory;
 * outputs (messages, entries to persist, entries to apply) are collected for
 * {@link RawNode} to hand out as a Ready.
 */
export class Raft {
  readonly id: NodeId;
  readonly groupId: GroupId;
  readonly log: RaftLog;
  term: Term = 0;
  vote: NodeId = "";
  lead: NodeId = "";
  role: Role = Role.Follower;
  /** Membership as of the applied index. */
  confState: ConfState;
  /**
   * The log index `confState` is as of: its snapshot's, or its last applied
   * conf change's. A conf change at or below it is already part of it: one
   * handed out before a snapshot was installed and applied after must not
   * apply again over the snapshot's membership.
   */
  private confIndex: LogIndex;
  quorum: JointQuorum;
  /** Replication progress of every member; maintained on the leader. */
  readonly progress = new Map<NodeId, Progress>();
  /** Outbox; drained by each Ready. */
  messages: Message[] = [];
  readStates: ReadState[] = [];

  readonly config: RaftConfig;
  private votes = new Map<NodeId, boolean>();
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /**
   * `forgetLeader` moved this follower's election close. A pre-vote it grants
   * meanwhile cancels that (another follower of the lost leader is already
   * campaigning: two campaigns at once split the vote); it then campaigns only
   * after a whole election timeout, if nobody won.
   */
  private fastCampaignPending = false;
  /** The voter a removed leader last tried to hand leadership to (see {@link handOverIfRemoved}). */
  private lastHandOverTarget: NodeId = "";
  /** The node leadership is being handed to, or "". */
  private leadTransferee: NodeId = "";
  /** Index of the latest conf change proposed by this leader; no other until it is applied. */
  private pendingConfIndex: LogIndex = 0;
  /**
   * Conf-change entries in this leader's log that it has not applied, in
   * order. It commits no entry past the first before applying it (see
   * {@link maybeCommit}).
   */
  private unappliedConfIndexes: LogIndex[] = [];
  private uncommittedBytes = 0;
  private readonly readOnly = new ReadOnlyQueue();
  /** Read requests received before this leader committed an entry of its term. */
  private pendingReadIndex: Message[] = [];
  /**
   * Follower: the highest index known to match the current leader's log (from
   * its Appends in this term). Heartbeats commit no further: a follower whose
   * storage was lost, and that took entries from a deposed leader, must not
   * commit those on the word of a leader that still believes the old match.
   */
  private leaderMatchIndex: LogIndex = 0;
  /**
   * Quiescence (only with `config.quiesce`): the group is idle and `tick()`
   * does nothing, so the runtime may stop ticking it. Set on a leader when it
   * sends its quiesce heartbeat, on a follower when it accepts one. Any
   * input other than a tick clears it (a message, a proposal, a read, a
   * transfer, `forgetLeader`, a campaign), as does any role change. Only
   * timing depends on it: no safety rule reads it.
   */
  quiesced = false;
  /** With lazy commit notices: a commit index the followers have not all been told (see {@link commitAdvanced}). */
  private commitNoticeDue = false;

  /** Whether, with lazy commit notices, this leader holds a commit index some follower has not been told. */
  get commitNoticePending(): boolean {
    if (!this.commitNoticeDue || this.role !== Role.Leader) return false;
    const committed = this.log.committed;
    for (const [id, progress] of this.progress) if (id !== this.id && progress.commitSent < committed) return true;
    return false; // every follower was told by an Append or heartbeat since the commit moved
  }

  constructor(config: RaftConfig) {
    assert(config.electionTimeoutTicks > config.heartbeatTicks, "electionTimeoutTicks must exceed heartbeatTicks");
    assert(config.heartbeatTicks > 0 && config.maxInflightMessages > 0, "heartbeatTicks and maxInflightMessages must be positive");
    assert(config.id.length > 0, "node id must be non-empty");
    this.config = config;
    this.id = config.id;
    this.groupId = config.groupId;
    const { hardState, confState } = config.storage.initialState();
    this.log = new RaftLog(config.storage, hardState.commit, config.applied);
    this.catchUpFloor = config.catchUpFloor ?? noCatchUpFloor;
    // A copy made anew starts no lower than its floor's term (see fenceTerm).
    const fenced = this.catchUpFloor.term > hardState.term;
    this.term = fenced ? this.catchUpFloor.term : hardState.term;
    this.vote = fenced ? "" : hardState.vote;
    this.confState = confState;
    this.confIndex = this.log.snapshot().metadata.index;
    this.quorum = quorumOf(confState);
    this.replayAppliedConfChanges();
    if (config.resume !== undefined && !fenced) {
      this.resumeQuiet(config.resume);
      return;
    }
    this.becomeFollower(this.term, "");
    // A node that just started knows of no leader: let its first timeout fall
    // in [T/2, 3T/2) rather than [T, 2T), so a new cluster elects sooner.
    // PreVote and the leader lease keep this from disturbing a running group.
    this.electionElapsed = Math.floor(config.electionTimeoutTicks / 2);
  }

  /**
   * Restores the quiet role a clean unload recorded (see {@link QuietState}).
   * A leader keeps its term: it was elected in it, nobody else can have been,
   * and its log is exactly what it held (the unload waited until everything
   * was persisted, committed and applied). Its followers' progress restarts
   * from probing, as after any election; its next append finds their match.
   */
  private resumeQuiet(state: QuietState): void {
    const last = this.log.lastIndex();
    assert(this.config.quiesce === true, "resuming a quiet node needs quiesce on");
    assert(state.leader !== "", "resuming a quiet node needs its leader");
    assert(this.log.committed === last && this.log.applied === last, `resuming a quiet node needs everything applied (applied ${this.log.applied}, committed ${this.log.committed}, last ${last})`);
    // No role-change event: the role is the one it had, not a new one.
    this.reset(this.term);
    this.lead = state.leader;
    if (state.leader === this.id) {
      assert(this.promotable() && this.log.term(last) === this.term, "a quiet leader resumes only in the term of its last entry, as a voter");
      this.role = Role.Leader;
      this.progress.get(this.id)?.becomeReplicate();
      this.pendingConfIndex = last;
    } else {
      this.role = Role.Follower;
      this.leaderMatchIndex = Math.min(state.leaderMatchIndex, last);
    }
    this.quiesced = true;
  }

  /**
   * This node's role, when it is quiet and may be unloaded and later resumed
   * with {@link RaftConfig.resume}: everything committed and applied, no
   * read, transfer or membership change pending. Undefined otherwise.
   */
  quietState(): QuietState | undefined {
    const last = this.log.lastIndex();
    if (!this.quiesced || this.lead === "" || this.log.committed !== last || this.log.applied !== last) return undefined;
    if (this.log.unstable.entries.length > 0 || this.log.unstable.snapshot !== null || this.messages.length > 0 || this.readStates.length > 0) return undefined;
    if (this.role === Role.Leader) {
      if (!this.canQuiesce()) return undefined;
    } else if (this.role !== Role.Follower) {
      return undefined;
    }
    return { leader: this.lead, leaderMatchIndex: this.leaderMatchIndex };
  }

  /**
   * Rebuilds the membership from conf changes after the stored snapshot, up
   * to the applied index. Storage may keep entries behind its snapshot (for
   * followers slightly behind); those are already in the snapshot's
   * membership and must not be applied to it again.
   */
  private replayAppliedConfChanges(): void {
    const from = Math.max(this.log.firstIndex(), this.log.snapshot().metadata.index + 1);
    for (let index = from; index <= this.log.applied; index++) {
      const entry = this.log.slice(index, index + 1, Number.MAX_SAFE_INTEGER)?.[0];
      if (entry?.type === EntryType.ConfChange) this.applyConfChangeEntry(entry);
    }
  }

  private emit(event: RaftEvent): void {
    this.config.onEvent?.(event);
  }

  /** Whether this node may campaign: it is a voter of the current configuration. */
  promotable(): boolean {
    return this.quorum.has(this.id);
  }

  // ---- role transitions -------------------------------------------------------------------------

  private reset(term: Term): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = "";
    }
    this.lead = "";
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout =
      this.config.electionTimeoutTicks + Math.floor(this.config.random() * this.config.electionTimeoutTicks);
    this.leadTransferee = "";
    this.votes = new Map();
    this.pendingConfIndex = 0;
    this.unappliedConfIndexes = [];
    this.uncommittedBytes = 0;
    this.readOnly.clear();
    this.pendingReadIndex = [];
    this.leaderMatchIndex = 0;
    this.quiesced = false;
    this.commitNoticeDue = false;
    this.fastCampaignPending = false;
    this.resetProgress();
  }

  private resetProgress(): void {
    this.progress.clear();
    const next = this.log.lastIndex() + 1;
    const learners = new Set([...this.confState.learners, ...this.confState.learnersNext]);
    for (const id of [...this.quorum.ids(), ...learners]) {
      const progress = new Progress(next, this.config.maxInflightMessages, !this.quorum.has(id), true);
      if (id === this.id) progress.match = this.log.lastIndex();
      this.progress.set(id, progress);
    }
  }

  becomeFollower(term: Term, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = Role.Follower;
    this.emit({ kind: "became-follower", term, leader: lead });
  }

  private becomePreCandidate(): void {
    assert(this.role !== Role.Leader, "a leader cannot become a pre-candidate");
    // Neither the term nor the vote changes: a pre-election is harmless to lose.
    this.votes = new Map();
    this.lead = "";
    this.fastCampaignPending = false;
    this.role = Role.PreCandidate;
    this.emit({ kind: "became-pre-candidate", term: this.term, leader: "" });
  }

  private becomeCandidate(): void {
    assert(this.role !== Role.Leader, "a leader cannot become a candidate");
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
    this.emit({ kind: "became-candidate", term: this.term, leader: "" });
  }

  private becomeLeader(): void {
    assert(this.role === Role.Candidate, "only a candidate becomes leader");
    this.reset(this.term);
    this.lead = this.id;
    this.role = Role.Leader;
    this.progress.get(this.id)?.becomeReplicate();
    // Conf changes in the uncommitted tail may be pending: allow no new one until they apply.
    this.pendingConfIndex = this.log.lastIndex();
    this.unappliedConfIndexes = this.unappliedConfChanges(this.log.lastIndex()).map((entry) => entry.index);
    // An empty entry of the new term: committing it commits every earlier entry.
    this.appendEntries([{ term: this.term, index: 0, type: EntryType.Normal, data: new Uint8Array(0) }]);
    this.emit({ kind: "became-leader", term: this.term, leader: this.id });
  }

  // ---- clock ------------------------------------------------------------------------------------

  /** Advances the logical clock by one tick; nothing happens while quiesced. */
  tick(): void {
    if (this.quiesced) return;
    if (this.role === Role.Leader) this.tickLeader();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(this.config.preVote ? "pre-election" : "election");
      // One that may not campaign (catching up, holding campaigns) heard from no leader for an election
      // timeout all the same: it forgets it, so its lease no longer turns away a candidate's vote request.
      if (this.role === Role.Follower) this.lead = "";
    }
  }

  private tickLeader(): void {
    if (this.commitNoticeDue) this.sendDueCommitNotices();
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.config.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.config.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, "");
        return;
      }
      this.leadTransferee = "";
      this.maybeLeaveJoint();
      this.handOverIfRemoved();
    }
    if (this.heartbeatElapsed >= this.config.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      if (this.config.quiesce === true && this.canQuiesce()) {
        this.broadcastHeartbeat(quiesceContext);
        this.quiesced = true;
        return;
      }
      this.broadcastHeartbeat(this.readOnly.lastContext());
    }
  }

  /**
   * Whether this leader has nothing in flight: every entry, the last one of
   * its own term, is committed, applied and stored on every member; no read,
   * transfer or membership change is pending. Then nothing would happen on
   * its ticks but heartbeats.
   */
  private canQuiesce(): boolean {
    const last = this.log.lastIndex();
    if (this.log.committed !== last || this.log.applied !== last || this.log.term(last) !== this.term) return false;
    if (this.leadTransferee !== "" || this.quorum.isJoint() || this.pendingConfIndex > this.log.applied) return false;
    if (this.readOnly.pending() > 0 || this.pendingReadIndex.length > 0) return false;
    for (const progress of this.progress.values()) if (progress.match !== last) return false;
    return true;
  }

  /**
   * Ends quiescence. A leader restarts its clocks and its CheckQuorum round
   * (nobody was heard from while it slept), so it steps down within an
   * election timeout if it lost its quorum meanwhile.
   */
  private wake(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    if (this.role !== Role.Leader) return;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    for (const [id, progress] of this.progress) progress.recentActive = id === this.id;
  }

  /** Whether a quorum was heard from since the last check; clears the marks for the next round. */
  private quorumActive(): boolean {
    const active = this.quorum.voteResult((id) => (id === this.id ? true : this.progress.get(id)?.recentActive)) === VoteResult.Won;
    for (const [id, progress] of this.progress) progress.recentActive = id === this.id;
    return active;
  }

  /**
   * The transport lost its connection to the leader (say, its process died):
   * stop trusting it, so this follower grants votes again and campaigns within
   * a few ticks rather than a whole election timeout. Every follower learns of
   * the loss at about the same moment, so they campaign in the order of their
   * ids, a slot of a few ticks each: at random ticks of one short spread, two
   * of them campaigned in the same tick in about one failover of four, split
   * the vote, and waited a whole election timeout (1 to 2 s). Safe at any
   * time: it only changes timing.
   */
  forgetLeader(): void {
    this.wake();
    if (this.role !== Role.Follower || this.lead === "") return;
    const lost = this.lead;
    this.lead = "";
    const voters = [...new Set([...this.confState.voters, ...this.confState.votersOutgoing])].filter((id) => id !== lost).sort();
    const rank = Math.max(0, voters.indexOf(this.id));
    const slotTicks = Math.max(2, Math.floor(this.config.electionTimeoutTicks / 8));
    const remaining = 1 + rank * slotTicks + Math.floor(this.config.random() * (slotTicks - 1));
    this.electionElapsed = Math.max(this.electionElapsed, this.randomizedElectionTimeout - remaining);
    this.fastCampaignPending = true;
  }

  // ---- elections ---------------------------------------------------------------------------------

  /**
   * Set while the application cannot apply (it restores a snapshot): this node
   * starts no election, by its timeout, a transfer or a caller, but still votes.
   */
  campaignsHeld = false;

  /**
   * Set while this node may have forgotten votes it cast and entries it
   * acknowledged (its storage was made anew from the bootstrap configuration
   * of a group that may have run before): it grants no vote or pre-vote and
   * starts no election, since an election would vote for itself.
   */
  votesHeld = false;

  /**
   * For a copy made anew (its homeserver hosted the group at a member's
   * request), that member's commit index and the term of its last entry
   * then; index 0: none. Catching up from the log, a copy applies the group's
   * old memberships one after another: made from the group's first entry, it
   * may find itself the only voter and elect itself, or vote for a member
   * lagging behind its removal and re-addition that still counts it (the
   * acknowledgements its lost copy gave count no more). So until it has
   * applied up to `index` it starts no election, and votes only for a
   * candidate whose log is at least as up to date as (`term`, `index`): such a
   * log holds every entry committed when the copy was asked for (`term` is at
   * least the term that committed them).
   */
  catchUpFloor: CatchUpFloor = noCatchUpFloor;

  /**
   * Moves a copy made anew to its catch-up floor's term, if it is behind it:
   * the member that asked for the copy holds an entry of that term, so every
   * leader of an earlier term was deposed, and one cut off with this copy
   * alone must not have its entries acknowledged here (it may still count
   * this homeserver as a voter, from before its copy was lost). The group's
   * leader is in that term or a later one.
   */
  fenceTerm(term: Term): void {
    if (term > this.term) this.becomeFollower(term, "");
  }

  /** Whether this node knows no membership yet, or has not applied up to its {@link catchUpFloor}. */
  catchingUp(): boolean {
    const knowsMembership = this.confState.voters.length > 0 || this.confState.votersOutgoing.length > 0;
    return !knowsMembership || this.log.applied < this.catchUpFloor.index;
  }

  /**
   * Set while this node does not know how far the group's terms went (it lost
   * its storage): it steps no message, since an answer to a leader deposed
   * meanwhile could commit over entries it had acknowledged.
   */
  termUnknown = false;

  /** Starts an election (or a pre-election) if this node may. */
  hup(campaign: Campaign): void {
    this.wake();
    if (this.role === Role.Leader || !this.promotable() || this.campaignsHeld || this.votesHeld || this.catchingUp()) return;
    if (this.hasUnappliedConfChanges()) return;
    this.campaign(campaign);
  }

  private hasUnappliedConfChanges(): boolean {
    return this.committedUnappliedConfChanges().length > 0;
  }

  /** Conf change entries this node knows committed but has not applied. */
  private committedUnappliedConfChanges(): Entry[] {
    return this.unappliedConfChanges(this.log.committed);
  }

  /** Conf change entries up to `upTo` that this node has not applied (nor skipped, being older than its membership). */
  private unappliedConfChanges(upTo: LogIndex): Entry[] {
    const from = Math.max(this.log.applied, this.confIndex) + 1;
    if (upTo < from) return [];
    const entries = this.log.slice(from, upTo + 1, Number.MAX_SAFE_INTEGER) ?? [];
    return entries.filter((entry) => entry.type === EntryType.ConfChange);
  }

  /**
   * The membership this node would campaign and count votes with: the applied
   * one with the conf changes it knows committed applied too, since it starts
   * no election before it applied them (see {@link hup}).
   */
  campaignConfState(): ConfState {
    let conf = this.confState;
    for (const entry of this.committedUnappliedConfChanges()) conf = confAfterEntry(conf, entry.data) ?? conf;
    return conf;
  }

  /** Whether this node's log holds a conf change it has not applied, committed or not. */
  holdsUnappliedConfChange(): boolean {
    return this.unappliedConfChanges(this.log.lastIndex()).length > 0;
  }

  private campaign(campaign: Campaign): void {
    let voteTerm: Term;
    let type: MessageType;
    if (campaign === "pre-election") {
      this.becomePreCandidate();
      voteTerm = this.term + 1;
      type = MessageType.PreVote;
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
      type = MessageType.Vote;
    }
    if (this.poll(this.id, true) === VoteResult.Won) {
      this.winElection(campaign);
      return;
    }
    const context = campaign === "transfer" ? transferContext : new Uint8Array(0);
    for (const id of this.quorum.ids()) {
      if (id === this.id) continue;
      this.send({ type, to: id, term: voteTerm, index: this.log.lastIndex(), logTerm: this.log.lastTerm(), context });
    }
  }

  private winElection(campaign: Campaign): void {
    if (campaign === "pre-election") {
      this.campaign("election");
    } else {
      this.becomeLeader();
      this.broadcastAppend();
    }
  }

  private poll(id: NodeId, granted: boolean): VoteResult {
    if (!this.votes.has(id)) this.votes.set(id, granted);
    return this.quorum.voteResult((voter) => this.votes.get(voter));
  }

  private handleVoteRequest(m: Message): void {
    const preVote = m.type === MessageType.PreVote;
    // A copy that knows no membership yet (hosted empty, waiting for its first snapshot) never votes: its
    // homeserver may have been a voter of this group, removed, wiped and asked to host it again, and a
    // member lagging behind the removal still counts it; an empty log's vote could elect that member
    // without the entries committed since (the multi-group simulator found it, seed 700389).
    // One catching up to its catch-up floor votes only for a log at least as up to date as the floor.
    const floor = this.catchUpFloor;
    const mayVote = !this.catchingUp() || (floor.index > 0 && (m.logTerm > floor.term || (m.logTerm === floor.term && m.index >= floor.index)));
    const canVote = mayVote && !this.votesHeld && (this.vote === m.from || (this.vote === "" && this.lead === "") || (preVote && m.term > this.term));
    const responseType = preVote ? MessageType.PreVoteResponse : MessageType.VoteResponse;
    const grantable = canVote && this.log.isUpToDate(m.index, m.logTerm);
    if (grantable && preVote && this.role === Role.PreCandidate) {
      this.settlePreCandidates(m);
      return;
    }
    if (grantable) {
      // A granted pre-vote carries the term it was asked for, so the pre-candidate counts it.
      this.send({ type: responseType, to: m.from, term: m.term, reject: false });
      if (!preVote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      } else if (this.fastCampaignPending && this.role === Role.Follower) {
        this.fastCampaignPending = false;
        this.electionElapsed = 0;
      }
    } else {
      this.send({ type: responseType, to: m.from, term: this.term, reject: true });
    }
  }

  /**
   * Another pre-candidate, whose log is at least as up to date as ours, asks
   * for our pre-vote. Both going on would make two candidates that each vote
   * for itself: a split vote, and a whole randomized timeout (1-2 s by
   * default) before the next try. (Followers of a lost leader that noticed it
   * at different moments end up campaigning together despite their staggered
   * slots.) A pre-vote binds nobody, so the tie is settled here: the better
   * log runs, and between equal logs the lower id; the other grants its
   * pre-vote and stands down for an election timeout.
   */
  private settlePreCandidates(m: Message): void {
    const sameLog = m.index === this.log.lastIndex() && m.logTerm === this.log.lastTerm();
    if (sameLog && this.id < m.from) {
      this.send({ type: MessageType.PreVoteResponse, to: m.from, term: this.term, reject: true });
      return;
    }
    this.send({ type: MessageType.PreVoteResponse, to: m.from, term: m.term, reject: false });
    this.becomeFollower(this.term, "");
  }

  private handleVoteResponse(m: Message): void {
    const expected = this.role === Role.PreCandidate ? MessageType.PreVoteResponse : MessageType.VoteResponse;
    if (m.type !== expected) return;
    const result = this.poll(m.from, !m.reject);
    if (result === VoteResult.Won) this.winElection(this.role === Role.PreCandidate ? "pre-election" : "election");
    else if (result === VoteResult.Lost) this.becomeFollower(this.term, "");
  }

  // ---- message handling --------------------------------------------------------------------------

  /** Handles a message from another node of this group. */
  step(m: Message): void {
    if (m.groupId !== this.groupId || m.to !== this.id || m.from === this.id || m.from === "" || this.termUnknown) return;
    if (this.quiesced) {
      this.wake();
      // Woken by someone else (a candidate, say): wake the leader too, so its heartbeats resume
      // before this follower's election timer, now running again, runs out.
      if (this.role === Role.Follower && this.lead !== "" && m.from !== this.lead) {
        this.send({ type: MessageType.HeartbeatResponse, to: this.lead, index: this.leaderMatchIndex });
      }
    }
    if (!this.stepTerm(m)) return;
    switch (m.type) {
      case MessageType.Vote:
      case MessageType.PreVote:
        this.handleVoteRequest(m);
        return;
      default:
        break;
    }
    if (this.role === Role.Leader) this.stepLeader(m);
    else if (this.role === Role.Follower) this.stepFollower(m);
    else this.stepCandidate(m);
  }

  /** Applies the term rules; returns whether the message should be handled further. */
  private stepTerm(m: Message): boolean {
    if (m.term > this.term) {
      const isVoteRequest = m.type === MessageType.Vote || m.type === MessageType.PreVote;
      if (isVoteRequest) {
        const forced = bytesEqual(m.context, transferContext);
        const inLease = this.config.checkQuorum && this.lead !== "" && this.electionElapsed < this.config.electionTimeoutTicks;
        // Heard from a leader recently: a vote request must be a disrupting node. Ignore it.
        if (!forced && inLease) return false;
      }
      if (m.type === MessageType.PreVote) return true;
      if (m.type === MessageType.PreVoteResponse && !m.reject) return true;
      const fromLeader = m.type === MessageType.Append || m.type === MessageType.Heartbeat || m.type === MessageType.Snapshot;
      this.becomeFollower(m.term, fromLeader ? m.from : "");
      return true;
    }
    if (m.term < this.term) {
      const tellTerm = this.config.checkQuorum || this.config.preVote || !this.promotable();
      if (tellTerm && (m.type === MessageType.Heartbeat || m.type === MessageType.Append)) {
        // A stale leader cut off by a partition: tell it the term so it steps down. Without
        // CheckQuorum and PreVote, a voter's own campaign spreads its term instead; one that
        // cannot campaign (a learner, or a voter whose applied membership does not list it yet)
        // would otherwise never hear from the leader again.
        this.send({ type: MessageType.AppendResponse, to: m.from, term: this.term });
      } else if (m.type === MessageType.PreVote) {
        this.send({ type: MessageType.PreVoteResponse, to: m.from, term: this.term, reject: true });
      }
      return false;
    }
    return true;
  }

  private followLeader(leader: NodeId): void {
    if (this.lead === leader) return;
    this.lead = leader;
    this.emit({ kind: "leader-known", term: this.term, leader });
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
        this.electionElapsed = 0;
        this.followLeader(m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.followLeader(m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snapshot:
        this.electionElapsed = 0;
        this.followLeader(m.from);
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        this.hup("transfer");
        return;
      case MessageType.ReadIndexResponse:
        this.readStates.push({ index: m.index, context: m.context });
        return;
      default:
        return;
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
      case MessageType.Heartbeat:
      case MessageType.Snapshot:
        // Someone won this term.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case MessageType.VoteResponse:
      case MessageType.PreVoteResponse:
        this.handleVoteResponse(m);
        return;
      default:
        return;
    }
  }

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.leaderMatchIndex = Math.max(this.leaderMatchIndex, this.log.committed);
      this.send({ type: MessageType.AppendResponse, to: m.from, index: this.log.committed });
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      const news = lastNew > this.leaderMatchIndex || !bytesEqual(m.context, commitOnlyContext);
      // Within one term the leader's log only grows, so an older Append arriving late lowers nothing.
      this.leaderMatchIndex = Math.max(this.leaderMatchIndex, lastNew);
      if (news) this.send({ type: MessageType.AppendResponse, to: m.from, index: lastNew });
      return;
    }
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send({
      type: MessageType.AppendResponse,
      to: m.from,
      index: m.index,
      reject: true,
      rejectHint: hint.index,
      rejectHintTerm: hint.term,
    });
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.leaderMatchIndex));
    const quiesce = bytesEqual(m.context, quiesceContext);
    if (quiesce && this.leaderMatchIndex >= m.commit && this.log.committed === m.commit) {
      // The leader went quiet and this follower holds all it committed: go quiet without answering
      // (an answer would wake the leader). Short of that, answer, and the leader wakes to catch us up.
      this.quiesced = true;
      return;
    }
    // `index` tells the leader how far this follower knows it matches, so it sends an Append if that is short.
    this.send({ type: MessageType.HeartbeatResponse, to: m.from, index: this.leaderMatchIndex, context: quiesce ? new Uint8Array(0) : m.context });
  }

  private handleSnapshot(m: Message): void {
    const snapshot = m.snapshot;
    if (snapshot !== null && this.restore(snapshot)) {
      this.leaderMatchIndex = this.log.lastIndex();
      this.send({ type: MessageType.AppendResponse, to: m.from, index: this.log.lastIndex() });
    } else {
      this.send({ type: MessageType.AppendResponse, to: m.from, index: this.log.committed });
    }
  }

  /** Installs a leader's snapshot if it brings news; returns whether it did. */
  private restore(snapshot: Snapshot): boolean {
    const { index, term, confState } = snapshot.metadata;
    if (index <= this.log.committed) return false;
    if (this.log.matchTerm(index, term)) {
      // Our log already has the snapshot's last entry: keep the entries after it.
      this.leaderMatchIndex = Math.max(this.leaderMatchIndex, index);
      this.log.commitTo(index);
      return false;
    }
    this.log.restore(snapshot);
    this.confState = confState;
    this.confIndex = index;
    this.quorum = quorumOf(confState);
    this.resetProgress();
    this.emit({ kind: "snapshot-restored", index, term });
    return true;
  }

  // ---- leader ------------------------------------------------------------------------------------

  private stepLeader(m: Message): void {
    const progress = this.progress.get(m.from);
    switch (m.type) {
      case MessageType.ReadIndex:
        this.handleReadIndex(m);
        return;
      case MessageType.Propose:
        // Forwarded by a follower; refusals are dropped, the proposer retries.
        for (const entry of m.entries) if (entry.type === EntryType.Normal) this.proposeEntry({ ...entry, term: 0, index: 0 });
        return;
      case MessageType.AppendResponse:
        if (progress !== undefined) this.handleAppendResponse(m, progress);
        return;
      case MessageType.HeartbeatResponse:
        if (progress !== undefined) this.handleHeartbeatResponse(m, progress);
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(m: Message, progress: Progress): void {
    progress.recentActive = true;
    if (m.reject) {
      if (m.rejectHint < progress.match) {
        progress.forgetMatch(m.rejectHint);
        this.sendAppend(m.from, true);
        return;
      }
      let probeHint = m.rejectHint;
      if (m.rejectHintTerm > 0) probeHint = this.log.findConflictByTerm(m.rejectHint, m.rejectHintTerm).index;
      if (progress.maybeDecrTo(m.index, probeHint)) {
        if (progress.state === "replicate") progress.becomeProbe();
        this.sendAppend(m.from, true);
      }
      return;
    }
    const wasPaused = progress.isPaused();
    const updated = progress.maybeUpdate(m.index);
    // A probe answered at the known match also ends probing.
    if (!updated && !(progress.state === "probe" && progress.match === m.index)) return;
    if (progress.state === "probe") progress.becomeReplicate();
    else if (progress.state === "snapshot" && progress.match >= progress.pendingSnapshot) {
      progress.becomeProbe();
      progress.becomeReplicate();
    } else if (progress.state === "replicate") progress.freeInflightsUpTo(m.index);

    if (this.maybeCommit()) this.commitAdvanced();
    else if (wasPaused) this.sendAppend(m.from, true);
    // Keep the pipeline full.
    for (let sent = 0; sent < this.config.maxInflightMessages && this.sendAppend(m.from, false); sent++);
    if (m.from === this.leadTransferee && progress.match === this.log.lastIndex()) {
      this.send({ type: MessageType.TimeoutNow, to: m.from });
    }
  }

  private handleHeartbeatResponse(m: Message, progress: Progress): void {
    progress.recentActive = true;
    progress.probeSent = false;
    if (progress.state === "replicate" && progress.isPaused()) progress.freeFirstInflight();
    if (progress.match < this.log.lastIndex() || m.index < Math.min(progress.match, this.log.committed)) this.sendAppend(m.from, true);
    if (m.context.byteLength === 0) return;
    const released = this.readOnly.acknowledge(m.context, m.from, (acks) => this.quorum.voteResult((id) => (acks.has(id) ? true : undefined)) === VoteResult.Won);
    for (const request of released) this.answerRead(request.from, request.index, request.context);
  }

  /**
   * Moves the commit index to what a quorum stores, but only by counting an
   * entry of this term, and never past a conf change this leader has not
   * applied. A membership takes effect when applied, so without that cap a
   * leader still counting the previous membership could commit entries after
   * the change with a quorum the new membership would not accept. With it,
   * every entry after a conf change is committed by a quorum of the
   * membership it makes; so a voter of a two-voter membership that has
   * applied it, with no later conf change in its log, holds every committed
   * entry (what rebuilding the other voter's lost copy in place relies on).
   */
  private maybeCommit(): boolean {
    let index = this.quorum.committedIndex((id) => this.progress.get(id)?.match);
    if (index <= this.log.committed || this.log.term(index) !== this.term) return false;
    // An entry of this term at `index` proves everything up to it committed; mark only up to the cap.
    const cap = this.unappliedConfIndexes[0];
    if (cap !== undefined && cap < index) index = cap;
    if (index <= this.log.committed) return false;
    this.log.commitTo(index);
    this.releasePendingReads();
    return true;
  }

  /**
   * Sends an Append (or a snapshot) to `to` if its progress allows; returns
   * whether it sent. `commitNotice`: sent because the commit index moved.
   */
  private sendAppend(to: NodeId, sendIfEmpty: boolean, commitNotice = false): boolean {
    const progress = this.progress.get(to);
    if (progress === undefined || to === this.id || progress.isPaused()) return false;
    const prevIndex = progress.next - 1;
    const prevTerm = this.log.term(prevIndex);
    const lastIndex = this.log.lastIndex();
    const entries = prevTerm === undefined ? undefined : this.log.slice(progress.next, lastIndex + 1, this.config.maxMessageBytes);
    if (prevTerm === undefined || entries === undefined) return this.sendSnapshot(to, progress);
    if (entries.length === 0 && !sendIfEmpty) return false;
    // Nothing to learn from the answer: a replicating follower has answered, or will answer, the Appends
    // up to prevIndex. (If such an answer is lost, the next heartbeat's answer brings an unmarked probe.)
    const commitOnly = commitNotice && entries.length === 0 && progress.state === "replicate";
    this.send({ type: MessageType.Append, to, index: prevIndex, logTerm: prevTerm, entries, commit: this.log.committed, ...(commitOnly ? { context: commitOnlyContext } : {}) });
    progress.sentEntries(entries.length, prevIndex + entries.length);
    progress.commitSent = Math.max(progress.commitSent, this.log.committed);
    // Unanswered, it does not stand in for a heartbeat (whose answer shows the follower alive).
    if (!commitOnly) progress.appendSinceHeartbeat = true;
    return true;
  }

  private sendSnapshot(to: NodeId, progress: Progress): boolean {
    if (!progress.recentActive) return false;
    const snapshot = this.log.snapshot();
    if (snapshot.metadata.index === 0) return false;
    this.send({ type: MessageType.Snapshot, to, snapshot });
    progress.becomeSnapshot(snapshot.metadata.index);
    return true;
  }

  private broadcastAppend(): void {
    for (const id of this.progress.keys()) if (id !== this.id) this.sendAppend(id, true);
  }

  /**
   * The commit index moved on this leader: tells the followers now, or with
   * {@link RaftConfig.lazyCommitNotices} leaves it to the next Append or tick.
   */
  private commitAdvanced(): void {
    if (this.config.lazyCommitNotices === true) this.commitNoticeDue = true;
    else this.broadcastCommit();
  }

  /**
   * Sends now the commit notices lazy notices left for the next tick: for a
   * runtime that tells idle followers sooner than a tick, when no Append
   * came to carry the commit meanwhile. Does nothing, and returns false,
   * when none is due.
   */
  flushCommitNotices(): boolean {
    if (!this.commitNoticePending) return false;
    this.sendDueCommitNotices();
    return true;
  }

  /** Tells the followers no Append or heartbeat has told the commit index since it moved. */
  private sendDueCommitNotices(): void {
    this.commitNoticeDue = false;
    const committed = this.log.committed;
    for (const [id, progress] of this.progress) if (id !== this.id && progress.commitSent < committed) this.sendAppend(id, true, true);
  }

  /** Tells every follower the new commit index (with any entries it has not been sent yet). */
  private broadcastCommit(): void {
    for (const id of this.progress.keys()) if (id !== this.id) this.sendAppend(id, true, true);
  }

  /**
   * Sends a heartbeat to every follower, except, for a plain heartbeat (no
   * read or quiesce context), those that got an Append since the last tick
   * and replicate unpaused: the Append already told them the leader lives
   * and what is committed, and its answer tells the leader they do. Under
   * load that spares every busy group its heartbeat traffic.
   */
  private broadcastHeartbeat(context: Uint8Array): void {
    const plain = context.byteLength === 0;
    for (const [id, progress] of this.progress) {
      if (id === this.id) continue;
      const skip = plain && progress.appendSinceHeartbeat && progress.state === "replicate" && !progress.isPaused();
      progress.appendSinceHeartbeat = false;
      if (skip) continue;
      const commit = Math.min(progress.match, this.log.committed);
      this.send({ type: MessageType.Heartbeat, to: id, commit, context });
      progress.commitSent = Math.max(progress.commitSent, commit);
    }
  }

  /** Appends entries to the leader's log, assigning their term and index. */
  private appendEntries(entries: Entry[]): { index: LogIndex; term: Term } {
    let index = this.log.lastIndex();
    const stamped = entries.map((entry) => ({ ...entry, term: this.term, index: ++index }));
    const last = this.log.append(stamped);
    this.progress.get(this.id)?.maybeUpdate(last);
    this.maybeCommit();
    return { index: last, term: this.term };
  }

  // ---- proposals ---------------------------------------------------------------------------------

  /** Proposes application data; only a leader accepts. */
  propose(data: Uint8Array): ProposalResult {
    return this.proposeEntry({ term: 0, index: 0, type: EntryType.Normal, data });
  }

  /**
   * Proposes `data` here if this node leads, or forwards it to the leader.
   * Fire and forget: returns false only when no leader is known; the caller
   * learns the outcome from the applied log.
   */
  proposeAnywhere(data: Uint8Array): boolean {
    this.wake();
    if (this.role === Role.Leader) return this.propose(data).ok;
    if (this.lead === "" || this.lead === this.id) return false;
    this.send({ type: MessageType.Propose, to: this.lead, entries: [{ term: 0, index: 0, type: EntryType.Normal, data }] });
    return true;
  }

  /** Proposes a membership change; one at a time, and only if it applies to the current configuration. */
  proposeConfChange(change: ConfChange): ProposalResult {
    if (this.role === Role.Leader && this.pendingConfIndex > this.log.applied) {
      return { ok: false, reason: "conf-change-pending", leader: this.lead };
    }
    if (this.role === Role.Leader && !applyConfChange(this.confState, change).ok) {
      return { ok: false, reason: "conf-change-pending", leader: this.lead };
    }
    const result = this.proposeEntry({ term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(change) });
    if (result.ok) {
      this.pendingConfIndex = result.index;
      this.unappliedConfIndexes.push(result.index);
    }
    return result;
  }

  private proposeEntry(entry: Entry): ProposalResult {
    // A proposal wakes a quiet group, also on a follower: if its leader is gone, it will notice.
    this.wake();
    if (this.role !== Role.Leader) return { ok: false, reason: "not-leader", leader: this.lead };
    if (this.leadTransferee !== "") return { ok: false, reason: "leadership-transfer", leader: this.lead };
    const bytes = entryBytes(entry);
    const limit = this.config.maxUncommittedBytes;
    if (limit > 0 && this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > limit) {
      return { ok: false, reason: "overloaded", leader: this.lead };
    }
    this.uncommittedBytes += bytes;
    const result = this.appendEntries([entry]);
    this.broadcastAppend();
    return { ok: true, ...result };
  }

  /** Hands leadership to `to` once it has caught up; proposals are refused meanwhile. */
  transferLeadership(to: NodeId): void {
    this.wake();
    if (this.role !== Role.Leader) return;
    if (to === this.id || !this.quorum.has(to) || this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.electionElapsed = 0;
    const progress = this.progress.get(to);
    if (progress !== undefined && progress.match === this.log.lastIndex()) {
      this.send({ type: MessageType.TimeoutNow, to });
    } else {
      this.sendAppend(to, true);
    }
  }

  // ---- linearizable reads ------------------------------------------------------------------------

  /** Requests a read index; the answer comes as a ReadState once the leader confirms its leadership. */
  readIndex(context: Uint8Array): void {
    this.wake();
    const request = message({ type: MessageType.ReadIndex, groupId: this.groupId, from: this.id, to: this.id, term: this.term, context });
    if (this.role === Role.Leader) this.handleReadIndex(request);
    else if (this.lead !== "") this.send({ type: MessageType.ReadIndex, to: this.lead, context });
  }

  private handleReadIndex(m: Message): void {
    if (bytesEqual(m.context, quiesceContext)) return; // reserved for quiescence
    if (this.quorum.incoming.size === 1 && this.quorum.outgoing.size <= 1 && this.quorum.has(this.id)) {
      this.answerRead(m.from, this.log.committed, m.context);
      return;
    }
    if (this.log.term(this.log.committed) !== this.term) {
      // The commit index is not known to be current until an entry of this term commits.
      if (this.pendingReadIndex.length < 4096) this.pendingReadIndex.push(m);
      return;
    }
    this.readOnly.add(this.log.committed, m.from, m.context, this.id);
    this.broadcastHeartbeat(m.context);
  }

  private releasePendingReads(): void {
    if (this.pendingReadIndex.length === 0 || this.log.term(this.log.committed) !== this.term) return;
    const pending = this.pendingReadIndex;
    this.pendingReadIndex = [];
    for (const m of pending) this.handleReadIndex(m);
  }

  private answerRead(from: NodeId, index: LogIndex, context: Uint8Array): void {
    if (from === this.id) this.readStates.push({ index, context });
    else this.send({ type: MessageType.ReadIndexResponse, to: from, index, context });
  }

  // ---- applying and membership -------------------------------------------------------------------

  /** Called once committed entries up to `index` are applied; conf changes among them take effect. */
  appliedTo(index: LogIndex, entries: readonly Entry[]): void {
    const capped = this.unappliedConfIndexes.length > 0;
    for (const entry of entries) {
      if (entry.type === EntryType.ConfChange) {
        this.liftCommitCap(entry.index);
        this.applyConfChangeEntry(entry);
      }
      if (this.role === Role.Leader) this.uncommittedBytes = Math.max(0, this.uncommittedBytes - entryBytes(entry));
    }
    this.liftCommitCap(index);
    this.log.appliedTo(index);
    // The cap on the commit index may have moved (see maybeCommit).
    if (capped && this.role === Role.Leader && this.maybeCommit()) this.commitAdvanced();
    this.maybeLeaveJoint();
  }

  /** Forgets the unapplied conf changes up to `applied` (see maybeCommit). */
  private liftCommitCap(applied: LogIndex): void {
    while (this.unappliedConfIndexes[0] !== undefined && this.unappliedConfIndexes[0] <= applied) this.unappliedConfIndexes.shift();
  }

  /** A leader leaves a joint configuration as soon as entering it is applied. */
  private maybeLeaveJoint(): void {
    if (this.role === Role.Leader && this.quorum.isJoint() && this.pendingConfIndex <= this.log.applied) {
      this.proposeConfChange({ steps: [], leaveJoint: true });
    }
  }

  private applyConfChangeEntry(entry: Entry): void {
    if (entry.index <= this.confIndex) return;
    this.confIndex = entry.index;
    const confState = confAfterEntry(this.confState, entry.data);
    if (confState === undefined) return;
    this.switchToConfig(confState);
    this.emit({ kind: "conf-change-applied", confState, index: entry.index });
  }

  private switchToConfig(confState: ConfState): void {
    this.confState = confState;
    this.quorum = quorumOf(confState);
    const members = new Set([...this.quorum.ids(), ...confState.learners, ...confState.learnersNext]);
    for (const id of this.progress.keys()) if (!members.has(id)) this.progress.delete(id);
    const added: NodeId[] = [];
    for (const id of members) {
      const existing = this.progress.get(id);
      if (existing !== undefined) existing.isLearner = !this.quorum.has(id);
      else {
        this.progress.set(id, new Progress(this.log.lastIndex() + 1, this.config.maxInflightMessages, !this.quorum.has(id), true));
        added.push(id);
      }
    }
    if (this.role !== Role.Leader) return;
    // Probe new members at once rather than at the next heartbeat.
    for (const id of added) this.sendAppend(id, true);
    if (this.leadTransferee !== "" && !this.quorum.has(this.leadTransferee)) this.leadTransferee = "";
    if (this.maybeCommit()) this.commitAdvanced();
    else for (const id of members) if (id !== this.id) this.sendAppend(id, false);
    this.handOverIfRemoved();
  }

  /**
   * A leader the configuration no longer counts as a voter keeps leading only
   * to hand over: stepping down at once could leave the remaining voters not
   * knowing the change is committed, still needing this node's vote, which it
   * would never give (etcd keeps such a leader too). It transfers leadership
   * to the voter furthest ahead, which campaigns at once when caught up.
   */
  private handOverIfRemoved(): void {
    if (this.role !== Role.Leader || this.quorum.has(this.id) || this.leadTransferee !== "") return;
    // The most caught-up voters first; each timeout tries the next, since one may not campaign (it holds
    // its votes after losing its storage, or restores a snapshot), and always asking it would keep this
    // removed node leading for good.
    const match = (id: NodeId): LogIndex => this.progress.get(id)?.match ?? 0;
    const ranked = [...this.quorum.ids()].sort((a, b) => match(b) - match(a) || (a < b ? -1 : a > b ? 1 : 0));
    if (ranked.length === 0) return;
    const target = ranked[(ranked.indexOf(this.lastHandOverTarget) + 1) % ranked.length]!;
    this.lastHandOverTarget = target;
    this.transferLeadership(target);
  }

  // ---- outbox ------------------------------------------------------------------------------------

  private send(fields: Partial<Message> & Pick<Message, "type" | "to">): void {
    this.messages.push(message({ groupId: this.groupId, from: this.id, term: this.term, ...fields }));
  }

  /** Called when the transport failed to reach `id`: stop pipelining until it answers again. */
  reportUnreachable(id: NodeId): void {
    const progress = this.progress.get(id);
    if (this.role === Role.Leader && progress?.state === "replicate") progress.becomeProbe();
  }

  /** Called when sending a snapshot to `id` finished; on failure the leader probes again later. */
  reportSnapshot(id: NodeId, ok: boolean): void {
    const progress = this.progress.get(id);
    if (this.role !== Role.Leader || progress?.state !== "snapshot") return;
    if (!ok) progress.pendingSnapshot = 0;
    progress.becomeProbe();
    // Wait for a heartbeat response before probing again.
    progress.probeSent = true;
  }
}

function quorumOf(confState: ConfState): JointQuorum {
  return new JointQuorum(new Set(confState.voters), new Set(confState.votersOutgoing));
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
