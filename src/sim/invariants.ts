/**
 * Safety invariants checked while the simulator runs. Each invariant is an
 * object with optional hooks the simulator calls as things happen; each hook
 * does a constant or logarithmic amount of work, so checking after every step
 * stays cheap. Adding an invariant = writing one factory and listing it in
 * {@link defaultInvariants}.
 */
import { MessageType, type ConfState, type Entry, type HardState, type LogIndex, type Message, type NodeId, type SnapshotMetadata, type Term } from "../raft/types.ts";
import type { AppliedState } from "./sim-disk.ts";
import { entryHash } from "./state-machine.ts";

/** A read-only view of one node's stored log. */
export interface LogView {
  /** The term at `index`, or undefined when compacted away or beyond the end. */
  term(index: LogIndex): Term | undefined;
  lastIndex(): LogIndex;
  /** Index of the latest snapshot (everything up to it is covered by the snapshot). */
  snapshotIndex(): LogIndex;
}

/** The cluster as an election would see it: every node's durable log and its own membership. */
export interface ClusterView {
  /** Every node that is not retired (running or crashed: a crashed node may restart and campaign). */
  nodes(): readonly NodeId[];
  /**
   * The memberships `node` could campaign and count votes with before it
   * learns anything new (as it runs, and as it would restart); none once it
   * is retired. A node that knows a conf change committed campaigns only
   * once it applied it.
   */
  campaignConfsOf(node: NodeId): readonly ConfState[];
  /** Last index and term of `node`'s durable log (what it would compare a candidate's log with). */
  lastOf(node: NodeId): { readonly index: LogIndex; readonly term: Term } | undefined;
  /** `node`'s durable hard state (its term and vote after a crash), or undefined if unknown. */
  hardStateOf(node: NodeId): HardState | undefined;
  /** Whether `node`'s durable log (or snapshot) holds the entry at `index` with `term`. */
  holds(node: NodeId, index: LogIndex, term: Term): boolean;
  /** Whether `node` holds its votes (it lost its disk and checks with its peers): it grants none and starts no election. */
  votesHeld?(node: NodeId): boolean;
  /**
   * Whether `node` lost its disk and has not yet recovered (the `lostDisks`
   * knob): a vote or acknowledgement it sent just before is counted by its
   * receiver, which no protocol can prevent, so vote-durability counts its
   * vote as durable; election-safety and durability still check the outcome.
   */
  recoveringDisk?(node: NodeId): boolean;
}

/** What the simulator knows at the end of a run, after the liveness phase. */
export interface FinalState {
  /** Every running voter of the final configuration and what it applied. */
  readonly voters: readonly { readonly id: NodeId; readonly applied: AppliedState }[];
}

/**
 * One invariant. Hooks are called synchronously at the moment the event
 * happens in the simulation; call the `violate` function the factory got to
 * report a breach.
 */
export interface Invariant {
  /** Called when `node` becomes leader of `term` (from the core's became-leader event). */
  leaderElected?(node: NodeId, term: Term): void;
  /** Called for every message a node sends (after its Ready was persisted). */
  messageSent?(message: Message): void;
  /**
   * Called when a leader's commit index advanced to `index` (entry term
   * `entryTerm`), after its Ready was persisted. It counted replicas with
   * `conf` (its membership now) or, when a conf change took effect after it
   * counted (a commit decided while the Ready applying that change was in
   * flight), with `previousConf`, its membership before that Ready.
   */
  commitAdvanced?(leader: NodeId, leaderTerm: Term, index: LogIndex, entryTerm: Term, conf: ConfState, cluster: ClusterView, previousConf?: ConfState): void;
  /** Called when `node` becomes leader of `term`, with its membership and the cluster's durable state. */
  leaderElectedIn?(node: NodeId, term: Term, conf: ConfState, cluster: ClusterView): void;
  /** Called once the new leader's first Ready is persisted: its log as the leader of `term`. */
  leaderLogPersisted?(node: NodeId, term: Term, log: LogView): void;
  /** Called after `entries` were written to `node`'s log (`log` already includes them). */
  entriesPersisted?(node: NodeId, entries: readonly Entry[], log: LogView): void;
  /** Called with a Ready's committed entries, before they are applied; `nodeTerm` is the node's term. */
  entriesCommitted?(node: NodeId, nodeTerm: Term, entries: readonly Entry[]): void;
  /** Called after `node` applied one committed entry. */
  entryApplied?(node: NodeId, entry: Entry, before: AppliedState, after: AppliedState): void;
  /** Called after `node` restored its state machine from a snapshot. */
  snapshotRestored?(node: NodeId, metadata: SnapshotMetadata, state: AppliedState, before: AppliedState): void;
  /** Called when a client is told its entry is committed. */
  clientAcked?(node: NodeId, entry: Entry): void;
  /** Called once at the end of a run whose liveness phase succeeded. */
  finished?(state: FinalState): void;
}

