/**
 * The data types of the Raft core: log entries, messages, persistent state and
 * the Ready value that hands work to the I/O layer. Nothing here does I/O.
 */

/** A homeserver's id inside a group (for example "hs1"). Stable for the node's life. */
export type NodeId = string;
/** A Raft term. Starts at 0; a node never goes back to a lower one. */
export type Term = number;
/** A position in the replicated log. The first real entry has index 1. */
export type LogIndex = number;
/** The id of one Raft group; every message carries it so one process hosts many groups. */
export type GroupId = string;

/** What an entry carries: application data, or a configuration change the core applies itself. */
export enum EntryType {
  Normal = 0,
  /** `data` is an encoded {@link ConfChange} (see `conf-change.ts`). */
  ConfChange = 1,
}

/** One log entry. Immutable once created: cores and storages share entry objects. */
export interface Entry {
  readonly term: Term;
  readonly index: LogIndex;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** The cluster membership: who votes, who only follows. */
export interface ConfState {
  /** Voters of the current (or, when joint, the incoming) configuration. */
  readonly voters: readonly NodeId[];
  /** Voters of the outgoing configuration; non-empty only while in a joint configuration. */
  readonly votersOutgoing: readonly NodeId[];
  /** Non-voting members that receive the log. Disjoint from both voter sets. */
  readonly learners: readonly NodeId[];
  /** Voters demoted by the current joint change: they become learners when it is left. */
  readonly learnersNext: readonly NodeId[];
}

/** What a snapshot stands for: the log up to and including `index`, and the membership at that point. */
export interface SnapshotMetadata {
  readonly index: LogIndex;
  readonly term: Term;
  readonly confState: ConfState;
}

/** The application's state at `metadata.index`, opaque to the core. */
export interface Snapshot {
  readonly metadata: SnapshotMetadata;
  readonly data: Uint8Array;
}

/** The state every node must persist before it sends a message that depends on it. */
export interface HardState {
  readonly term: Term;
  /** The node this node voted for in `term`, or "" for none. */
  readonly vote: NodeId;
  /** Highest log index known committed. May be persisted lazily: losing it is safe. */
  readonly commit: LogIndex;
}

/** The kinds of messages nodes exchange. Numbers are part of the wire format. */
export enum MessageType {
  /** Candidate asks for a vote. */
  Vote = 1,
  VoteResponse = 2,
  /** A would-be candidate asks whether it could win, without raising any term. */
  PreVote = 3,
  PreVoteResponse = 4,
  /** Leader replicates entries (possibly none) starting after (`logTerm`, `index`). */
  Append = 5,
  AppendResponse = 6,
  /** Leader asserts leadership and advances followers' commit index. */
  Heartbeat = 7,
  HeartbeatResponse = 8,
  /** Leader sends a whole snapshot to a follower that is too far behind. */
  Snapshot = 9,
  /** Leader tells the transfer target to start an election at once. */
  TimeoutNow = 10,
  /** A follower forwards a linearizable read request to its leader. */
  ReadIndex = 11,
  ReadIndexResponse = 12,
  /** A follower forwards proposals to its leader; entries carry only type and data. */
  Propose = 13,
}

/**
 * One Raft message. Fields not meaningful for a type are left at their zero value,
 * so a message encodes to the same bytes whoever built it.
 */
export interface Message {
  readonly type: MessageType;
  readonly groupId: GroupId;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: Term;
  /** Append: term of the entry at `index`. Vote: term of the candidate's last entry. */
  readonly logTerm: Term;
  /** Append: index just before `entries`. Vote: candidate's last index. AppendResponse: last matching index. */
  readonly index: LogIndex;
  readonly entries: readonly Entry[];
  readonly commit: LogIndex;
  readonly reject: boolean;
  /** AppendResponse with reject: a hint where the follower's log may match (fast backtracking). */
  readonly rejectHint: LogIndex;
  /** AppendResponse with reject: the follower's term at `rejectHint`. */
  readonly rejectHintTerm: Term;
  /** Snapshot messages only. */
  readonly snapshot: Snapshot | null;
  /** ReadIndex request id, or the transfer flag on Vote for leadership transfer. Empty when unused. */
  readonly context: Uint8Array;
}

/** A node's role. */
export enum Role {
  Follower = "follower",
  PreCandidate = "pre-candidate",
  Candidate = "candidate",
  Leader = "leader",
}

/** Volatile state, reported when it changes: who leads and what this node is. */
export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
}

/** The answer to a linearizable read: the read may be served once `index` is applied. */
export interface ReadState {
  readonly index: LogIndex;
  readonly context: Uint8Array;
}

