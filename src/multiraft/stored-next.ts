/**
 * Which stored entry a node may act on before it commits (see
 * `StateMachine.storedNext`): the entry right after the last one applied,
 * stored durably in the term the node is in, which must be the entry's own,
 * while the node knows that term's leader (itself or another).
 *
 * Why this is as strong as an acknowledgement: an entry of term T that a
 * quorum stored while in term T is committed by Raft (every later leader
 * holds it: each of those nodes stored it before it could vote in a later
 * term, and votes only for logs at least as up to date). And what applying
 * it decides follows from the log before it, all applied here, and the entry
 * itself. So a quorum of signatures made on such entries certifies what the
 * log will decide.
 *
 * The entry before it must be of the same term too. A signed statement
 * names a commit and an index, not a term, and a client may resend the same
 * commit to a later leader, which can put it at the same index in another
 * term: signatures of two different entries would then make one
 * certificate (helper-28's review found the schedule, with five voters and
 * three leaders). With the entry before of term T, which every signer
 * applied and so is the one committed entry there, every signer at this
 * index stored the one entry the leader of term T put after it. (Every
 * leader's first entry is empty, so no command is refused by this.)
 * Shared by the runtime's driver and the multi-group simulator, which
 * checks it.
 */
import type { LogIndex, NodeId, Term } from "../raft/types.ts";

/** What {@link storedNextIndex} looks at: the node's stable log and its core. */
export interface StoredLogView {
  firstIndex(): LogIndex;
  lastIndex(): LogIndex;
  term(index: LogIndex): Term;
  /** The term of the stored hard state. */
  storedTerm(): Term;
  /** The term the core is in (it may be ahead of the stored one until the next write). */
  nodeTerm(): Term;
  /** The leader the core knows, or "". */
  leader(): NodeId;
}

/** The view of a stable log mirror and the core over it (the driver's, the simulator's, the tests'). */
export function storedLogView(
  log: { firstIndex(): LogIndex; lastIndex(): LogIndex; term(index: LogIndex): Term; getHardState(): { readonly term: Term } },
  node: { term(): Term; leader(): NodeId },
): StoredLogView {
  return {
    firstIndex: () => log.firstIndex(),
    lastIndex: () => log.lastIndex(),
    term: (index) => log.term(index),
    storedTerm: () => log.getHardState().term,
    nodeTerm: () => node.term(),
    leader: () => node.leader(),
  };
}

/** The index of the entry the node may act on ahead of its commit, or undefined (see the module comment). */
export function storedNextIndex(view: StoredLogView, appliedIndex: LogIndex): LogIndex | undefined {
  if (view.leader() === "") return undefined;
  const index = appliedIndex + 1;
  if (index > view.lastIndex() || index < view.firstIndex()) return undefined;
  const term = view.storedTerm();
  // The entry before of the term this node is in makes this one of it too (terms never fall along a log).
  if (view.nodeTerm() !== term || view.term(index - 1) !== term) return undefined;
  return index;
}
