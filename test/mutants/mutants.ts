/**
 * Deliberately broken variants of the Raft core (and of the bootstrap check
 * the simulator shares with the runtime). Each is an exact search string in
 * a file under src and its replacement; the mutation test
 * applies one at a time to a temporary copy of src/ and expects the simulator
 * to report a violation. The search string must occur exactly once in the
 * pristine file, so a refactor of the core fails the test loudly instead of
 * silently testing nothing.
 */
import type { FaultKind, SimKnobs } from "../../src/sim/index.ts";

/** The simulator runs a mutant gets in place of the default ones (passed to the runner as JSON). */
export interface MutantRuns {
  readonly nodes: number;
  readonly steps: number;
  readonly faults: readonly FaultKind[];
  readonly knobs: Partial<SimKnobs>;
  /**
   * The first seed run (1 unless given): for a mutant whose broken rule only a
   * rare schedule reaches, the hunt starts shortly before a seed known to
   * reach it, so the test stays fast; the runner must still find it.
   */
  readonly firstSeed?: number;
}

/** One broken variant of the core. */
export interface Mutant {
  readonly name: string;
  /** Path relative to the project root. */
  readonly file: string;
  readonly search: string;
  readonly replace: string;
  readonly description: string;
  /**
   * The runs that reach the broken rule, when the default ones (3 and 5
   * nodes, every fault, knobs drawn from the seed) do not: used for every seed.
   */
  readonly runs?: MutantRuns;
  /**
   * For a rule whose breach needs a schedule the simulator reaches too rarely
   * to hunt for here: the core test (file under test/, test name) that must
   * fail on the mutated copy instead of the simulator.
   */
  readonly caughtByTest?: { readonly file: string; readonly name: string };
}