/** Builds an invariant; `violate` reports a breach with a readable message. */
export type InvariantFactory = (violate: (message: string) => void) => Invariant;

/**
 * Election Safety: at most one leader per term. A node counts as leader of a
 * term when its core says it became leader, and also when it sends what only
 * a leader sends (Append, Heartbeat, Snapshot, TimeoutNow) in that term, so a
 * core that keeps leading after adopting a new term is caught too.
 */
export function electionSafety(violate: (message: string) => void): Invariant {
  const leaders = new Map<Term, NodeId>();
  const claim = (node: NodeId, term: Term, how: string): void => {
    const other = leaders.get(term);
    if (other === undefined) leaders.set(term, node);
    else if (other !== node) violate(`${node} and ${other} are both leaders of term ${term} (${how})`);
  };
  return {
    leaderElected(node, term) {
      claim(node, term, `${node} became leader`);
    },
    messageSent(m) {
      const t = m.type;
      if (t === MessageType.Append || t === MessageType.Heartbeat || t === MessageType.Snapshot || t === MessageType.TimeoutNow) {
        if (leaders.get(m.term) !== m.from) claim(m.from, m.term, `${m.from} sent ${MessageType[t]}`);
      }
    },
  };
}

/**
 * Log Matching: two logs holding an entry with the same index and term hold
 * the same entry, and (inductively) the same entries before it. Checked by
 * recording, for every (index, term) first persisted anywhere, its payload
 * hash and the term before it; a later log that differs breaks the property.
 */
export function logMatching(violate: (message: string) => void): Invariant {
  const seen = new Map<number, { hash: number; prevTerm: Term | undefined; node: NodeId }>();
  return {
    entriesPersisted(node, entries, log) {
      for (const e of entries) {
        const key = e.index * 1_048_576 + e.term;
        const hash = entryHash(e);
        const prevTerm = e.index === 1 ? 0 : log.term(e.index - 1);
        const first = seen.get(key);
        if (first === undefined) {
          seen.set(key, { hash, prevTerm, node });
        } else if (first.hash !== hash) {
          violate(`entry ${e.index}@${e.term} on ${node} differs from the one ${first.node} stored`);
        } else if (first.prevTerm !== undefined && prevTerm !== undefined && first.prevTerm !== prevTerm) {
          violate(
            `entry ${e.index}@${e.term} follows term ${prevTerm} on ${node} but term ${first.prevTerm} on ${first.node}`,
          );
        }
      }
    },
  };
}

/**
 * Leader Completeness: a leader of term T holds every entry committed in a
 * term before T. The term a commit is attributed to is the reporting node's
 * term, never lower than the real one, so the check never flags a legal log.
 * Since Log Matching is checked separately, holding the highest such entry
 * (same index and term) implies holding all before it.
 */
