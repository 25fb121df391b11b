/**
 * One simulated node: the real Raft core (RawNode) with its disk, its state
 * machine and the Ready pipeline of a node process. A Ready that must be
 * synced is written, and only when the simulated fsync completes are its
 * messages sent, its committed entries applied and `advance()` called; a crash
 * before that loses the writes and the messages together. While a write is in
 * flight (or the node is paused) inputs queue up and are then handled as one
 * batch, as a single-threaded node loop would.
 */
import { RawNode, type RaftConfig, type RaftEvent } from "../raft/raw-node.ts";
import { mayApplyBeforePersist, mayLeaveBeforePersist, Role, type ConfState, type Entry, type LogIndex, type Message, type NodeId, type Ready, type Term } from "../raft/types.ts";
import type { ClusterView, InvariantSet, LogView } from "./invariants.ts";
import type { AppliedState, SimDisk } from "./sim-disk.ts";
import { applyEntry, decodeAppliedState, encodeAppliedState } from "./state-machine.ts";
import type { TraceDetail } from "./trace.ts";

/** An input to a node's loop. `call` runs an arbitrary action on the core (propose, transfer, ...). */
export type NodeInput =
  | { readonly kind: "message"; readonly message: Message }
  | { readonly kind: "tick" }
  | { readonly kind: "call"; readonly run: (raw: RawNode) => void };

/** What a node needs from the simulator around it. */
export interface NodeHost {
  readonly nowMs: number;
  readonly invariants: InvariantSet;
  readonly cluster: ClusterView;
  schedule(atMs: number, fire: () => void): void;
  send(from: SimNode, messages: readonly Message[]): void;
  fsyncDelayMs(): number;
  applied(node: SimNode, entry: Entry): void;
  coreEvent(node: SimNode, event: RaftEvent): void;
  trace(node: NodeId, what: string, detail?: TraceDetail): void;
  /** The core (or the storage it drives) threw: a bug to report, never a simulated fault. */
  fail(node: SimNode, error: unknown): void;
}

/** Node knobs. */
export interface NodeOptions {
  /** Take a snapshot once this many entries were applied since the last one. */
  readonly snapshotIntervalEntries: number;
  /** Entries kept in the log behind a new snapshot (0 compacts everything). */
  readonly compactKeepEntries: number;
  /** Inputs queued while busy or paused beyond this are dropped (a bounded mailbox). */
  readonly inboxMax: number;
  /** Quiet ticks after which the core is unloaded and rebuilt from disk in its quiet role; 0 never. */
  readonly hibernateAfterTicks: number;
  /**
   * The group is told commits lazily, so the node runs the runtime's merged
   * round: a Ready that stores entries and commits only entries stored earlier
   * (`mayApplyBeforePersist`) applies them before its write, and the applied
   * state becomes durable with that write; a crash before it loses both.
   */
  readonly lazyCommitNotices?: boolean;
  /**
   * A leader's snapshot is restored this many fsync delays after it is
   * stored, as the runtime restores a large one off its Ready loop: meanwhile
   * the node takes Readies that apply nothing (`withholdApply`) and starts no
   * election, and a crash leaves its applied state behind the snapshot (a
   * restart restores again). 0 restores at once.
   */
  readonly restoreFsyncDelays?: number;
}