/**
 * Work the core hands to the I/O layer, to be handled in this order:
 *
 * 1. Persist `snapshot` (if any), then append `entries` (dropping any stored
 *    entries from the first new index on) and save `hardState` (if any), in one
 *    write that is synced when `mustSync` is true.
 * 2. Only then send `messages`. Persistence contract: a vote or an append
 *    response may be acted on by other nodes as durable, so it must never leave
 *    before the state it answers for is. A leader's Appends and heartbeats
 *    ({@link mayLeaveBeforePersist}) may leave before the write, in parallel
 *    with it (Raft thesis 10.2.1): the commit index they carry was decided
 *    before this Ready was taken, i.e. over writes already durable, because
 *    the next Ready is only taken after `advance()`. A crash after step 1 and
 *    before step 2 is always safe.
 * 3. Apply `committedEntries` to the state machine, in order. They are durable
 *    on a quorum, and never uncommitted. When all of them were stored by an
 *    earlier Ready (none is among `entries`) and there is no snapshot, they
 *    may be applied before step 1, their state written in step 1's batch:
 *    acting on them then depends on no write of this Ready.
 * 4. Call `advance()` on the node. Conf changes among `committedEntries` take
 *    effect in the core at that moment.
 */
export interface Ready {
  readonly softState: SoftState | null;
  readonly hardState: HardState | null;
  readonly entries: readonly Entry[];
  readonly snapshot: Snapshot | null;
  readonly committedEntries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly readStates: readonly ReadState[];
  /** True when the write of step 1 changes term, vote or entries, and must be fsynced. */
  readonly mustSync: boolean;
}

/**
 * The stable log as the core reads it. Reads are synchronous: a durable engine
 * keeps the uncompacted log mirrored in memory and writes through to disk.
 * Invariant: `firstIndex() - 1` is the index of the latest snapshot (or 0),
 * and `term(firstIndex() - 1)` answers from that snapshot's metadata.
 */
export interface LogStorage {
  /** The persisted hard state and membership, read once when a node starts. */
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at least one even if it is larger than `maxBytes`. */
  entries(lo: LogIndex, hi: LogIndex, maxBytes: number): Entry[];
  /** The term of the entry at `index`, for `firstIndex() - 1 <= index <= lastIndex()`. */
  term(index: LogIndex): Term;
  firstIndex(): LogIndex;
  lastIndex(): LogIndex;
  /** The latest snapshot, to send to a follower that is too far behind. */
  snapshot(): Snapshot;
}

/** Sends messages to other nodes. Delivery is best effort: Raft tolerates loss, duplication and reordering. */
export interface Transport {
  send(messages: readonly Message[]): void;
}

/** The kinds of membership change. */
export enum ConfChangeType {
  AddVoter = 1,
  AddLearner = 2,
  RemoveNode = 3,
}

/** One step of a membership change. */
export interface ConfChangeStep {
  readonly type: ConfChangeType;
  readonly nodeId: NodeId;
}

/**
 * A membership change. A change of at most one voter applies directly; any
 * other goes through a joint configuration, left automatically by the leader
 * (or explicitly, with an empty `steps` and `leaveJoint: true`).
 */
export interface ConfChange {
  readonly steps: readonly ConfChangeStep[];
  readonly leaveJoint: boolean;
}

/**
 * The catch-up floor of a copy made anew (see Raft.catchUpFloor): the commit
 * index of the member that asked for it and the term of that member's last
 * entry then. Index 0: none.
 */
export interface CatchUpFloor {
  readonly index: LogIndex;
  readonly term: Term;
}

/** No catch-up floor. */
export const noCatchUpFloor: CatchUpFloor = { index: 0, term: 0 };

/** Whether floor `a` is further than `b` (by term, then index: the order of log positions). */
export function isFurtherFloor(a: CatchUpFloor, b: CatchUpFloor): boolean {
  return a.term > b.term || (a.term === b.term && a.index > b.index);
}

/** The zero hard state of a node that never persisted anything. */
export const emptyHardState: HardState = { term: 0, vote: "", commit: 0 };

/** The zero membership. */
export const emptyConfState: ConfState = { voters: [], votersOutgoing: [], learners: [], learnersNext: [] };

const emptyBytes = new Uint8Array(0);

/** Builds a message with every unset field at its zero value. */
/** Messages a Ready's handler may send before its write is durable: a leader's Appends and heartbeats. */
export function mayLeaveBeforePersist(message: Message): boolean {
  return message.type === MessageType.Append || message.type === MessageType.Heartbeat;
}

/**
 * Whether a Ready's committed entries may be applied before its own write:
 * it installs no snapshot and commits only entries stored by earlier Readies
 * (none of its own `entries`), so nothing is applied that only this node's
 * unwritten copy made committed (as in a group of one voter). A runtime that
 * writes the applied state in the same batch as the entries relies on it.
 */
export function mayApplyBeforePersist(ready: Ready): boolean {
  if (ready.snapshot !== null) return false;
  const lastCommitted = ready.committedEntries[ready.committedEntries.length - 1];
  const firstNew = ready.entries[0];
  return lastCommitted === undefined || firstNew === undefined || lastCommitted.index < firstNew.index;
}

export function message(fields: Pick<Message, "type" | "groupId" | "from" | "to" | "term"> & Partial<Message>): Message {
  return {
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    rejectHintTerm: 0,
    snapshot: null,
    context: emptyBytes,
    ...fields,
  };
}