/** The mutants the simulator must catch. */
export const mutants: readonly Mutant[] = [
  {
    name: "stored-next-any-term",
    file: "src/multiraft/stored-next.ts",
    search: "  if (view.nodeTerm() !== term || view.term(index - 1) !== term) return undefined;",
    replace: "  if (view.nodeTerm() !== term) return undefined;",
    description: "a homeserver signs a commit stored in a later term than the entry's own (a quorum of such stores does not commit it: Raft's figure 8), or the first entry of a term at its index (signatures of different entries at one index, the same commit resent to another leader, add up to a quorum)",
    caughtByTest: { file: "test/multiraft/stored-next.test.ts", name: "a quorum that stored an entry in a later term than the entry's is not offered it" },
  },
  {
    name: "stored-next-first-entry-of-a-term",
    file: "src/multiraft/stored-next.ts",
    search: "view.term(index - 1) !== term) return undefined;",
    replace: "view.term(index) !== term) return undefined;",
    description: "a homeserver signs a commit that is the first entry of its term at its index: signatures of different entries at one index (the same commit resent to another leader) can add up to a quorum",
    caughtByTest: { file: "test/multiraft/stored-next.test.ts", name: "an entry right after one of an earlier term is not offered" },
  },
  {
    name: "stored-next-past-applied",
    file: "src/multiraft/stored-next.ts",
    search: "  const index = appliedIndex + 1;",
    replace: "  const index = view.lastIndex();",
    description: "a homeserver signs its last stored commit with the channel as applied so far, though entries before it are not applied: two commits for one epoch both get certificates",
    caughtByTest: { file: "test/multiraft/stored-next.test.ts", name: "in the multi-group simulator, every certificate a quorum signed" },
  },
  {
    name: "vote-without-log-check",
    file: "src/raft/raft.ts",
    search: "const grantable = canVote && this.log.isUpToDate(m.index, m.logTerm);",
    replace: "const grantable = canVote;",
    description: "grants votes without the election restriction (candidate's log at least as up to date)",
  },
  {
    name: "commit-previous-term",
    file: "src/raft/raft.ts",
    search: "if (index <= this.log.committed || this.log.term(index) !== this.term) return false;",
    replace: "if (index <= this.log.committed) return false;",
    description: "commits an entry of an earlier term by counting its replicas (Raft paper, figure 8)",
  },
  {
    name: "vote-not-recorded",
    file: "src/raft/raft.ts",
    search: "        this.electionElapsed = 0;\n        this.vote = m.from;\n",
    replace: "        this.electionElapsed = 0;\n",
    description: "answers a vote request without recording the vote in the hard state",
  },
  {
    name: "vote-not-synced",
    file: "src/raft/raw-node.ts",
    search: "mustSync: hard.term !== prev.term || hard.vote !== prev.vote || entries.length > 0",
    replace: "mustSync: hard.term !== prev.term || entries.length > 0",
    description: "sends a vote before the vote is synced to disk (a crash forgets it)",
  },
  {
    name: "entries-not-synced",
    file: "src/raft/raw-node.ts",
    search: "hard.vote !== prev.vote || entries.length > 0 || snapshot !== null",
    replace: "hard.vote !== prev.vote || snapshot !== null",
    description: "acknowledges appended entries before they are synced to disk",
  },
  {
    name: "append-without-prev-match",
    file: "src/raft/raft-log.ts",
    search: "if (!this.matchTerm(prevIndex, prevTerm)) return undefined;",
    replace: "if (prevIndex > this.lastIndex()) return undefined;",
    description: "accepts Append entries without checking the previous entry's term",
  },
  {
    name: "snapshot-truncates-matching-log",
    file: "src/raft/raft.ts",
    search: "    if (this.log.matchTerm(index, term)) {\n",
    replace: "    if (false) {\n",
    description: "installs a snapshot over a log that already holds the snapshot's last entry, dropping the entries after it",
  },
  {
    name: "snapshot-over-newer-state",
    file: "src/raft/raft.ts",
    search: "    if (index <= this.log.committed) return false;\n    if (this.log.matchTerm(index, term)) {",
    replace: "    if (this.log.matchTerm(index, term) && index > this.log.committed) {",
    description: "installs a snapshot older than the committed index, rolling the state machine back",
  },
  {
    name: "joint-counts-new-majority",
    file: "src/raft/quorum.ts",
    search: "return Math.min(majorityCommitted(this.incoming, matchOf), majorityCommitted(this.outgoing, matchOf));",
    replace: "return majorityCommitted(this.incoming, matchOf);",
    description: "in a joint configuration, commits with a majority of the new voters only",
  },
  {
    name: "leader-keeps-leading-on-higher-term",
    file: "src/raft/raft.ts",
    search: '      this.becomeFollower(m.term, fromLeader ? m.from : "");\n      return true;',
    replace:
      '      if (this.role === Role.Leader) {\n        this.term = m.term;\n        this.vote = "";\n      } else this.becomeFollower(m.term, fromLeader ? m.from : "");\n      return true;',
    description: "a leader that sees a higher term adopts it but does not step down",
  },
  {
    name: "vote-kept-across-terms",
    file: "src/raft/raft.ts",
    search: "      this.term = term;\n      this.vote = \"\";\n",
    replace: "      this.term = term;\n",
    description: "a node does not reset its vote when its term changes",
  },
  {
    name: "resume-as-leader",
    file: "src/raft/raft.ts",
    search: '    this.lead = state.leader;\n    if (state.leader === this.id) {\n      assert(this.promotable() && this.log.term(last) === this.term, "a quiet leader resumes only in the term of its last entry, as a voter");\n',
    replace: "    this.lead = this.id;\n    if (this.promotable()) {\n",
    description: "a voter unloaded while quiet comes back as the leader of its term, whoever led it",
  },
  {
    name: "apply-unstored-before-persist",
    file: "src/raft/types.ts",
    search: "return lastCommitted === undefined || firstNew === undefined || lastCommitted.index < firstNew.index;",
    replace: "return lastCommitted === undefined || firstNew === undefined || lastCommitted.index >= 0;",
    description: "the merged round of a lazily told group applies entries its own unwritten copy committed (a single voter), and a crash loses what it acknowledged",
    runs: { nodes: 1, steps: 400, faults: ["crash", "pause"], knobs: { lazyCommitNotices: true, faultChancePerTick: 0.05, fsyncMaxMs: 4, clients: 3, clientPipeline: 16, proposalChancePerTick: 0.5 } },
  },
  // Membership changes and terms.
  {
    name: "campaign-with-unapplied-conf-change",
    file: "src/raft/raft.ts",
    search: "    if (this.hasUnappliedConfChanges()) return;\n",
    replace: "",
    description: "a node that knows a membership change committed campaigns before applying it, with the older membership, and overwrites what the newer one committed",
    caughtByTest: { file: "test/raft/membership.test.ts", name: "a node that knows a change committed campaigns only once it applied it" },
  },
  {
    name: "conf-change-reapplied-over-snapshot",
    file: "src/raft/raft.ts",
    search: "    if (entry.index <= this.confIndex) return;\n",
    replace: "",
    description: "a conf change handed out before a snapshot was installed applies again over the snapshot's membership, bringing back a removed voter",
    caughtByTest: { file: "test/raft/membership.test.ts", name: "the older entries' conf changes do not apply over the snapshot's membership" },
  },
  {
    name: "removed-leader-asks-one-voter",
    file: "src/raft/raft.ts",
    search: "const target = ranked[(ranked.indexOf(this.lastHandOverTarget) + 1) % ranked.length]!;",
    replace: "const target = ranked[0]!;",
    description: "a removed leader hands over only ever to its first choice, which may not campaign (votes held after a lost disk), and leads for good",
    caughtByTest: { file: "test/raft/membership.test.ts", name: "a removed leader whose first choice does not campaign tries the next voter" },
  },
  {
    name: "learner-silent-to-stale-leader",
    file: "src/raft/raft.ts",
    search: "this.config.checkQuorum || this.config.preVote || !this.promotable();",
    replace: "this.config.checkQuorum || this.config.preVote;",
    description: "without CheckQuorum and PreVote, a node that cannot campaign ignores a leader of an older term, which never learns its term: it never catches up",
    // The simulator found it (seed 923, 5 nodes, both off, a fault every 7 ticks); since the leader stops its
    // commit index at a conf change it has not applied, that schedule no longer arises in 6,000 seeds.
    caughtByTest: { file: "test/raft/election.test.ts", name: "without PreVote and CheckQuorum, a learner ahead in term tells the leader" },
  },
  {
    name: "commit-past-unapplied-conf-change",
    file: "src/raft/raft.ts",
    search: "if (cap !== undefined && cap < index) index = cap;",
    replace: "",
    description: "a leader still counting the membership before a change commits entries after it with a quorum the new membership would not accept (a two-voter group's follower would then miss entries committed without it)",
    caughtByTest: { file: "test/raft/membership.test.ts", name: "a leader commits nothing past a conf change it has not applied" },
  },
  {
    name: "catching-up-copy-ignores-its-floor",
    file: "src/raft/raft.ts",
    search: "(floor.index > 0 && (m.logTerm > floor.term || (m.logTerm === floor.term && m.index >= floor.index)))",
    replace: "(floor.index > 0)",
    description: "a copy made anew votes, while it catches up, for a candidate whose log is behind its catch-up floor (a member that missed its removal)",
    caughtByTest: { file: "test/raft/election.test.ts", name: "with its host's commit index and last term as its catch-up floor" },
  },
  {
    name: "blocked-follower-keeps-its-lease",
    file: "src/raft/raft.ts",
    search: "      if (this.role === Role.Follower) this.lead = \"\";\n",
    replace: "",
    description: "a follower that may not campaign keeps a dead leader for good, and its lease turns away every candidate: a group whose new copy catches up cannot elect",
    caughtByTest: { file: "test/raft/election.test.ts", name: "votes for a candidate whose log is past its floor" },
  },
  {
    name: "copy-made-anew-campaigns-before-catching-up",
    file: "src/raft/raft.ts",
    search: " || this.votesHeld || this.catchingUp()) return;",
    replace: " || this.votesHeld) return;",
    description: "a copy made anew campaigns while it replays old memberships: made from the group's first entry, it is their only voter and elects itself",
    caughtByTest: { file: "test/raft/election.test.ts", name: "with its host's commit index and last term as its catch-up floor" },
  },
  {
    name: "copy-made-anew-votes-before-catching-up",
    file: "src/raft/raft.ts",
    search: "const mayVote = !this.catchingUp() ||",
    replace: "const mayVote = true ||",
    description: "a copy made anew votes while it replays old memberships, for a member lagging behind its removal that still counts it",
    caughtByTest: { file: "test/raft/election.test.ts", name: "with its host's commit index and last term as its catch-up floor" },
  },
  {
    name: "copy-made-anew-answers-a-deposed-leader",
    file: "src/raft/raft.ts",
    search: "    if (term > this.term) this.becomeFollower(term, \"\");",
    replace: "    if (term > this.term && term < 0) this.becomeFollower(term, \"\");",
    description: "a copy made anew starts below its floor's term and acknowledges a leader deposed before it was asked for, cut off with it alone, which then commits over the group's entries",
    caughtByTest: { file: "test/raft/election.test.ts", name: "so a leader deposed before the copy was asked for" },
  },
  {
    name: "copy-opened-with-a-floor-starts-at-term-zero",
    file: "src/raft/raft.ts",
    search: "    const fenced = this.catchUpFloor.term > hardState.term;",
    replace: "    const fenced = false;",
    description: "a copy a homeserver opens with its floor (as it hosts one on request) starts below the floor's term",
    caughtByTest: { file: "test/raft/election.test.ts", name: "also when opened with its floor" },
  },
  // A node that lost its disk (the `lostDisks` knob, src/node/bootstrap-check.ts): each part of the check is needed.
  // (Counting its vote as cast in the adopted term is too, for a rarer schedule than the simulator reaches in
  // thousands of seeds; test/raft/election.test.ts checks it directly.)
  {
    name: "lost-disk-answers-deposed-leader",
    file: "src/raft/raft.ts",
    search: ' || m.from === "" || this.termUnknown) return;',
    replace: ' || m.from === "") return;',
    description: "a node that lost its disk answers Raft messages before it learned the group's term, so a leader deposed meanwhile commits with it",
    runs: { nodes: 3, steps: 600, faults: ["crash", "partition", "drop"], knobs: { lostDisks: true, faultChancePerTick: 0.15 }, firstSeed: 1380 },
  },
  {
    name: "lost-disk-asks-one-peer",
    file: "src/node/bootstrap-check.ts",
    search: "  return voters - (Math.floor(voters / 2) + 1) + 1;",
    replace: "  return 1;",
    description: "a node that lost its disk trusts one answer, which may miss every holder of an entry it acknowledged",
    runs: { nodes: 3, steps: 600, faults: ["crash", "partition"], knobs: { lostDisks: true, faultChancePerTick: 0.3, checkQuorum: false } },
  },
  {
    name: "lost-disk-votes-before-catching-up",
    file: "src/node/bootstrap-check.ts",
    search: "  return stored.term > verdict.term || (leader !== undefined && stored.index >= leader.lastIndex);",
    replace: "  return true;",
    description: "a node that lost its disk votes as soon as its peers answered, before it holds what they committed",
    runs: { nodes: 3, steps: 600, faults: ["crash", "partition", "drop"], knobs: { lostDisks: true, faultChancePerTick: 0.15 } },
  },
  {
    name: "lost-disk-votes-on-an-entry-of-the-answered-term",
    file: "src/node/bootstrap-check.ts",
    search: "stored.term > verdict.term",
    replace: "stored.term >= verdict.term",
    description: "a node that lost its disk votes once it holds a committed entry of the answers' term, which may precede one committed with its help",
    runs: { nodes: 3, steps: 600, faults: ["crash", "partition"], knobs: { lostDisks: true, faultChancePerTick: 0.3, checkQuorum: false } },
  },
  {
    name: "lost-disk-new-by-commit-index",
    file: "src/node/bootstrap-check.ts",
    search: "a.lastIndex > bootstrapCommitIndex || a.commit > bootstrapCommitIndex || a.term > bootstrapTerm",
    replace: "a.commit > bootstrapCommitIndex",
    description: "a node that lost its disk calls the cluster new when no peer knows a commit past the bootstrap entry, though one was committed",
    runs: { nodes: 3, steps: 600, faults: ["crash", "partition"], knobs: { lostDisks: true, faultChancePerTick: 0.3, checkQuorum: false } },
  },
];