/** A simulated node process. */
export class SimNode {
  raw: RawNode | null = null;
  /** The state machine in memory; its durable copy lives on the disk. */
  state: AppliedState = { index: 0, hash: 0 };
  role: Role = Role.Follower;
  term: Term = 0;
  paused = false;
  /** Removed from the configuration and stopped for good. */
  retired = false;
  /** Index of the first applied configuration that included this node (Infinity: never yet). */
  joinedAtIndex = Number.POSITIVE_INFINITY;
  /** Index of the latest configuration this node applied (or received in a snapshot). */
  confKnownIndex = 0;
  /** The configuration that removed this node, once one is applied anywhere. */
  removal: { readonly index: LogIndex; readonly conf: ConfState } | null = null;
  /** Bumped on every crash, so events of an earlier life are ignored. */
  incarnation = 0;
  /**
   * Per peer, the newest of its incarnations whose stream to this node is
   * known broken (it crashed, and the loss was reported here): messages that
   * incarnation sent are not delivered any more.
   */
  readonly streamsClosed = new Map<NodeId, number>();
  tickCount = 0;
  /** Ticks the runtime would skip because the core was quiet (counted, not given to the core). */
  quiescedTicks = 0;
  /** Times the core was unloaded and rebuilt from disk in its quiet role. */
  hibernations = 0;
  /** Leader's snapshots taken up after a restore that took a while (see `restoreFsyncDelays`). */
  restoresTakenUp = 0;
  /** Times the node restarted with its disk lost (see `lostDisks`). */
  disksLost = 0;
  /**
   * Set while the node neither votes nor campaigns (RawNode.holdVotes): it
   * lost its disk and waits for the bootstrap check, as the runtime's cluster
   * group does (src/node/bootstrap-check.ts). Kept across a rebuilt core.
   */
  votesHeld = false;
  /** Set while the node steps no message until it learns the group's term (RawNode.awaitTerm); kept across a rebuilt core. */
  termUnknown = false;
  private quietTicksInARow = 0;
  private busy = false;
  private parked: Ready | null = null;
  private inbox: NodeInput[] = [];
  private pendingLeaderTerm: Term = 0;
  private checkedCommit: LogIndex = 0;
  /** Entries applied in memory by a merged round whose write is still in flight (see `lazyCommitNotices`). */
  private appliedUnsaved = false;
  /** The core's membership when the previous Ready was persisted, before it applied that Ready's conf changes. */
  private confBeforeLastReady: ConfState | undefined = undefined;
  /** The membership as of the last applied index, kept across a crash (a restart rebuilds the same). */
  private lastConf: ConfState | undefined = undefined;
  /** A leader's snapshot stored and being restored (see `restoreFsyncDelays`): the state it restores. */
  private restoring: AppliedState | undefined = undefined;
  readonly log: LogView;

  constructor(
    readonly id: NodeId,
    readonly slot: number,
    readonly disk: SimDisk,
    private readonly host: NodeHost,
    private readonly options: NodeOptions,
    private readonly makeConfig: (storage: SimDisk["live"], applied: LogIndex, onEvent: (e: RaftEvent) => void) => RaftConfig,
  ) {
    this.log = {
      term: (index) => {
        const live = this.disk.live;
        if (index < live.firstIndex() - 1 || index > live.lastIndex()) return undefined;
        return live.term(index);
      },
      lastIndex: () => this.disk.live.lastIndex(),
      snapshotIndex: () => this.disk.live.snapshot().metadata.index,
    };
  }

  /** Whether the process runs (it may still be paused). */
  get up(): boolean {
    return this.raw !== null;
  }

  /** Starts (or restarts) the process from what is on disk. */
  start(): void {
    if (this.raw !== null || this.retired) return;
    this.state = this.disk.applied();
    const stored = this.disk.live.snapshot();
    if (stored.metadata.index > this.state.index) {
      // Crashed while restoring a leader's snapshot: restored again before the core is built, as the runtime does.
      this.takeUp(decodeAppliedState(stored.data, stored.metadata.index));
    }
    this.role = Role.Follower;
    this.term = this.disk.live.getHardState().term;
    const config = this.makeConfig(this.disk.live, this.state.index, (e) => this.onEvent(e));
    this.guard(() => {
      this.raw = this.withHolds(new RawNode(config));
    });
    this.drain();
  }

  /** A core built anew (at start or after hibernation) keeps the holds of the bootstrap check. */
  private withHolds(raw: RawNode): RawNode {
    raw.holdVotes(this.votesHeld);
    if (this.termUnknown) raw.awaitTerm();
    return raw;
  }

  /** Holds or releases the node's votes (and campaigns). */
  holdVotes(held: boolean): void {
    this.votesHeld = held;
    this.raw?.holdVotes(held);
  }

