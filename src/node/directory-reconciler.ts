/**
 * Keeps the directory group's membership in line with the replicated
 * directory. Runs on every homeserver and acts only on the group's leader,
 * one membership change at a time:
 *
 * 1. a leader whose own record says "left" hands leadership to the voter
 *    furthest ahead (the new leader then removes it);
 * 2. members whose record says "left" are removed;
 * 3. active homeservers that are not members are added as learners;
 * 4. while there are fewer than {@link directoryVotersMax} voters, a learner
 *    that is active, not blocked and caught up (its match index reached the
 *    commit index seen when this leader first saw it as a learner) becomes a
 *    voter. The others stay learners: they replicate and serve, but do not
 *    vote.
 *
 * Members without a directory record (a bootstrap voter that has not
 * registered yet) are left alone. The rules read only replicated state and
 * the leader's progress, so a new leader picks up where the old one stopped.
 */
import type { Logger } from "pino";
import type { RaftStatus } from "../raft/raw-node.ts";
import { ConfChangeType, Role, type ConfChange, type GroupId, type LogIndex, type NodeId } from "../raft/types.ts";
import { isActiveRecord, type HomeserverRecord } from "./directory-command.ts";

/** Most voters the directory group gets; further homeservers follow as learners. */
export const directoryVotersMax = 5;
/** How often the leader compares membership with the directory. */
export const reconcileIntervalMs = 250;
/** How often a leadership hand-over that has not happened is asked for again. */
const transferRetryMs = 1000;
/** A membership change not applied within this long is given up (and tried again). */
const changeWaitMs = 10_000;

/** What the reconciler decides to do next. */
export type MembershipAction =
  | { readonly kind: "transfer"; readonly to: NodeId }
  | { readonly kind: "change"; readonly type: ConfChangeType; readonly nodeId: NodeId };

/** The facts a decision reads. */
export interface MembershipFacts {
  readonly status: RaftStatus;
  readonly directory: ReadonlyMap<string, HomeserverRecord>;
  isBlocked(homeserverId: string): boolean;
  /** Per learner, the commit index it must reach before promotion. */
  readonly catchUpTargets: ReadonlyMap<NodeId, LogIndex>;
}

/** The next membership action, or undefined when membership matches the directory (or this is not the leader). */
export function nextMembershipAction(facts: MembershipFacts): MembershipAction | undefined {
  const { status, directory } = facts;
  const conf = status.confState;
  if (status.role !== Role.Leader || conf.votersOutgoing.length > 0) return undefined;
  const members = [...conf.voters, ...conf.learners];
  if (directory.get(status.id)?.status === "left") {
    const to = furthestVoter(status);
    return to === undefined ? undefined : { kind: "transfer", to };
  }
  const leaving = members.filter((id) => directory.get(id)?.status === "left").sort()[0];
  if (leaving !== undefined) return { kind: "change", type: ConfChangeType.RemoveNode, nodeId: leaving };
  const joining = [...directory.values()].filter((r) => isActiveRecord(r) && !members.includes(r.id)).map((r) => r.id).sort()[0];
  if (joining !== undefined) return { kind: "change", type: ConfChangeType.AddLearner, nodeId: joining };
  if (conf.voters.length >= directoryVotersMax) return undefined;
  const ready = [...conf.learners].sort().find((id) => {
    const target = facts.catchUpTargets.get(id);
    const match = status.progress.get(id)?.match ?? 0;
    return isActiveRecord(directory.get(id)) && !facts.isBlocked(id) && target !== undefined && match >= target;
  });
  return ready === undefined ? undefined : { kind: "change", type: ConfChangeType.AddVoter, nodeId: ready };
}

/** The voter other than the leader with the highest match index. */
function furthestVoter(status: RaftStatus): NodeId | undefined {
  let best: NodeId | undefined;
  let bestMatch = -1;
  for (const id of [...status.confState.voters].sort()) {
    const match = status.progress.get(id)?.match ?? 0;
    if (id !== status.id && match > bestMatch) {
      best = id;
      bestMatch = match;
    }
  }
  return best;
}

/** What the reconciler drives. */
export interface ReconcilerContext {
  readonly groupId: GroupId;
  readonly driver: {
    status(groupId: GroupId): RaftStatus;
    proposeConfChange(groupId: GroupId, change: ConfChange): Promise<unknown>;
    transferLeadership(groupId: GroupId, to: NodeId): void;
  };
  directory(): ReadonlyMap<string, HomeserverRecord>;
  isBlocked(homeserverId: string): boolean;
  readonly logger: Logger;
}

/** The leader-side loop applying {@link nextMembershipAction}. */
export class DirectoryReconciler {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private term = -1;
  private readonly catchUpTargets = new Map<NodeId, LogIndex>();
  private lastTransferAtMs = 0;

  constructor(private readonly context: ReconcilerContext) {}

  start(): void {
    this.timer = setInterval(() => void this.step(), reconcileIntervalMs);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round: decides and starts at most one action. */
  async step(): Promise<void> {
    if (this.busy) return;
    const { driver, groupId, logger } = this.context;
    const status = driver.status(groupId);
    this.trackLearners(status);
    const action = nextMembershipAction({ status, directory: this.context.directory(), isBlocked: (id) => this.context.isBlocked(id), catchUpTargets: this.catchUpTargets });
    if (action === undefined) return;
    if (action.kind === "transfer") {
      if (Date.now() - this.lastTransferAtMs < transferRetryMs) return;
      this.lastTransferAtMs = Date.now();
      logger.info({ groupId, to: action.to }, "this homeserver left the directory: handing leadership over");
      driver.transferLeadership(groupId, action.to);
      return;
    }
    this.busy = true;
    try {
      logger.info({ groupId, change: ConfChangeType[action.type], nodeId: action.nodeId }, "directory membership change");
      const change = driver.proposeConfChange(groupId, { steps: [{ type: action.type, nodeId: action.nodeId }], leaveJoint: false });
      const settled = change.then(() => undefined, (error: unknown) => logger.debug({ groupId, err: error }, "directory membership change not made; trying again"));
      await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, changeWaitMs).unref())]);
    } catch (error) {
      logger.debug({ groupId, err: error }, "directory membership change not made; trying again");
    } finally {
      this.busy = false;
    }
  }

  /** Sets a catch-up target for each learner newly seen by this leader; forgets others. */
  private trackLearners(status: RaftStatus): void {
    if (status.role !== Role.Leader || status.term !== this.term) {
      this.catchUpTargets.clear();
      this.term = status.role === Role.Leader ? status.term : -1;
    }
    if (status.role !== Role.Leader) return;
    const learners = new Set(status.confState.learners);
    for (const id of this.catchUpTargets.keys()) if (!learners.has(id)) this.catchUpTargets.delete(id);
    for (const id of learners) if (!this.catchUpTargets.has(id)) this.catchUpTargets.set(id, status.commit);
  }
}
