import { assert } from "./assert.ts";
import type { LogIndex } from "./types.ts";

/** How the leader currently replicates to one follower. */
export type ReplicationState = "probe" | "replicate" | "snapshot";

/**
 * The leader's view of one follower: what matches, what to send next, and
 * flow control. In `probe` one Append is in flight at a time until the
 * follower's position is known; in `replicate` Appends are pipelined up to
 * `inflightMessagesMax`; in `snapshot` nothing is sent until the snapshot
 * is reported done.
 * Invariant: `match < next`.
 */
export class Progress {
  match: LogIndex = 0;
  next: LogIndex;
  state: ReplicationState = "probe";
  /** In probe state: an Append was sent and not yet answered (or a heartbeat came back). */
  probeSent = false;
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot: LogIndex = 0;
  /** Heard from since the last check-quorum round. */
  recentActive: boolean;
  /**
   * An Append went to this follower since the leader's last heartbeat tick:
   * it reset the follower's election timer just as a heartbeat would, so the
   * next plain heartbeat to a follower replicating smoothly may be left out.
   */
  appendSinceHeartbeat = false;
  /** The highest commit index an Append or heartbeat told this follower (see `RaftConfig.lazyCommitNotices`). */
  commitSent: LogIndex = 0;
  /** Last indexes of the Appends in flight, oldest first. */
  private readonly inflights: LogIndex[] = [];

  constructor(
    next: LogIndex,
    readonly inflightMessagesMax: number,
    public isLearner: boolean,
    recentActive: boolean,
  ) {
    assert(inflightMessagesMax > 0, "inflightMessagesMax must be positive");
    this.next = next;
    this.recentActive = recentActive;
  }

  private resetState(state: ReplicationState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.length = 0;
  }

  becomeProbe(): void {
    if (this.state === "snapshot") {
      const pendingSnapshot = this.pendingSnapshot;
      this.resetState("probe");
      this.next = Math.max(this.match + 1, pendingSnapshot + 1);
    } else {
      this.resetState("probe");
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: LogIndex): void {
    this.resetState("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  /** Whether the leader must hold further Appends to this follower. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.length >= this.inflightMessagesMax;
      case "snapshot":
        return true;
    }
  }

  /** Records an Append of `count` entries ending at `lastIndex`. */
  sentEntries(count: number, lastIndex: LogIndex): void {
    if (this.state === "replicate") {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.push(lastIndex);
      }
    } else if (this.state === "probe") {
      this.probeSent = true;
    }
  }

  /** Records an acknowledgment up to `index`; returns whether it was news. */
  maybeUpdate(index: LogIndex): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      this.probeSent = false;
      updated = true;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** Frees the in-flight slots of Appends acknowledged up to `index`. */
  freeInflightsUpTo(index: LogIndex): void {
    let n = 0;
    while (n < this.inflights.length && this.inflights[n]! <= index) n++;
    if (n > 0) this.inflights.splice(0, n);
  }

  /** Frees one slot, so a heartbeat response keeps a stalled pipeline moving. */
  freeFirstInflight(): void {
    if (this.inflights.length > 0) this.inflights.shift();
  }

  inflightCount(): number {
    return this.inflights.length;
  }

  /**
   * The follower's log ends before `lastIndexBound`, below what it once
   * acknowledged: its storage was lost (a wiped data directory), or the
   * rejection is a stale one. Either way, probe again from what it has;
   * lowering `match` never lowers the commit index, so this is always safe.
   */
  forgetMatch(lastIndexBound: LogIndex): void {
    this.resetState("probe");
    this.match = 0;
    this.next = lastIndexBound + 1;
  }

  /**
   * Handles a rejected Append for `rejected` (its previous index); `probeHint`
   * is where the leader will try next. Returns false for a stale rejection.
   */
  maybeDecrTo(rejected: LogIndex, probeHint: LogIndex): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, probeHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }
}