  /** Steps no message from the next start on, until {@link adoptTerm}. */
  awaitTermOnStart(): void {
    this.termUnknown = true;
  }

  /** Takes the group's term and steps messages again (RawNode.adoptTerm). */
  adoptTerm(term: Term): void {
    this.termUnknown = false;
    this.guard(() => this.raw?.adoptTerm(term));
    this.processReadies();
  }

  /**
   * Loses the crashed node's disk (a lost data directory): the next start
   * finds it as at the node's first start, with the bootstrap entry of
   * `voters` (an initial member) or empty (a node added later).
   */
  loseDisk(voters: readonly NodeId[]): void {
    if (this.raw !== null) throw new Error(`${this.id} must be down to lose its disk`);
    this.disk.wipe(voters);
    this.state = { index: 0, hash: 0 };
    this.lastConf = undefined;
    this.confKnownIndex = 0;
    this.disksLost++;
  }

  /** Kills the process: in-flight writes, queued inputs and unsent messages are lost. */
  crash(): void {
    this.lastConf = this.confState();
    this.raw = null;
    this.incarnation++;
    this.busy = false;
    this.parked = null;
    this.paused = false;
    this.appliedUnsaved = false;
    this.restoring = undefined;
    this.inbox = [];
    this.pendingLeaderTerm = 0;
    this.role = Role.Follower;
    this.disk.crash();
  }

  /** The membership this node campaigns and counts votes with; undefined once retired. */
  confState(): ConfState | undefined {
    if (this.retired) return undefined;
    return this.raw?.confState() ?? this.lastConf;
  }

  /**
   * The memberships this node could campaign and count votes with before it
   * learns anything new: as it runs (its applied one, with the conf changes
   * it knows committed, which it applies before it campaigns) and as a
   * restart from its disk would have it. Empty once retired.
   */
  campaignConfs(): ConfState[] {
    if (this.retired) return [];
    const restarted = this.disk.durableCampaignConf();
    return this.raw === null ? [restarted] : [this.raw.campaignConfState(), restarted];
  }

  /** Stops the node for good (it was removed from the configuration). */
  retire(): void {
    this.crash();
    this.retired = true;
  }

  /** When the current pause started (virtual ms), to tell one pause from the next. */
  pausedSinceMs = -1;

  /** Freezes the process: no ticks, inputs wait, a completing write waits. */
  pause(): void {
    if (this.raw === null) return;
    this.paused = true;
    this.pausedSinceMs = this.host.nowMs;
  }

  /** Ends a pause and handles everything that waited. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const parked = this.parked;
    this.parked = null;
    if (parked !== null) this.completeReady(parked);
    else this.drain();
  }

  /**
   * Hands an input to the node loop: queued while paused (ticks are lost
   * then); stepped at once otherwise, also while a write is in flight, as the
   * runtime steps its cores while it awaits a Ready's write (only the next
   * Ready waits for that write to finish).
   */
  input(item: NodeInput): void {
    if (this.raw === null) return;
    if (this.paused && item.kind === "tick") return;
    if (this.paused) {
      if (this.inbox.length < this.options.inboxMax) this.inbox.push(item);
      return;
    }
    this.run(item);
    this.processReadies();
  }

  private run(item: NodeInput): void {
    const raw = this.raw;
    if (raw === null) return;
    this.guard(() => {
      if (item.kind === "message") raw.step(item.message);
      else if (item.kind === "tick") {
        // The runtime stops ticking a quiet group; the core would ignore the tick anyway.
        if (raw.isQuiesced()) {
          this.quiescedTicks++;
          if (++this.quietTicksInARow >= this.options.hibernateAfterTicks && this.options.hibernateAfterTicks > 0) this.hibernate(raw);
        } else {
          this.quietTicksInARow = 0;
          this.tickCount++;
          raw.tick();
        }
      } else item.run(raw);
    });
  }

