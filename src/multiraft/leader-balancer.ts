/**
 * Leader balancing: which groups this homeserver should hand leadership of
 * to whom, when it leads more than its share. Pure: the driver feeds it what
 * it knows of every hosted group (each group's leader and voters are known
 * locally on every member), runs the transfers, and calls it again later, so
 * every homeserver converges on about its share without talking about it.
 *
 * A homeserver's share is the sum over groups of 1 / voters for each group it
 * votes in: with leaders spread evenly, each voter of a 3-voter group leads it
 * a third of the time.
 */
import type { GroupId, NodeId } from "../raft/types.ts";

/** What the balancer needs to know of one group. */
export interface GroupLeadership {
  readonly groupId: GroupId;
  /** The leader known here, or "" when none is known. */
  readonly leader: NodeId;
  readonly voters: readonly NodeId[];
}

/** Limits of one balancing round. */
export interface BalanceLimits {
  /** Most transfers started in one round (rate limit). */
  readonly maxTransfers: number;
  /** Groups above its share a homeserver may lead before it hands any over (hysteresis). */
  readonly slackGroups: number;
}

/** One planned transfer. */
export interface PlannedTransfer {
  readonly groupId: GroupId;
  readonly to: NodeId;
}

/** The transfers `self` should start now (none when it leads at most its share plus the slack). */
export function planLeaderTransfers(self: NodeId, groups: Iterable<GroupLeadership>, limits: BalanceLimits): PlannedTransfer[] {
  const leads = new Map<NodeId, number>();
  const share = new Map<NodeId, number>();
  const mine: GroupLeadership[] = [];
  for (const group of groups) {
    if (group.voters.length < 2) continue;
    for (const voter of group.voters) share.set(voter, (share.get(voter) ?? 0) + 1 / group.voters.length);
    if (group.leader === "") continue;
    leads.set(group.leader, (leads.get(group.leader) ?? 0) + 1);
    if (group.leader === self && group.voters.includes(self)) mine.push(group);
  }
  const over = (id: NodeId) => (leads.get(id) ?? 0) - (share.get(id) ?? 0);
  if (over(self) <= limits.slackGroups) return [];
  const plan: PlannedTransfer[] = [];
  for (const group of mine) {
    if (plan.length >= limits.maxTransfers || over(self) <= limits.slackGroups / 2) break;
    let best: NodeId = "";
    for (const voter of group.voters) if (voter !== self && (best === "" || over(voter) < over(best))) best = voter;
    // Only to a homeserver under its share: moving load to another loaded one helps nobody.
    if (best === "" || over(best) >= 0) continue;
    plan.push({ groupId: group.groupId, to: best });
    leads.set(best, (leads.get(best) ?? 0) + 1);
    leads.set(self, (leads.get(self) ?? 0) - 1);
  }
  return plan;
}