export function leaderCompleteness(violate: (message: string) => void): Invariant {
  const committedUpToByTerm = new Map<Term, LogIndex>();
  const committedTerm = new Map<LogIndex, Term>();
  return {
    entriesCommitted(_node, nodeTerm, entries) {
      const last = entries[entries.length - 1];
      if (last === undefined) return;
      for (const e of entries) if (!committedTerm.has(e.index)) committedTerm.set(e.index, e.term);
      if ((committedUpToByTerm.get(nodeTerm) ?? 0) < last.index) committedUpToByTerm.set(nodeTerm, last.index);
    },
    leaderLogPersisted(node, term, log) {
      let index = 0;
      for (const [t, upTo] of committedUpToByTerm) if (t < term && upTo > index) index = upTo;
      if (index === 0) return;
      const expected = committedTerm.get(index);
      const actual = log.term(index);
      if (actual === undefined && index <= log.snapshotIndex()) return;
      if (actual !== expected) {
        const has = actual === undefined ? `no entry (last index ${log.lastIndex()})` : `term ${actual}`;
        violate(`leader ${node} of term ${term} lacks committed entry ${index}@${expected}: it has ${has}`);
      }
    },
  };
}

/** Whether (lastTerm, lastIndex) `a` is at least as up to date as `b` (Raft's election restriction). */
function atLeastAsUpToDate(a: { index: LogIndex; term: Term }, b: { index: LogIndex; term: Term }): boolean {
  return a.term > b.term || (a.term === b.term && a.index >= b.index);
}

/** Whether `candidate` could collect a majority of each voter set of `conf` (only nodes not retired vote). */
function couldWin(candidate: NodeId, conf: ConfState, cluster: ClusterView): boolean {
  const own = cluster.lastOf(candidate);
  if (own === undefined || cluster.votesHeld?.(candidate) === true) return false;
  const wins = (voters: readonly NodeId[]): boolean => {
    if (voters.length === 0) return true;
    let yes = 0;
    for (const v of voters) {
      if (v !== candidate && cluster.votesHeld?.(v) === true) continue;
      const last = v === candidate ? own : cluster.lastOf(v);
      if (last !== undefined && atLeastAsUpToDate(own, last)) yes++;
    }
    return yes > voters.length / 2;
  };
  const isVoter = conf.voters.includes(candidate) || conf.votersOutgoing.includes(candidate);
  return isVoter && wins(conf.voters) && wins(conf.votersOutgoing);
}

/**
 * Commit Durability, checked when a leader advances its commit index against
 * every node's durable log:
 * 1. the entry is on the disks of a majority of each voter set of the
 *    leader's membership (what "committed" means), and
 * 2. no node lacking it could win an election, counting votes with a
 *    membership it could campaign with and granting a vote whenever the
 *    election restriction allows (terms can always be raised).
 * So an unsafe commit is caught at once, before a crash and an unlucky
 * election turn it into a lost entry (the Raft paper's figure 8).
 */
export function commitDurability(violate: (message: string) => void): Invariant {
  return {
    commitAdvanced(leader, _leaderTerm, index, entryTerm, conf, cluster, previousConf) {
      const short = (membership: ConfState): string | undefined => {
        for (const voters of [membership.voters, membership.votersOutgoing]) {
          const holders = voters.filter((v) => cluster.holds(v, index, entryTerm));
          if (voters.length > 0 && holders.length <= voters.length / 2) return `only [${holders.join(",")}] of [${voters.join(",")}] have it on disk`;
        }
        return undefined;
      };
      const now = short(conf);
      if (now !== undefined && (previousConf === undefined || short(previousConf) !== undefined)) {
        violate(`${leader} committed ${index}@${entryTerm} but ${now}`);
        return;
      }
      for (const node of cluster.nodes()) {
        if (cluster.holds(node, index, entryTerm)) continue;
        if (cluster.campaignConfsOf(node).some((conf) => couldWin(node, conf, cluster))) {
          const last = cluster.lastOf(node)!;
          violate(
            `${leader} committed ${index}@${entryTerm} but ${node} (log ends ${last.index}@${last.term}) lacks it and could still win an election`,
          );
          return;
        }
      }
    },
  };
}

/**
 * Commit Rule (Raft paper, section 5.4.2): a leader commits entries of earlier
 * terms only by committing an entry of its own term after them, stored on a
 * majority of each voter set. Counting replicas of an older entry is unsafe,
 * but proving it takes a rare history (figure 8), so the rule itself is
 * checked where the leader's Ready shows it. The commit index lands on an
 * earlier term's entry only when the leader stops at a conf change it has not
 * applied; a later entry of its term must then be on a majority already.
 */