  /**
   * Unloads the quiet core and builds it again from the disk in its quiet
   * role, as the runtime's hibernation does between two inputs: only with
   * nothing in flight (no write, no queued input).
   */
  private hibernate(raw: RawNode): void {
    const quiet = raw.quietState();
    if (quiet === undefined || this.busy || this.parked !== null || this.inbox.length > 0 || this.restoring !== undefined || raw.hasReady()) return;
    const config = this.makeConfig(this.disk.live, this.state.index, (e) => this.onEvent(e));
    this.raw = this.withHolds(new RawNode({ ...config, resume: quiet }));
    this.quietTicksInARow = 0;
    this.hibernations++;
  }

  private guard(action: () => void): void {
    try {
      action();
    } catch (error) {
      this.host.fail(this, error);
    }
  }

  private drain(): void {
    this.processReadies();
    while (!this.busy && !this.paused && this.raw !== null && this.inbox.length > 0) {
      const batch = this.inbox;
      this.inbox = [];
      for (const item of batch) this.run(item);
      this.processReadies();
    }
  }

  /** Handles Readies until one needs a sync (then waits for it) or there is nothing left. */
  private processReadies(): void {
    for (let guard = 0; guard < 100; guard++) {
      const raw = this.raw;
      const withholdApply = this.restoring !== undefined;
      if (raw === null || this.busy || this.paused || !raw.hasReady({ withholdApply })) return;
      const taken = raw.ready({ withholdApply });
      if (taken.mustSync || taken.snapshot !== null) {
        // A leader's Appends and heartbeats leave before its own write (as the runtime does); what
        // answers for persisted state (votes, append acknowledgements) waits for the sync.
        const early = taken.messages.filter(mayLeaveBeforePersist);
        if (early.length > 0) this.host.send(this, early);
        let ready: Ready = { ...taken, messages: taken.messages.filter((m) => !mayLeaveBeforePersist(m)) };
        if (this.options.lazyCommitNotices === true && ready.committedEntries.length > 0 && mayApplyBeforePersist(ready)) {
          // The merged round: applied now in memory, durable only with the write below.
          this.guard(() => this.applyInMemory(ready.committedEntries));
          ready = { ...ready, committedEntries: [] };
          this.appliedUnsaved = true;
        }
        this.busy = true;
        const incarnation = this.incarnation;
        this.host.schedule(this.host.nowMs + this.host.fsyncDelayMs(), () => this.syncDone(ready, incarnation));
        return;
      }
      this.finishReady(raw, taken);
    }
  }

  /** The restore of a leader's snapshot is done: its state is taken up and durable, and what committed meanwhile is applied. */
  private restoreDone(incarnation: number): void {
    const restored = this.restoring;
    if (incarnation !== this.incarnation || restored === undefined) return; // crashed meanwhile: restored again on start
    this.restoring = undefined;
    this.restoresTakenUp++;
    this.host.trace(this.id, "restore", `state taken up at ${restored.index}`);
    this.takeUp(restored);
    this.raw?.holdCampaigns(false);
    if (!this.busy) this.drain();
  }

  /** A restored state becomes the state machine's, durably. */
  private takeUp(state: AppliedState): void {
    this.state = state;
    this.disk.saveApplied(state);
  }

  private syncDone(ready: Ready, incarnation: number): void {
    if (incarnation !== this.incarnation) return; // crashed meanwhile: the write never happened
    if (this.paused) this.parked = ready;
    else this.completeReady(ready);
  }

  private completeReady(ready: Ready): void {
    this.busy = false;
    const raw = this.raw;
    if (raw === null) return;
    this.finishReady(raw, ready);
    this.drain();
  }

  /** Steps 1-4 of the Ready contract: persist, send, apply, advance; then maybe snapshot. */
  private finishReady(raw: RawNode, ready: Ready): void {
    this.guard(() => {
      this.persist(ready);
      this.host.send(this, ready.messages);
      this.apply(ready.committedEntries);
      raw.advance();
      this.maybeSnapshot(raw);
    });
  }

