/**
 * How a channel's Raft group follows its MLS members: the group's voters
 * must be exactly the homeservers sponsoring a member. Pure functions, shared
 * by the homeserver (src/node/channel-groups.ts), the channel state machine
 * (which takes no command while they differ) and the multi-group simulator.
 */
import { isConfMember } from "../raft/conf-change.ts";
import type { CatchUpFloor, ConfState, LogIndex, NodeId, Term } from "../raft/types.ts";

/** Whether `voters` are exactly the homeservers in `wanted` (as sets). */
export function followsMembers(voters: readonly NodeId[], wanted: readonly NodeId[]): boolean {
  const set = new Set(voters);
  return set.size === new Set(wanted).size && wanted.every((id) => set.has(id));
}

/** Whether the group is done following its members: the voters are the members' homeservers and no change is under way. */
export function membershipSettled(conf: ConfState, wanted: readonly NodeId[]): boolean {
  return followsMembers(conf.voters, wanted) && conf.votersOutgoing.length === 0 && conf.learners.length === 0 && conf.learnersNext.length === 0;
}

/** One membership change a group's leader makes, or a homeserver it asks to host the group. */
export type MembershipStep =
  /** `homeserver` sponsors a member but is not in the group: host the group there and add it as a learner. */
  | { readonly kind: "add-learner"; readonly homeserver: NodeId }
  /** The learner `homeserver` has caught up: make it a voter. */
  | { readonly kind: "promote"; readonly homeserver: NodeId }
  /** The learner `homeserver` has not caught up: ask it again to host the group (a notice may be lost, or its copy dropped). */
  | { readonly kind: "remind-learner"; readonly homeserver: NodeId }
  /** `homeserver` sponsors no member any more: remove it from the group. */
  | { readonly kind: "remove"; readonly homeserver: NodeId };

/**
 * The next step towards voters = `wanted`, one membership change at a time:
 * missing homeservers join as learners first, a learner becomes a voter once
 * its log matches the leader's commit index, then homeservers without
 * members leave. Undefined when there is nothing to do now (settled, in a
 * joint configuration the core leaves by itself, or waiting for a learner).
 * `matchOf` is the leader's view of a member's log (0 when unknown).
 */
export function nextMembershipStep(wanted: readonly NodeId[], conf: ConfState, matchOf: (id: NodeId) => LogIndex, commitIndex: LogIndex): MembershipStep | undefined {
  if (conf.votersOutgoing.length > 0 || wanted.length === 0) return undefined;
  const missing = wanted.find((id) => !conf.voters.includes(id) && !conf.learners.includes(id));
  if (missing !== undefined) return { kind: "add-learner", homeserver: missing };
  let waiting: NodeId | undefined;
  for (const learner of conf.learners) {
    if (!wanted.includes(learner)) continue;
    const match = matchOf(learner);
    if (match >= commitIndex) return { kind: "promote", homeserver: learner };
    waiting ??= learner;
  }
  const extra = [...conf.voters, ...conf.learners].find((id) => !wanted.includes(id));
  if (extra !== undefined) return { kind: "remove", homeserver: extra };
  return waiting === undefined ? undefined : { kind: "remind-learner", homeserver: waiting };
}

/** A group leader's notice that a homeserver is out of the group: what the leader knew when it sent it. */
export interface LeaveNotice {
  readonly from: NodeId;
  readonly term: Term;
  /** Index of the membership the leader had applied (the latest: it sends only with none in flight). */
  readonly confIndex: LogIndex;
  /** The leader's last log index. */
  readonly lastIndex: LogIndex;
}

/** What a copy of the group knows of itself when a leave notice arrives. */
export interface CopyPosition {
  readonly confState: ConfState;
  readonly term: Term;
  readonly confIndex: LogIndex;
  readonly lastIndex: LogIndex;
  /** The term of the copy's last entry. */
  readonly lastTerm: Term;
  /** The catch-up floor the copy was made with (index 0: none). */
  readonly floor: CatchUpFloor;
}

/**
 * Whether a copy drops itself on a leave notice. Never on one from a term
 * older than the copy's or about an older membership (a deposed leader, a
 * delayed notice), nor when the copy's log is more up to date than the
 * leader's was then (whose last entry is of the notice's term): it was added
 * back since, and took entries. Entries past the leader's last index that are
 * of an earlier term do not count: no leader since had them, so they never
 * committed (a copy left holding some, from a leader deposed before it could
 * send them on, believed no notice and was kept for good). Nor on one sent
 * before the request that made the copy (its position is behind the copy's
 * catch-up floor): a copy made anew would drop itself and be asked again.
 * Otherwise from a member of the copy's membership, or from the leader of a
 * newer one: a copy removed long ago may know none of the homeservers that
 * lead now.
 */
export function believesLeaveNotice(notice: LeaveNotice, copy: CopyPosition): boolean {
  if (notice.term < copy.term || notice.confIndex < copy.confIndex) return false;
  // Sent before the request that made this copy: the leader's log was then behind the floor.
  if (notice.term < copy.floor.term || (notice.term === copy.floor.term && notice.lastIndex < copy.floor.index)) return false;
  if (copy.lastTerm > notice.term || (copy.lastTerm === notice.term && copy.lastIndex > notice.lastIndex)) return false;
  return isConfMember(copy.confState, notice.from) || notice.confIndex > copy.confIndex;
}

/** What a homeserver knows of its copy of a group when a member says it holds no copy of it. */
export interface LostCopyFacts {
  readonly selfId: NodeId;
  /** The member that holds no copy (its data directory was lost). */
  readonly from: NodeId;
  readonly leads: boolean;
  /** The membership this copy applied (one voter changes at a time: never joint). */
  readonly confState: ConfState;
  /** This copy replays old memberships (see Raft.catchingUp). */
  readonly catchingUp: boolean;
  /** This copy's log holds a conf change it has not applied. */
  readonly holdsUnappliedConfChange: boolean;
}

/**
 * What to do about a member that holds no copy (see ChannelGroups.onMissingCopy
 * for why each is safe): "host" asks it to host a new copy in place (of two
 * voters, by the other when that one holds every committed entry: as leader,
 * or as a caught-up follower whose applied two-voter membership is its log's
 * last; or, by the leader, a learner); "remove" removes a voter, to add it back
 * with a new copy; "none" otherwise.
 */
export function lostCopyAction(facts: LostCopyFacts): "host" | "remove" | "none" {
  const { voters, learners } = facts.confState;
  const twoVoters = voters.length === 2 && voters.includes(facts.selfId) && voters.includes(facts.from);
  const holdsEveryCommitted = facts.leads || (!facts.catchingUp && !facts.holdsUnappliedConfChange);
  if (twoVoters) return holdsEveryCommitted ? "host" : "none";
  if (!facts.leads) return "none";
  if (voters.includes(facts.from)) return "remove";
  return learners.includes(facts.from) ? "host" : "none";
}
