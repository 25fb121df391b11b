import type { LogIndex, NodeId } from "./types.ts";

/** The outcome of counting votes. */
export enum VoteResult {
  Pending = "pending",
  Won = "won",
  Lost = "lost",
}

/**
 * A configuration's voters: one majority set, or two while a joint change is
 * in progress, where every decision needs a majority of BOTH.
 * Invariant: `incoming` is non-empty once the group is bootstrapped.
 */
export class JointQuorum {
  constructor(
    readonly incoming: ReadonlySet<NodeId>,
    readonly outgoing: ReadonlySet<NodeId>,
  ) {}

  isJoint(): boolean {
    return this.outgoing.size > 0;
  }

  /** Every voter of either half. */
  ids(): Set<NodeId> {
    return new Set([...this.incoming, ...this.outgoing]);
  }

  has(id: NodeId): boolean {
    return this.incoming.has(id) || this.outgoing.has(id);
  }

  /** The highest index known to be stored on a quorum, given each voter's match index. */
  committedIndex(matchOf: (id: NodeId) => LogIndex | undefined): LogIndex {
    return Math.min(majorityCommitted(this.incoming, matchOf), majorityCommitted(this.outgoing, matchOf));
  }

  /** Whether `granted` (true = yes, false = no, absent = not yet answered) decides an election. */
  voteResult(granted: (id: NodeId) => boolean | undefined): VoteResult {
    const a = majorityVote(this.incoming, granted);
    const b = majorityVote(this.outgoing, granted);
    if (a === VoteResult.Won && b === VoteResult.Won) return VoteResult.Won;
    if (a === VoteResult.Lost || b === VoteResult.Lost) return VoteResult.Lost;
    return VoteResult.Pending;
  }
}

/** The index a majority of `voters` has reached. An empty set constrains nothing. */
export function majorityCommitted(voters: ReadonlySet<NodeId>, matchOf: (id: NodeId) => LogIndex | undefined): LogIndex {
  if (voters.size === 0) return Number.MAX_SAFE_INTEGER;
  const matches: LogIndex[] = [];
  for (const id of voters) matches.push(matchOf(id) ?? 0);
  matches.sort((a, b) => b - a);
  const majority = Math.floor(voters.size / 2) + 1;
  return matches[majority - 1]!;
}

/** The vote outcome within one majority set. An empty set is won. */
export function majorityVote(voters: ReadonlySet<NodeId>, granted: (id: NodeId) => boolean | undefined): VoteResult {
  if (voters.size === 0) return VoteResult.Won;
  let yes = 0;
  let missing = 0;
  for (const id of voters) {
    const vote = granted(id);
    if (vote === undefined) missing++;
    else if (vote) yes++;
  }
  const majority = Math.floor(voters.size / 2) + 1;
  if (yes >= majority) return VoteResult.Won;
  if (yes + missing >= majority) return VoteResult.Pending;
  return VoteResult.Lost;
}
