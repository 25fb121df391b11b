/**
 * Whether a cluster group at its bootstrap state is new, or ran while this
 * homeserver's data directory was lost.
 *
 * A homeserver started with the bootstrap configuration and an empty data
 * directory creates the cluster group from that configuration, as a voter.
 * Alone it cannot tell a new cluster from one that ran while its data was
 * lost. In the second case it has forgotten the votes it cast, the entries it
 * acknowledged and the term it was in: its vote could elect a homeserver that
 * lacks writes acknowledged with its help, and its acknowledgements could let
 * a leader deposed meanwhile commit over them. So it holds its votes and
 * campaigns, steps no Raft message, and asks its peers for their commit
 * index, last log index, term and voters, until enough voters answered that
 * every quorum it could have been part of includes one of them (n - q + 1 of
 * the n - 1 others, q a majority of n). Then it takes the highest term they
 * answered, counting its own vote in that term as cast: that term is at least
 * that of every vote it cast and every entry it acknowledged, so leaders of
 * older terms are refused. And:
 *
 * - if no answer holds anything past the bootstrap entry and none is past the
 *   bootstrap term (no election happened), nothing was ever committed past it
 *   (a new cluster): it votes from the next term on;
 * - else the cluster ran (this homeserver lost its data, or was merely late at
 *   the start of a new cluster): it votes once it has stored, and knows
 *   committed, an entry of a later term (whose leader, elected without its
 *   vote, holds every entry committed with its help, so any candidate it
 *   votes for then does too), or its leader's whole log as that leader
 *   answered in the term it leads.
 *
 * The check is recorded in a file in the data directory while it runs, so a
 * crash part-way runs it again on the next start (the log is no longer at its
 * bootstrap state then).
 *
 * Channel groups come back empty, without a membership, and vote only once a
 * leader's snapshot or log gave them one; they do not learn the term, which
 * is open (docs/ARCHITECTURE.md).
 */
