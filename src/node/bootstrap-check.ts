/**
 * Whether a cluster group at its bootstrap state is new, or ran while this
 * homeserver's data directory was lost.
 *
 * A homeserver started with the bootstrap configuration and an empty data
 * directory creates the cluster group from that configuration, as a voter.
 * Alone it cannot tell a new cluster from one that ran while its data was
 * lost. In the second case it has forgotten the votes it cast and the entries
 * it acknowledged: its vote could elect a homeserver that lacks writes
 * acknowledged with its help, and that leader would overwrite them. So it
 * holds its votes (and campaigns) until its peers have answered:
 *
 * - every other initial voter is at the bootstrap state too: a new cluster,
 *   votes are released at once;
 * - one has committed past the bootstrap entry: the cluster ran (this
 *   homeserver lost its data, or was merely late at the start of a new
 *   cluster). Votes stay held until this homeserver has caught up to that
 *   commit index. Only a leader elected without its vote can bring it there,
 *   and that leader holds every committed entry.
 *
 * Channel groups need no such check: a lost copy comes back empty, without a
 * membership, and votes only once a leader's snapshot or log gave it one.
 */
import type { Logger } from "pino";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { PeerStreamState } from "../transport/peer-transport.ts";
import type { GroupId, LogIndex, LogStorage, NodeId } from "../raft/types.ts";

/** A homeserver asks its peers for their cluster group's commit index. */
export const bootstrapAskTopic = "bootstrap-ask";
/** The answer: the commit index, in decimal. */
export const bootstrapAnswerTopic = "bootstrap-answer";
/** The commit index of a group at its bootstrap state (the one configuration entry). */
export const bootstrapCommitIndex = 1;

/** What the answers so far say. */
export type BootstrapVerdict =
  | { readonly kind: "new" }
  | { readonly kind: "ran"; readonly commit: LogIndex; readonly answeredBy: NodeId }
  | { readonly kind: "waiting"; readonly missing: readonly NodeId[] };

/**
 * Whether a group's stored log is its bootstrap state, as a new data
 * directory makes it for a group with `initialVoters`: the one configuration
 * entry, committed, and no vote cast. Only a group with other initial voters
 * is checked; a single-homeserver cluster has nobody to ask.
 */
export function isAtBootstrapState(log: LogStorage, initialVoters: readonly NodeId[]): boolean {
  if (initialVoters.length < 2) return false;
  const { hardState } = log.initialState();
  return log.lastIndex() === bootstrapCommitIndex && hardState.commit === bootstrapCommitIndex && hardState.vote === "";
}

/** The verdict from the commit indexes `answers` of the other initial voters `peers`. */
export function bootstrapVerdict(peers: readonly NodeId[], answers: ReadonlyMap<NodeId, LogIndex>): BootstrapVerdict {
  let ran: { commit: LogIndex; answeredBy: NodeId } | undefined;
  for (const [peer, commit] of answers) {
    if (peers.includes(peer) && commit > bootstrapCommitIndex && (ran === undefined || commit > ran.commit)) ran = { commit, answeredBy: peer };
  }
  if (ran !== undefined) return { kind: "ran", ...ran };
  const missing = peers.filter((peer) => !answers.has(peer));
  return missing.length === 0 ? { kind: "new" } : { kind: "waiting", missing };
}

/** An answer's payload: the commit index in decimal. */
export function encodeBootstrapAnswer(commit: LogIndex): Uint8Array {
  return new TextEncoder().encode(String(commit));
}

/** The commit index an answer carries, or undefined if it is malformed. */
export function decodeBootstrapAnswer(payload: Uint8Array): LogIndex | undefined {
  const text = new TextDecoder().decode(payload);
  return /^\d{1,15}$/.test(text) ? Number(text) : undefined;
}

export interface BootstrapCheckOptions {
  readonly groupId: GroupId;
  /** The other initial voters. */
  readonly peers: readonly NodeId[];
  readonly driver: RaftDriver;
  readonly sendNotice: (to: NodeId, topic: string, payload: Uint8Array) => void;
  readonly peerStates: () => ReadonlyMap<NodeId, PeerStreamState>;
  readonly logger: Logger;
  /** Called once when the cluster turns out to be new (to hasten its first election). */
  readonly onNewCluster: () => void;
  /** How often unanswered peers are asked again, and a catch-up is checked. */
  readonly askIntervalMs?: number;
  /** How often a check still waiting says so in the log. */
  readonly waitingLogIntervalMs?: number;
}

/** Holds this homeserver's votes in the cluster group until the answers show they are safe to cast. */
export class BootstrapCheck {
  private readonly answers = new Map<NodeId, LogIndex>();
  private timer: NodeJS.Timeout | undefined;
  private verdict: BootstrapVerdict = { kind: "waiting", missing: [] };
  private lastWaitingLogMs = 0;

  constructor(private readonly options: BootstrapCheckOptions) {}

  /** Holds the votes and starts asking. */
  start(): void {
    this.options.driver.holdVotes(this.options.groupId, true);
    this.options.logger.info({ peers: this.options.peers }, "cluster group at its bootstrap state: asking the other initial voters whether the cluster already ran, before voting");
    this.lastWaitingLogMs = Date.now();
    this.timer = setInterval(() => this.step(), this.options.askIntervalMs ?? 100);
    this.step();
  }

  /** Records a peer's answer. */
  onAnswer(from: NodeId, payload: Uint8Array): void {
    const commit = decodeBootstrapAnswer(payload);
    if (this.timer === undefined || commit === undefined || !this.options.peers.includes(from)) return;
    this.answers.set(from, Math.max(commit, this.answers.get(from) ?? 0));
    this.step();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private step(): void {
    if (this.timer === undefined) return;
    if (this.verdict.kind !== "ran") {
      this.verdict = bootstrapVerdict(this.options.peers, this.answers);
      if (this.verdict.kind === "ran") {
        // Late at the start of a new cluster, or a data directory lost: the same care serves both.
        this.options.logger.info(
          { commit: this.verdict.commit, answeredBy: this.verdict.answeredBy },
          "the cluster has committed past its bootstrap state: this homeserver is late to it or lost its data, and votes once it has caught up from a leader",
        );
      }
    }
    const { driver, groupId, logger } = this.options;
    if (this.verdict.kind === "new") {
      logger.info("a new cluster: every initial voter is at its bootstrap state");
      this.release();
      this.options.onNewCluster();
      return;
    }
    if (this.verdict.kind === "ran") {
      const commit = driver.status(groupId).commit;
      if (commit >= this.verdict.commit) {
        logger.info({ commit }, "caught up with the cluster: voting");
        this.release();
      }
      return;
    }
    const states = this.options.peerStates();
    for (const peer of this.verdict.missing) {
      if (states.get(peer) === "connected") this.options.sendNotice(peer, bootstrapAskTopic, new Uint8Array(0));
    }
    if (Date.now() - this.lastWaitingLogMs >= (this.options.waitingLogIntervalMs ?? 10_000)) {
      this.lastWaitingLogMs = Date.now();
      logger.warn({ missing: this.verdict.missing }, "still waiting for initial voters to answer whether the cluster already ran; not voting meanwhile");
    }
  }

  private release(): void {
    this.stop();
    this.options.driver.holdVotes(this.options.groupId, false);
  }
}