export function commitRule(violate: (message: string) => void): Invariant {
  return {
    commitAdvanced(leader, leaderTerm, index, entryTerm, conf, cluster, previousConf) {
      if (entryTerm === leaderTerm) return;
      const last = cluster.lastOf(leader)?.index ?? 0;
      let own = index + 1;
      while (own <= last && !cluster.holds(leader, own, leaderTerm)) own++;
      const onMajority = (membership: ConfState): boolean =>
        [membership.voters, membership.votersOutgoing].every((voters) => voters.length === 0 || voters.filter((v) => cluster.holds(v, own, leaderTerm)).length > voters.length / 2);
      if (own <= last && (onMajority(conf) || (previousConf !== undefined && onMajority(previousConf)))) return;
      violate(`${leader}, leader of term ${leaderTerm}, moved its commit index to ${index}, an entry of term ${entryTerm}, with no later entry of its term on a majority`);
    },
  };
}

/**
 * Vote Durability: a new leader's votes are on disk. Every vote it counted was
 * sent after the voter persisted it, so a majority of each voter set must
 * durably hold this term with a vote for it, or a later term. A core that
 * answers before its vote is synced fails this at once, without needing the
 * crash that would make the voter vote twice.
 */
export function voteDurability(violate: (message: string) => void): Invariant {
  return {
    leaderElectedIn(node, term, conf, cluster) {
      const durable = (v: NodeId): boolean => {
        if (v === node) return true; // its own vote is persisted with its first Ready, before anything leaves
        if (cluster.recoveringDisk?.(v) === true) return true;
        const hs = cluster.hardStateOf(v);
        return hs !== undefined && (hs.term > term || (hs.term === term && hs.vote === node));
      };
      for (const voters of [conf.voters, conf.votersOutgoing]) {
        const count = voters.filter(durable).length;
        if (voters.length > 0 && count <= voters.length / 2) {
          const states = voters.map((v) => `${v}:${JSON.stringify(cluster.hardStateOf(v) ?? null)}`).join(" ");
          violate(`${node} became leader of term ${term} but only ${count} of [${voters.join(",")}] durably voted for it: ${states}`);
          return;
        }
      }
    },
  };
}

/**
 * State Machine Safety: no two nodes apply different entries at one index, a
 * node applies indexes contiguously, and a snapshot never rolls its state back.
 */
export function stateMachineSafety(violate: (message: string) => void): Invariant {
  const hashAt = new Map<LogIndex, { hash: number; node: NodeId; term: Term }>();
  const check = (node: NodeId, index: LogIndex, hash: number, term: Term, what: string): void => {
    const known = hashAt.get(index);
    if (known === undefined) hashAt.set(index, { hash, node, term });
    else if (known.hash !== hash) {
      violate(`${node} ${what} at index ${index} (term ${term}) differs from what ${known.node} applied (term ${known.term})`);
    }
  };
  return {
    entryApplied(node, entry, before, after) {
      if (entry.index !== before.index + 1) {
        violate(`${node} applied index ${entry.index} right after ${before.index}`);
      }
      check(node, entry.index, after.hash, entry.term, "applied state");
    },
    snapshotRestored(node, metadata, state, before) {
      if (metadata.index <= before.index) {
        violate(`${node} restored a snapshot at ${metadata.index} over applied state at ${before.index}`);
      }
      check(node, metadata.index, state.hash, metadata.term, "snapshot state");
    },
  };
}

/**
 * Durability: an entry a client was told is committed is never lost; at the
 * end every running voter has applied it, and the entry applied at its index
 * is the acknowledged one.
 */