import { closeSync, existsSync, fsyncSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { RaftStatus } from "../raft/raw-node.ts";
import type { PeerStreamState } from "../transport/peer-transport.ts";
import type { GroupId, LogIndex, LogStorage, NodeId, Term } from "../raft/types.ts";

/** A homeserver asks its peers where their cluster group is (commit index, last index and term). */
export const bootstrapAskTopic = "bootstrap-ask";
/** The answer: commit index, last log index and term, in decimal. */
export const bootstrapAnswerTopic = "bootstrap-answer";
/** The commit index of a group at its bootstrap state (the one configuration entry). */
export const bootstrapCommitIndex = 1;
/** The term of a group at its bootstrap state. */
export const bootstrapTerm = 1;
/** Highest term an answer may carry (a bound, so a bad answer cannot push a group's term to the limit). */
const answerTermMax = 2 ** 40;
/** The file in the data directory that says a check has not finished. */
export const bootstrapCheckFile = "bootstrap-check-pending";

/** Where a peer's cluster group is. */
export interface BootstrapAnswer {
  readonly commit: LogIndex;
  readonly lastIndex: LogIndex;
  readonly term: Term;
  /** The peer's voters, and those of the configuration it is leaving if it is in a joint one. */
  readonly voters: readonly NodeId[];
  readonly votersOutgoing: readonly NodeId[];
  /** Peer addresses of those voters, where the peer knows them (a homeserver that lost its data knows only its configuration's). */
  readonly addresses: Readonly<Record<NodeId, string>>;
}

/** What the answers so far say. */
export type BootstrapVerdict =
  | { readonly kind: "new"; readonly term: Term }
  | { readonly kind: "ran"; readonly term: Term }
  | { readonly kind: "waiting"; readonly missing: readonly NodeId[] };

/** Answers needed from the others to meet every quorum of `voters` (self included) that contains this node: n - q + 1. */
export function answersNeeded(voters: number): number {
  return voters - (Math.floor(voters / 2) + 1) + 1;
}

/**
 * The verdict of homeserver `selfId` from the answers so far. It waits until
 * enough voters answered to meet every quorum containing `selfId` (each half
 * of a joint configuration), counted in the configuration of the most
 * advanced answer (highest term, then commit), or of the initial voters
 * (`initialPeers` and `selfId`) before any answer. Then `new` if no answer
 * holds anything past the bootstrap entry (nothing was ever committed past
 * it), else `ran`; both with the highest term answered. Otherwise `waiting`,
 * with whom to ask.
 */
export function bootstrapVerdict(selfId: NodeId, initialPeers: readonly NodeId[], answers: ReadonlyMap<NodeId, BootstrapAnswer>): BootstrapVerdict {
  const heard = [...answers.values()];
  if (heard.length === 0) return { kind: "waiting", missing: [...initialPeers] };
  const best = heard.reduce((a, b) => (b.term > a.term || (b.term === a.term && b.commit > a.commit) ? b : a));
  const missing = new Set<NodeId>();
  for (const conf of [best.voters, best.votersOutgoing]) {
    if (!conf.includes(selfId)) continue;
    const others = conf.filter((id) => id !== selfId);
    if (others.filter((id) => answers.has(id)).length >= answersNeeded(conf.length)) continue;
    for (const id of others) if (!answers.has(id)) missing.add(id);
  }
  if (missing.size > 0) return { kind: "waiting", missing: [...missing] };
  const term = Math.max(...heard.map((a) => a.term));
  // An election raises the term past the bootstrap one (a pre-vote does not): after one, an answerer
  // may not yet hold what a leader committed with this node's lost acknowledgement.
  const ran = heard.some((a) => a.lastIndex > bootstrapCommitIndex || a.commit > bootstrapCommitIndex || a.term > bootstrapTerm);
  return { kind: ran ? "ran" : "new", term };
}

/**
 * Whether a node whose check reached `verdict` may vote again, given `stored`
 * (the newest entry it has stored and knows committed) and `leader` (the
 * last index its current leader answered, when that leader answered in the
 * term it leads, at or after the answers' term). After `ran`, once that entry
 * is of a later term than the answers' (its leader, elected without this
 * node, holds every entry committed before, and any candidate this node votes
 * for then has a log at least that recent), or once it holds its leader's
 * whole log as that leader answered (which holds every entry this node
 * acknowledged before it lost its data and that can still be committed).
 */
export function mayVoteAgain(verdict: BootstrapVerdict, stored: { readonly index: LogIndex; readonly term: Term }, leader?: { readonly lastIndex: LogIndex }): boolean {
  if (verdict.kind === "new") return true;
  if (verdict.kind !== "ran") return false;
  return stored.term > verdict.term || (leader !== undefined && stored.index >= leader.lastIndex);
}

/**
 * The leader view {@link mayVoteAgain} takes: the answer of the leader a node
 * follows, if that leader answered in the term it leads and that term is at
 * least the verdict's.
 */
export function leaderAnswered(verdict: BootstrapVerdict, status: { readonly leader: NodeId; readonly term: Term }, answers: ReadonlyMap<NodeId, BootstrapAnswer>): { lastIndex: LogIndex } | undefined {
  if (verdict.kind !== "ran" || status.leader === "" || status.term < verdict.term) return undefined;
  const answer = answers.get(status.leader);
  return answer !== undefined && answer.term === status.term ? { lastIndex: answer.lastIndex } : undefined;
}

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

/**
 * One check's state, shared by the runtime and the simulator so both run the
 * same rules: the answers (the newest of each peer, counted only from a peer
 * among the voters it names), the verdict, reached once, and the release.
 */
export class BootstrapProgress {
  private readonly answers = new Map<NodeId, BootstrapAnswer>();
  private current: BootstrapVerdict = { kind: "waiting", missing: [] };

  constructor(
    private readonly selfId: NodeId,
    /** The other initial voters, asked before any answer names the voters. */
    private readonly initialPeers: readonly NodeId[],
  ) {}

  /** Records `from`'s newest answer; one for a configuration `from` is not part of is not counted. */
  record(from: NodeId, answer: BootstrapAnswer): void {
    if (from === this.selfId) return;
    if (answer.voters.includes(from) || answer.votersOutgoing.includes(from)) this.answers.set(from, answer);
    else this.answers.delete(from);
  }

  /**
   * The verdict so far; `reached` is true the one time it stops waiting,
   * when the node must adopt its term.
   */
  advance(): { verdict: BootstrapVerdict; reached: boolean } {
    if (this.current.kind !== "waiting") return { verdict: this.current, reached: false };
    this.current = bootstrapVerdict(this.selfId, this.initialPeers, this.answers);
    return { verdict: this.current, reached: this.current.kind !== "waiting" };
  }

  /** Whether the node may vote again, given what it stored and whom it follows (see {@link mayVoteAgain}). */
  mayVote(stored: { readonly index: LogIndex; readonly term: Term }, status: { readonly leader: NodeId; readonly term: Term }): boolean {
    return mayVoteAgain(this.current, stored, leaderAnswered(this.current, status, this.answers));
  }

  /** Whom to ask while waiting: the initial voters, and every voter an answer named. */
  askable(): Set<NodeId> {
    const named = [...this.answers.values()].flatMap((a) => [...a.voters, ...a.votersOutgoing]);
    const all = new Set([...this.initialPeers, ...named]);
    all.delete(this.selfId);
    return all;
  }
}

/**
 * Holds a group's votes, campaigns and every Raft message until a
 * {@link BootstrapCheck} releases them: placed as soon as the group is
 * hosted, before any peer can reach it.
 */
export function holdForBootstrapCheck(driver: RaftDriver, groupId: GroupId): void {
  driver.holdVotes(groupId, true);
  driver.awaitTerm(groupId);
}

/** The answer a homeserver gives from its cluster group's status, naming its voters' peer addresses where `addressOf` knows them. */
export function bootstrapAnswerOf(status: Pick<RaftStatus, "commit" | "lastIndex" | "term" | "confState">, addressOf: (id: NodeId) => string | undefined): BootstrapAnswer {
  const { voters, votersOutgoing } = status.confState;
  const addresses: Record<NodeId, string> = {};
  for (const id of new Set([...voters, ...votersOutgoing])) {
    const address = addressOf(id);
    if (address !== undefined && address !== "") addresses[id] = address;
  }
  return { commit: status.commit, lastIndex: status.lastIndex, term: status.term, voters: [...voters], votersOutgoing: [...votersOutgoing], addresses };
}

/** Longest answer accepted, in bytes. */
const answerBytesMax = 64 * 1024;
const idPattern = /^[A-Za-z0-9._:-]{1,128}$/;

/** An answer's payload (JSON). */
export function encodeBootstrapAnswer(answer: BootstrapAnswer): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(answer));
}

