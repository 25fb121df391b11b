/**
 * Safety invariants checked while the simulator runs. Each invariant is an
 * object with optional hooks the simulator calls as things happen; each hook
 * does a constant or logarithmic amount of work, so checking after every step
 * stays cheap. Adding an invariant = writing one factory and listing it in
 * {@link defaultInvariants}.
 */
import type { Entry, LogIndex, NodeId, SnapshotMetadata, Term } from "../raft/types.ts";
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

/** Election Safety: at most one leader per term. */
export function electionSafety(violate: (message: string) => void): Invariant {
  const leaders = new Map<Term, NodeId>();
  return {
    leaderElected(node, term) {
      const other = leaders.get(term);
      if (other === undefined) leaders.set(term, node);
      else if (other !== node) violate(`${node} and ${other} are both leaders of term ${term}`);
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
  durability,
};

/** Dispatches simulator events to every invariant; hooks are collected once so calls stay cheap. */
export class InvariantSet {
  readonly all: Invariant[];

  constructor(factories: Readonly<Record<string, InvariantFactory>>, report: (name: string, message: string) => void) {
    this.all = Object.entries(factories).map(([name, make]) => make((message) => report(name, message)));
  }

  leaderElected(node: NodeId, term: Term): void {
    for (const i of this.all) i.leaderElected?.(node, term);
  }
  leaderLogPersisted(node: NodeId, term: Term, log: LogView): void {
    for (const i of this.all) i.leaderLogPersisted?.(node, term, log);
  }
  entriesPersisted(node: NodeId, entries: readonly Entry[], log: LogView): void {
    for (const i of this.all) i.entriesPersisted?.(node, entries, log);
  }
  entriesCommitted(node: NodeId, nodeTerm: Term, entries: readonly Entry[]): void {
    for (const i of this.all) i.entriesCommitted?.(node, nodeTerm, entries);
  }
  entryApplied(node: NodeId, entry: Entry, before: AppliedState, after: AppliedState): void {
    for (const i of this.all) i.entryApplied?.(node, entry, before, after);
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