export function durability(violate: (message: string) => void): Invariant {
  const acked = new Map<LogIndex, { term: Term; hash: number }>();
  const applied = new Map<LogIndex, { term: Term; hash: number }>();
  let highestAcked = 0;
  return {
    entryApplied(_node, entry) {
      if (!applied.has(entry.index)) applied.set(entry.index, { term: entry.term, hash: entryHash(entry) });
    },
    clientAcked(node, entry) {
      const seen = applied.get(entry.index);
      if (seen !== undefined && (seen.term !== entry.term || seen.hash !== entryHash(entry))) {
        violate(`${node} acknowledged ${entry.index}@${entry.term} but ${seen.term} was applied there`);
      }
      acked.set(entry.index, { term: entry.term, hash: entryHash(entry) });
      highestAcked = Math.max(highestAcked, entry.index);
    },
    finished(state) {
      for (const { id, applied: a } of state.voters) {
        if (a.index < highestAcked) violate(`${id} applied up to ${a.index} but ${highestAcked} was acknowledged`);
      }
      for (const [index, want] of acked) {
        const got = applied.get(index);
        if (got !== undefined && (got.term !== want.term || got.hash !== want.hash)) {
          violate(`acknowledged entry ${index}@${want.term} was replaced by ${index}@${got.term}`);
        }
      }
    },
  };
}

/** The invariants every run checks, by name. */
export const defaultInvariants: Readonly<Record<string, InvariantFactory>> = {
  "election-safety": electionSafety,
  "log-matching": logMatching,
  "leader-completeness": leaderCompleteness,
  "state-machine-safety": stateMachineSafety,
  "commit-durability": commitDurability,
  "vote-durability": voteDurability,
  "commit-rule": commitRule,
  durability,
};

/** Dispatches simulator events to every invariant; hooks are collected once so calls stay cheap. */
export class InvariantSet {
  readonly all: Invariant[];
  /** Invariants with the hooks called per message or per entry, so the hot paths skip the rest. */
  private readonly onMessage: Invariant[];
  private readonly onPersist: Invariant[];
  private readonly onApply: Invariant[];

  constructor(factories: Readonly<Record<string, InvariantFactory>>, report: (name: string, message: string) => void) {
    this.all = Object.entries(factories).map(([name, make]) => make((message) => report(name, message)));
    this.onMessage = this.all.filter((i) => i.messageSent !== undefined);
    this.onPersist = this.all.filter((i) => i.entriesPersisted !== undefined);
    this.onApply = this.all.filter((i) => i.entryApplied !== undefined);
  }

  leaderElected(node: NodeId, term: Term): void {
    for (const i of this.all) i.leaderElected?.(node, term);
  }
  messageSent(message: Message): void {
    for (const i of this.onMessage) i.messageSent!(message);
  }
  leaderElectedIn(node: NodeId, term: Term, conf: ConfState, cluster: ClusterView): void {
    for (const i of this.all) i.leaderElectedIn?.(node, term, conf, cluster);
  }
  commitAdvanced(leader: NodeId, leaderTerm: Term, index: LogIndex, entryTerm: Term, conf: ConfState, cluster: ClusterView, previousConf?: ConfState): void {
    for (const i of this.all) i.commitAdvanced?.(leader, leaderTerm, index, entryTerm, conf, cluster, previousConf);
  }
  leaderLogPersisted(node: NodeId, term: Term, log: LogView): void {
    for (const i of this.all) i.leaderLogPersisted?.(node, term, log);
  }
  entriesPersisted(node: NodeId, entries: readonly Entry[], log: LogView): void {
    for (const i of this.onPersist) i.entriesPersisted!(node, entries, log);
  }
  entriesCommitted(node: NodeId, nodeTerm: Term, entries: readonly Entry[]): void {
    for (const i of this.all) i.entriesCommitted?.(node, nodeTerm, entries);
  }
  entryApplied(node: NodeId, entry: Entry, before: AppliedState, after: AppliedState): void {
    for (const i of this.onApply) i.entryApplied!(node, entry, before, after);
  }
  snapshotRestored(node: NodeId, metadata: SnapshotMetadata, state: AppliedState, before: AppliedState): void {
    for (const i of this.all) i.snapshotRestored?.(node, metadata, state, before);
  }
  clientAcked(node: NodeId, entry: Entry): void {
    for (const i of this.all) i.clientAcked?.(node, entry);
  }
  finished(state: FinalState): void {
    for (const i of this.all) i.finished?.(state);
  }
}