/** The answer a payload carries, or undefined if it is malformed. */
export function decodeBootstrapAnswer(payload: Uint8Array): BootstrapAnswer | undefined {
  if (payload.byteLength > answerBytesMax) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { commit, lastIndex, term, voters, votersOutgoing, addresses } = value as Record<string, unknown>;
  const index = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
  const ids = (list: unknown): list is NodeId[] => Array.isArray(list) && list.length <= 64 && list.every((id) => typeof id === "string" && idPattern.test(id));
  if (!index(commit) || !index(lastIndex) || !index(term) || term > answerTermMax || commit > lastIndex || !ids(voters) || !ids(votersOutgoing)) return undefined;
  if (new Set(voters).size !== voters.length || new Set(votersOutgoing).size !== votersOutgoing.length) return undefined;
  if (typeof addresses !== "object" || addresses === null || Array.isArray(addresses)) return undefined;
  const entries = Object.entries(addresses);
  if (entries.length > 64 || !entries.every(([id, address]) => idPattern.test(id) && typeof address === "string" && address.length <= 256)) return undefined;
  return { commit, lastIndex, term, voters, votersOutgoing, addresses: Object.fromEntries(entries) as Record<NodeId, string> };
}

/** Records, durably, that a check runs in `dataDir`. */
export function markBootstrapCheck(dataDir: string): void {
  // The file, then the directory entry that names it.
  for (const [path, flags] of [[join(dataDir, bootstrapCheckFile), "w"], [dataDir, "r"]] as const) {
    const fd = openSync(path, flags);
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** Whether a check started in `dataDir` has not finished. */
export function bootstrapCheckPending(dataDir: string): boolean {
  return existsSync(join(dataDir, bootstrapCheckFile));
}

export interface BootstrapCheckOptions {
  readonly selfId: NodeId;
  readonly groupId: GroupId;
  /** The other initial voters. */
  readonly peers: readonly NodeId[];
  readonly driver: RaftDriver;
  readonly sendNotice: (to: NodeId, topic: string, payload: Uint8Array) => void;
  readonly peerStates: () => ReadonlyMap<NodeId, PeerStreamState>;
  /** Connects to a voter an answer named that the transport does not know yet. */
  readonly learnPeer: (id: NodeId, peerAddress: string) => void;
  readonly logger: Logger;
  /** Where the check's file is (removed when the votes are released). */
  readonly dataDir: string;
  /** Called once when the cluster turns out to be new (to hasten its first election). */
  readonly onNewCluster: () => void;
  /** How often unanswered peers are asked again, and a catch-up is checked. */
  readonly askIntervalMs?: number;
  /** How often a check still waiting says so in the log. */
  readonly waitingLogIntervalMs?: number;
}

/** Releases this homeserver's votes in the cluster group once the answers show they are safe to cast. */
export class BootstrapCheck {
  private readonly progress: BootstrapProgress;
  private timer: NodeJS.Timeout | undefined;
  private lastWaitingLogMs = 0;

  constructor(private readonly options: BootstrapCheckOptions) {
    this.progress = new BootstrapProgress(options.selfId, options.peers);
  }

  /** Starts asking; the group is already held ({@link holdForBootstrapCheck}, and the file was written before it was opened). */
  start(): void {
    this.options.logger.info({ peers: this.options.peers }, "cluster group new or not yet checked: asking the other initial voters whether the cluster already ran, before voting");
    this.lastWaitingLogMs = Date.now();
    this.timer = setInterval(() => this.step(), this.options.askIntervalMs ?? 100);
    this.step();
  }

  /** Records a peer's answer, and connects to the voters it names that the transport does not know. */
  onAnswer(from: NodeId, payload: Uint8Array): void {
    const answer = decodeBootstrapAnswer(payload);
    if (this.timer === undefined || answer === undefined) return;
    this.progress.record(from, answer);
    const states = this.options.peerStates();
    for (const [id, address] of Object.entries(answer.addresses)) {
      if (id !== this.options.selfId && !states.has(id) && address !== "") this.options.learnPeer(id, address);
    }
    this.step();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private step(): void {
    if (this.timer === undefined) return;
    const { driver, groupId, logger } = this.options;
    const { verdict, reached } = this.progress.advance();
    if (verdict.kind === "waiting") {
      // Everyone it knows of is asked again every interval: answers go stale as the group moves on.
      this.ask(this.progress.askable());
      if (Date.now() - this.lastWaitingLogMs >= (this.options.waitingLogIntervalMs ?? 10_000)) {
        this.lastWaitingLogMs = Date.now();
        logger.warn({ missing: verdict.missing }, "still waiting for voters to answer whether the cluster already ran; not voting meanwhile");
      }
      return;
    }
    if (reached) {
      // A new cluster may have begun a first election (even with this homeserver's vote, before it lost its
      // data); a cluster that ran has a term this homeserver forgot. Either way, that term, its vote cast.
      driver.adoptTerm(groupId, verdict.term);
      if (verdict.kind === "new") logger.info({ term: verdict.term }, "a new cluster: nothing committed past the bootstrap entry; voting from the next term");
      else logger.info({ term: verdict.term }, "the cluster has committed past its bootstrap state: this homeserver is late to it or lost its data, and votes once it has caught up from a leader");
    }
    const status = driver.status(groupId);
    if (this.progress.mayVote(driver.storedCommitted(groupId), status)) {
      if (verdict.kind === "ran") logger.info({ commit: status.commit }, "caught up with the cluster: voting");
      this.release();
      if (verdict.kind === "new") this.options.onNewCluster();
      return;
    }
    // Its leader's answer, in the term it leads, lets it vote once it holds that leader's log.
    if (status.leader !== "") this.ask([status.leader]);
  }

  private ask(peers: Iterable<NodeId>): void {
    const states = this.options.peerStates();
    for (const peer of peers) if (states.get(peer) === "connected") this.options.sendNotice(peer, bootstrapAskTopic, new Uint8Array(0));
  }

  private release(): void {
    this.stop();
    rmSync(join(this.options.dataDir, bootstrapCheckFile), { force: true });
    this.options.driver.holdVotes(this.options.groupId, false);
  }
}