  private persist(ready: Ready): void {
    const { host, id } = this;
    let restored: AppliedState | null = null;
    if (ready.snapshot !== null) {
      // Checked before the write: a disk refusing an older snapshot would hide the core's mistake.
      const { metadata, data } = ready.snapshot;
      restored = decodeAppliedState(data, metadata.index);
      host.trace(id, "restore", `snapshot ${metadata.index}@${metadata.term}`);
      host.invariants.snapshotRestored(id, metadata, restored, this.state);
    }
    this.disk.write(ready.snapshot, ready.entries, ready.hardState, ready.mustSync);
    if (ready.hardState !== null && ready.hardState.term > this.term) this.term = ready.hardState.term;
    if (restored !== null) {
      const delays = this.options.restoreFsyncDelays ?? 0;
      if (delays === 0) {
        this.takeUp(restored);
      } else {
        this.restoring = restored;
        this.raw?.holdCampaigns(true);
        const incarnation = this.incarnation;
        this.host.schedule(this.host.nowMs + delays * this.host.fsyncDelayMs(), () => this.restoreDone(incarnation));
      }
    }
    if (ready.entries.length > 0) host.invariants.entriesPersisted(id, ready.entries, this.log);
    if (this.pendingLeaderTerm !== 0) {
      host.invariants.leaderLogPersisted(id, this.pendingLeaderTerm, this.log);
      this.pendingLeaderTerm = 0;
    }
    const commit = ready.hardState?.commit ?? 0;
    const conf = this.raw?.confState();
    if (this.role === Role.Leader && commit > this.checkedCommit) {
      this.checkedCommit = commit;
      const entryTerm = this.log.term(commit);
      if (entryTerm !== undefined && conf !== undefined) {
        host.invariants.commitAdvanced(id, this.term, commit, entryTerm, conf, host.cluster, this.confBeforeLastReady);
      }
    }
    // The membership this Ready's commits may have been counted with, for the next Ready's check.
    this.confBeforeLastReady = conf;
  }

  private apply(entries: readonly Entry[]): void {
    if (entries.length > 0) this.applyInMemory(entries);
    if (entries.length > 0 || this.appliedUnsaved) this.disk.saveApplied(this.state);
    this.appliedUnsaved = false;
  }

  private applyInMemory(entries: readonly Entry[]): void {
    const { host, id } = this;
    host.invariants.entriesCommitted(id, this.term, entries);
    for (const entry of entries) {
      const after = applyEntry(this.state, entry);
      host.invariants.entryApplied(id, entry, this.state, after);
      this.state = after;
      host.applied(this, entry);
    }
  }

  private maybeSnapshot(raw: RawNode): void {
    if (this.restoring !== undefined) return;
    const live = this.disk.live;
    const applied = this.state.index;
    if (applied - live.snapshot().metadata.index < this.options.snapshotIntervalEntries) return;
    if (applied > live.lastIndex()) return;
    const compactTo = Math.max(live.firstIndex() - 1, applied - this.options.compactKeepEntries);
    this.disk.snapshotAndCompact(applied, raw.confState(), encodeAppliedState(this.state), compactTo);
  }

  private onEvent(event: RaftEvent): void {
    if (event.kind !== "conf-change-applied" && event.kind !== "snapshot-restored") {
      this.term = event.term;
      this.role =
        event.kind === "became-leader"
          ? Role.Leader
          : event.kind === "became-candidate"
            ? Role.Candidate
            : event.kind === "became-pre-candidate"
              ? Role.PreCandidate
              : Role.Follower;
      if (event.kind === "became-leader") {
        this.host.invariants.leaderElected(this.id, event.term);
        const conf = this.raw?.confState() ?? this.lastConf;
        if (conf !== undefined) this.host.invariants.leaderElectedIn(this.id, event.term, conf, this.host.cluster);
        this.pendingLeaderTerm = event.term;
        // Commit moves made before leading (as a follower, in the same batch) are not the leader's.
        this.checkedCommit = Math.max(this.checkedCommit, this.raw?.status().commit ?? 0);
        // A new leader counts with the membership it has now: nothing older excuses its commits.
        this.confBeforeLastReady = undefined;
      }
    }
    this.host.coreEvent(this, event);
  }
}

