/**
 * How a channel's Raft group follows its MLS members: the group's voters
 * must be exactly the homeservers sponsoring a member. Pure functions, shared
 * by the homeserver (src/node/channel-groups.ts), the channel state machine
 * (which takes no command while they differ) and the multi-group simulator.
 */
import type { ConfState, LogIndex, NodeId } from "../raft/types.ts";

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
