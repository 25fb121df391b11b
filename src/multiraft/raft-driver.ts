import type { Logger } from "pino";
import { assert } from "../raft/assert.ts";
import { isConfMember } from "../raft/conf-change.ts";
import { RawNode, type QuietState, type RaftConfig, type RaftEvent, type RaftStatus } from "../raft/raw-node.ts";
import { mayApplyBeforePersist, mayLeaveBeforePersist, MessageType, noCatchUpFloor, Role, type CatchUpFloor, type ConfChange, type ConfState, type Entry, type GroupId, type HardState, type LogIndex, type Message, type NodeId, type Ready, type Term, type Transport } from "../raft/types.ts";
import type { AppliedWrites, GroupStore, LocalWrites, StorageEngine } from "../storage/storage-engine.ts";
import { NotLeaderError, OutcomeUnknownError, ProposalDroppedError, ProposalRefusedError, UnknownGroupError } from "./errors.ts";
import { planLeaderTransfers } from "./leader-balancer.ts";
import type { SnapshotChunks, StateMachine } from "./state-machine.ts";
import { storedLogView, storedNextIndex, type StoredLogView } from "./stored-next.ts";

/** Timing and limits of every group a driver hosts. */
export type GroupRaftSettings = Pick<
  RaftConfig,
  "electionTimeoutTicks" | "heartbeatTicks" | "preVote" | "checkQuorum" | "maxMessageBytes" | "maxInflightMessages" | "maxUncommittedBytes" | "maxCommittedBytesPerReady"
>;

/** Per-group choices made when a group is added. */
export interface AddGroupOptions {
  /**
   * Let the group quiesce when idle (see `RaftConfig.quiesce`): it then
   * costs nothing per tick. Default false.
   */
  readonly quiesce?: boolean;
  /**
   * Followers learn new commit indexes with the next Append or, when none
   * follows, `commitNoticeDelayMs` later (see `RaftConfig.lazyCommitNotices`):
   * for a group whose followers need not apply at once. Default false.
   */
  readonly lazyCommitNotices?: boolean;
  /** Count the group in leader balancing (see {@link RaftDriverOptions.balanceLeadersEveryMs}). Default false. */
  readonly balanceLeadership?: boolean;
  /**
   * Let the group leave memory when it has been quiet for
   * {@link RaftDriverOptions.hibernateAfterMs} (needs `quiesce`), and come
   * back on its next input; see {@link GroupHibernation}.
   */
  readonly hibernation?: GroupHibernation;
  /**
   * Host the group unloaded from the start (needs `hibernation`): for a
   * homeserver reopening thousands of groups after a restart, which know no
   * leader yet and elect one when something needs them.
   */
  readonly startUnloaded?: boolean;
}

/**
 * How the owner of a group unloads it and loads it again. A hibernating
 * group costs a few hundred bytes: its core, log mirror and state machine
 * are dropped and rebuilt from RocksDB on its next message, proposal or
 * read, in the same quiet role it had (see `RaftConfig.resume`).
 */
export interface GroupHibernation {
  /** Opens the group's store and its state machine again. */
  load(): Promise<{ readonly store: GroupStore; readonly stateMachine: StateMachine }>;
  /** Asked before unloading: false keeps the group in memory (its owner has work pending for it). */
  mayUnload(): boolean;
  /** The group was unloaded and its store closed: drop every reference to the store and the state machine. */
  unloaded(): void;
}

/** Observers for metrics; every member optional. */
export interface DriverObserver {
  onProposal?(groupId: GroupId): void;
  onCommitted?(groupId: GroupId, entries: number): void;
  onEvent?(groupId: GroupId, event: RaftEvent): void;
  onApplyLag?(groupId: GroupId, entries: number): void;
  /** A round of the Ready loop handled the Readies of `groups` groups together. */
  onReadyRound?(groups: number): void;
  /** A hibernating group was loaded back into memory. */
  onGroupLoaded?(groupId: GroupId): void;
}

/** What the driver sends through: Raft messages, and snapshots whose data streams as the transfer goes. */
export interface DriverTransport extends Transport {
  /**
   * Sends a Snapshot message whose data is read from `chunks` while it is
   * sent (`message.snapshot.data` is not sent). The outcome comes back
   * through {@link RaftDriver.reportSnapshot}.
   */
  sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): void;
}

/** Settings of a {@link RaftDriver}. */
export interface RaftDriverOptions {
  readonly selfId: NodeId;
  readonly engine: StorageEngine;
  readonly transport: DriverTransport;
  readonly logger: Logger;
  readonly raft: GroupRaftSettings;
  /** Wall-clock length of one Raft tick. */
  readonly tickIntervalMs: number;
  /**
   * How long a leader of a group told commits lazily waits for an Append to
   * carry a new commit index before it sends the followers a notice of its
   * own (instead of waiting for the next tick). Under load the next Append
   * comes first; an idle follower learns the commit this much later than
   * with immediate notices. Default 2.
   */
  readonly commitNoticeDelayMs?: number;
  /** Source of the cores' randomized election timeouts. */
  readonly random: () => number;
  /** Compact the log after this many applied entries (see maybeSnapshot). */
  readonly snapshotEveryEntries: number;
  /** Entries kept behind a snapshot, so a follower slightly behind needs no snapshot. */
  readonly snapshotKeepEntries: number;
  /**
   * Compact the log also once the entries applied since the last compaction
   * hold this many bytes, whatever their number: the uncompacted log is held
   * in memory (the core reads it), so large entries must not wait for
   * `snapshotEveryEntries` of them. Absent: by count only.
   */
  readonly snapshotEveryBytes?: number;
  /** Of the `snapshotKeepEntries` kept behind a snapshot, only as many as hold at most this many bytes. Absent: by count only. */
  readonly snapshotKeepBytes?: number;
  /** The client address of a homeserver, for "not leader" hints. */
  readonly clientAddressOf: (id: NodeId) => string;
  readonly observer?: DriverObserver;
  /** Called when the node can no longer run safely (a storage failure); the process must stop. */
  readonly onFatal: (error: unknown) => void;
  /**
   * Called after a round handed its groups' state machines the entries they
   * stored (`StateMachine.storedNext`) and before the round's answers to
   * leaders leave: what they queued (signatures) can go first, on the same
   * peer streams.
   */
  readonly afterStoredNext?: () => void;
  /**
   * How often to look at leadership of the groups added with
   * `balanceLeadership` and hand some over when this homeserver leads more
   * than its share (see leader-balancer.ts); 0 or absent: never.
   */
  readonly balanceLeadersEveryMs?: number;
  /** Most leadership transfers started per balancing round. Default 20. */
  readonly balanceTransfersMax?: number;
  /**
   * Told when a group this homeserver leads gets a message from a homeserver
   * outside its membership (one removed that never learned it was).
   */
  readonly onForeignMessage?: (from: NodeId, groupId: GroupId) => void;
  /**
   * Told when a message arrives for a group this homeserver does not host
   * (neither loaded nor hibernating): its copy was dropped, or lost with the
   * data directory while the sender still counts it as a member.
   */
  readonly onUnhostedMessage?: (from: NodeId, groupId: GroupId) => void;
  /**
   * Asked, on a group's leader, before a proposal a follower forwarded is
   * appended: the proposal to append (the same, or its entries with more
   * in them), or undefined to keep it out of the log (the hook may propose
   * it later).
   */
  readonly admitForwarded?: (groupId: GroupId, message: Message) => Message | undefined;
  /**
   * Unload groups added with `hibernation` after this long quiet; 0 or absent:
   * never. A group that comes back soon after it left waits longer the next
   * time (see {@link nextHibernateDelayMs}).
   */
  readonly hibernateAfterMs?: number;
  /**
   * Most groups added with `hibernation` kept in memory: beyond it, quiet
   * ones leave memory before their quiet time is up, those quiet longest
   * first. Bounds a homeserver's memory however many channels were used
   * lately. 0 or absent: no bound.
   */
  readonly loadedGroupsMax?: number;
  /** Told after every hibernation sweep how many groups it unloaded (0 too: a wave of unloads is over). */
  readonly onHibernated?: (unloaded: number) => void;
  /**
   * A loaded group that knows no leader this long is counted as leaderless
   * ({@link RaftDriver.counts}) and logged (again every {@link leaderlessLogEveryMs}):
   * an election takes about one election timeout, so a group this long
   * without a leader has lost its quorum, or is stuck (see docs/ARCHITECTURE.md,
   * "Open"). Default {@link leaderlessAfterMsDefault}.
   */
  readonly leaderlessAfterMs?: number;
}

/** See {@link RaftDriverOptions.leaderlessAfterMs}. */
export const leaderlessAfterMsDefault = 30_000;
/** How often a group that stays leaderless is logged again. */
export const leaderlessLogEveryMs = 10 * 60_000;

/** The committed outcome of a proposal. */
export interface Applied {
  readonly index: LogIndex;
  readonly term: Term;
  readonly result: unknown;
}

interface ProposalWaiter {
  readonly term: Term;
  /** Answered once applied in memory, before the apply is written (see {@link ProposeOptions}). */
  readonly beforeWrite: boolean;
  readonly resolve: (applied: Applied) => void;
  readonly reject: (error: Error) => void;
}

/** How a proposer wants to be answered. */
export interface ProposeOptions {
  /**
   * Answer as soon as the entry is committed and applied in memory, before
   * the apply batch is written (on a CPU-bound machine that write waits
   * for a thread-pool thread and the event loop: about 1 ms at the median).
   * Safe for a proposer that needs only the result: the entry is committed,
   * so a crash before the write replays it, and reads (`readIndex`) wait
   * for the applied index, which moves only after the write. Not for a
   * proposer that then reads the stored state without a read index.
   */
  readonly answerBeforeWrite?: boolean;
}

interface ReadWaiter {
  index: LogIndex;
  readonly resolve: (index: LogIndex) => void;
  readonly reject: (error: Error) => void;
}

/** What a round's apply produced: its storage writes, and what to answer once they are written. */
interface AppliedRound {
  readonly writes: AppliedWrites[];
  readonly localWrites: LocalWrites[];
  readonly outcomes: Array<{ readonly group: HostedGroup; readonly entries: readonly Entry[]; readonly results: ReadonlyMap<LogIndex, unknown>; readonly appliedIndex: LogIndex; readonly afterWrite: (() => void) | undefined }>;
}

/** One Raft group hosted by this homeserver. */
interface HostedGroup {
  readonly groupId: GroupId;
  readonly store: GroupStore;
  readonly node: RawNode;
  readonly stateMachine: StateMachine;
  readonly proposals: Map<LogIndex, ProposalWaiter>;
  /** Read requests by context, waiting for their read index, then for apply to reach it. */
  readonly reads: Map<string, ReadWaiter>;
  /** The read request not yet asked of the core: callers until then share it (see {@link RaftDriver.readIndex}). */
  openRead: { readonly context: string; readonly callers: Array<Pick<ReadWaiter, "resolve" | "reject">> } | undefined;
  appliedIndex: LogIndex;
  lastSnapshotIndex: LogIndex;
  /** Bytes of the entries applied since the last compaction (see {@link RaftDriverOptions.snapshotEveryBytes}). */
  appliedBytesSinceSnapshot: number;
  /**
   * A leader's snapshot this group's state machine is being restored from
   * (see {@link RaftDriver.restoreThenFinish}): until it is done, the group's
   * Readies store, vote and answer but apply nothing.
   */
  restoring: SnapshotRestore | undefined;
  /** A compaction is being recorded. */
  snapshotting: boolean;
  /** Snapshots for followers being read from the state machine. */
  /** Counted in leader balancing. */
  readonly balanced: boolean;
  /** Index of the empty entry this node appended when it last became leader of the group. */
  termStartIndex: LogIndex;
  readonly options: AddGroupOptions;
  /**
   * When the Ready loop last found the group with an input (a message, a
   * proposal, a read, a tick while awake): its quiet time counts from here,
   * and the longest quiet leave memory first.
   */
  lastInputMs: number;
  /** How long this group must be quiet before it is unloaded (see {@link nextHibernateDelayMs}). */
  hibernateDelayMs: number;
  /** The index and term of the last entry handed to `StateMachine.storedNext` (see {@link RaftDriver.offerStoredNext}). */
  offeredNext: { index: LogIndex; term: Term };
  /** Its stable log and core as `storedNextIndex` reads them. */
  readonly storedView: StoredLogView;
}

/** A hosted group unloaded from memory (see {@link GroupHibernation}): what is needed to answer for it and reload it. */
interface DormantGroup {
  readonly groupId: GroupId;
  readonly options: AddGroupOptions & { readonly hibernation: GroupHibernation };
  /** The quiet role to resume in; undefined when the group knows no leader (restarted, or its leader's stream broke). */
  quiet: QuietState | undefined;
  readonly status: RaftStatus;
  readonly termStartIndex: LogIndex;
  /** Messages that arrived for it, delivered in order once it is loaded. */
  readonly pending: Message[];
  loading: Promise<HostedGroup | undefined> | undefined;
  /** Campaign at once when loaded without a leader: a local caller needs the group. */
  campaignOnLoad: boolean;
  /** When it was unloaded, and the quiet time it had been given then. */
  readonly unloadedAtMs: number;
  readonly hibernateDelayMs: number;
}

const noProgress: RaftStatus["progress"] = new Map();

/** Most messages queued for one unloaded group while it loads; Raft copes with the rest being lost. */
const dormantPendingMax = 1024;

/**
 * Most groups a Ready round may handle for their stored entries to go to
 * `StateMachine.storedNext` (signed ahead of their commit). Under load a
 * round stores entries of dozens of groups: acting on them first would hold
 * the round's acknowledgements back and split a homeserver's signatures
 * into more batches, for a hop that is small next to the queueing; they are
 * signed when applied instead.
 */
const storedNextRoundGroupsMax = 4;

/** A group back within this many of its quiet times after unloading was unloaded too early. */
const reloadedSoonFactor = 4;
/** A restore from a leader's snapshot under way: its state is written off the Ready loop, then taken up in it. */
interface SnapshotRestore {
  /** The snapshot's data as the core holds it (a staged snapshot's descriptor). */
  readonly data: Uint8Array;
  /** The stored Ready that carried the snapshot (done with at once: it hands out no committed entries). */
  readonly ready: Ready;
  /** The state is written; the Ready loop is to take it up. */
  written: boolean;
  /** Resolves once the restore is over, done or given up (the group left, the driver stopped, storage failed). */
  readonly settled: Promise<void>;
  readonly settle: () => void;
}

function snapshotRestore(ready: Ready): SnapshotRestore {
  let settle = (): void => undefined;
  const settled = new Promise<void>((resolve) => {
    settle = resolve;
  });
  return { data: ready.snapshot!.data, ready, written: false, settled, settle };
}

/** Ends a restore no longer wanted (the driver stopped, or the group left) between two of its chunks. */
class RestoreCutOffError extends Error {
  constructor(groupId: GroupId) {
    super(`the restore of group ${groupId} was cut off`);
    this.name = "RestoreCutOffError";
  }
}

/** `chunks`, ending with a {@link RestoreCutOffError} before the first chunk read once `cutOff()` holds. */
async function* untilCutOff(chunks: SnapshotChunks, groupId: GroupId, cutOff: () => boolean): SnapshotChunks {
  for await (const chunk of chunks) {
    if (cutOff()) throw new RestoreCutOffError(groupId);
    yield chunk;
  }
}

/** The data of a snapshot taken to compact the log: none (see {@link RaftDriver.maybeSnapshot}). */
const noSnapshotData = new Uint8Array(0);

/** Longest quiet time before unloading, in multiples of `hibernateAfterMs`. */
const hibernateDelayFactorMax = 8;

/**
 * The quiet time a group reloaded `awayMs` after it was unloaded gets before
 * it is unloaded again. Back soon (within {@link reloadedSoonFactor} quiet
 * times), it doubles, up to {@link hibernateDelayFactorMax} times the base:
 * a channel used every 15 s is not read back from RocksDB for every commit
 * when the base is 10 s. Back after longer, it is the base again, so a group
 * idle for good leaves memory as soon as before.
 */
export function nextHibernateDelayMs(baseMs: number, lastDelayMs: number, awayMs: number): number {
  return awayMs < lastDelayMs * reloadedSoonFactor ? Math.min(lastDelayMs * 2, baseMs * hibernateDelayFactorMax) : baseMs;
}

/**
 * Runs many Raft groups in one process: ticks them, routes peer messages to
 * them, and handles their Readies together, so the entries and hard states
 * of all groups that have work share ONE synced RocksDB batch. Per Ready the
 * order is the contract's: persist, then send, then apply, then advance.
 *
 * Nothing here walks every group per tick or per round: only awake groups
 * tick, and only groups given an input since their last empty Ready are
 * asked for one. A quiet group costs memory only.
 */
export class RaftDriver {
  private readonly groups = new Map<GroupId, HostedGroup>();
  /** Hosted groups unloaded from memory. Invariant: disjoint from `groups`. */
  private readonly dormant = new Map<GroupId, DormantGroup>();
  /** Groups whose core is not quiesced: the only ones ticked. Invariant: holds every such hosted group. */
  private readonly awake = new Set<HostedGroup>();
  /** Groups given an input since their last empty Ready: the only ones the Ready loop asks. */
  private readonly dirty = new Set<HostedGroup>();
  private ticker: NodeJS.Timeout | undefined;
  /** Lazily told groups whose leader holds a commit notice, and the timer that sends them. */
  private readonly commitNoticesDue = new Set<HostedGroup>();
  private commitNoticeTimer: NodeJS.Timeout | undefined;
  private balancer: NodeJS.Timeout | undefined;
  private hibernator: NodeJS.Timeout | undefined;
  private leaderWatch: NodeJS.Timeout | undefined;
  /** Awake groups that knew no leader at the last look: since when, and when last logged (see {@link watchLeaders}). */
  private leaderless = new Map<HostedGroup, { readonly sinceMs: number; loggedAtMs: number }>();
  private loopScheduled = false;
  /** The group whose core is being built: the conf changes it replays from its log change nothing. */
  private building: GroupId | undefined;
  /** The hibernation timer fired while the Ready loop ran: sweep between its rounds. */
  private hibernationDue = false;
  private loopRunning: Promise<void> | undefined;
  private stopped = false;
  private readCounter = 0;

  constructor(private readonly options: RaftDriverOptions) {}

  /** Hosts a group over its loaded store; restores its state machine if a snapshot got ahead of it. */
  async addGroup(store: GroupStore, stateMachine: StateMachine, options: AddGroupOptions = {}): Promise<void> {
    const snapshot = store.log.snapshot();
    if (store.appliedIndex < snapshot.metadata.index) {
      // A crash between installing a leader's snapshot and taking up the state restored from it.
      this.options.logger.warn({ groupId: store.groupId, index: snapshot.metadata.index, applied: store.appliedIndex }, "restoring the state machine again from the stored snapshot (a restore was cut off)");
      await stateMachine.restoreStored(this.options.engine.snapshotChunks(snapshot.data));
      await stateMachine.afterRestore(snapshot.metadata.index);
      await store.recordRestored(snapshot.metadata.index);
    }
    // Restored (now or before a crash that came before its staged data was deleted): not needed any more.
    await this.options.engine.discardStagedSnapshot(snapshot.data);
    assert(options.hibernation === undefined || options.quiesce === true, "a hibernating group must quiesce");
    assert(!this.groups.has(store.groupId) && !this.dormant.has(store.groupId), `group ${store.groupId} is already hosted`);
    const group = this.host(store, stateMachine, options, undefined, 0);
    // Unloaded from the start only with nothing left to apply (a crash may have lost applied state).
    const settled = group.appliedIndex >= group.node.status().commit;
    if (options.startUnloaded === true && options.hibernation !== undefined && settled) this.unload(group, { ...options, hibernation: options.hibernation }, undefined);
    else this.touch(group);
  }

  private host(store: GroupStore, stateMachine: StateMachine, options: AddGroupOptions, resume: QuietState | undefined, termStartIndex: LogIndex, hibernateDelayMs = this.options.hibernateAfterMs ?? 0): HostedGroup {
    const groupId = store.groupId;
    this.building = groupId;
    const node = new RawNode({
      ...this.options.raft,
      id: this.options.selfId,
      groupId,
      storage: store.log,
      random: this.options.random,
      applied: store.appliedIndex,
      catchUpFloor: store.catchUpFloor,
      quiesce: options.quiesce ?? false,
      lazyCommitNotices: options.lazyCommitNotices ?? false,
      onEvent: (event) => this.onRaftEvent(groupId, event),
      ...(resume === undefined ? {} : { resume }),
    });
    this.building = undefined;
    const group: HostedGroup = {
      groupId,
      store,
      node,
      stateMachine,
      proposals: new Map(),
      reads: new Map(),
      openRead: undefined,
      appliedIndex: store.appliedIndex,
      lastSnapshotIndex: store.log.snapshot().metadata.index,
      appliedBytesSinceSnapshot: appliedBytesAfter(store, store.log.snapshot().metadata.index),
      snapshotting: false,
      restoring: undefined,
      balanced: options.balanceLeadership ?? false,
      termStartIndex,
      options,
      lastInputMs: Date.now(),
      hibernateDelayMs,
      offeredNext: { index: 0, term: 0 },
      storedView: storedLogView(store.log, node),
    };
    this.groups.set(groupId, group);
    return group;
  }

  // ---- hibernation ---------------------------------------------------------------------------------

  /**
   * Unloads the groups quiet for their hibernate delay, and then, while more
   * than `loadedGroupsMax` hibernation groups are loaded, the quiet ones in
   * order of their last input, each only if its owner agrees. Never while a
   * Ready is handled: the sweep runs from its timer while the Ready loop is
   * idle, or between two rounds of the loop (which, under steady load, never
   * idles).
   */
  private hibernateQuietGroups(): void {
    this.hibernationDue = false;
    if (this.stopped || !this.hibernates()) return;
    const now = Date.now();
    const timed = (this.options.hibernateAfterMs ?? 0) > 0;
    let loaded = 0;
    let unloaded = 0;
    const quietLonger: HostedGroup[] = [];
    for (const group of [...this.groups.values()]) {
      if (group.options.hibernation === undefined) continue;
      loaded++;
      if (!this.isIdle(group)) continue;
      if (timed && now - group.lastInputMs >= group.hibernateDelayMs) {
        if (this.tryUnload(group)) unloaded++;
      } else {
        quietLonger.push(group);
      }
    }
    const max = this.options.loadedGroupsMax ?? 0;
    if (max > 0 && loaded - unloaded > max) {
      quietLonger.sort((a, b) => a.lastInputMs - b.lastInputMs);
      for (const group of quietLonger) {
        if (loaded - unloaded <= max) break;
        if (this.tryUnload(group)) unloaded++;
      }
    }
    this.options.onHibernated?.(unloaded);
  }

  /** Whether hibernation is on: by quiet time, by a bound on loaded groups, or both. */
  private hibernates(): boolean {
    return (this.options.hibernateAfterMs ?? 0) > 0 || (this.options.loadedGroupsMax ?? 0) > 0;
  }

  /** Quiesced, no input waiting, nobody waiting on it, no snapshot being taken. */
  private isIdle(group: HostedGroup): boolean {
    return group.node.isQuiesced() && !this.dirty.has(group) && group.proposals.size === 0 && group.reads.size === 0 && !group.snapshotting && group.restoring === undefined;
  }

  /** Unloads an idle group if it is in a quiet role and its owner agrees. */
  private tryUnload(group: HostedGroup): boolean {
    const hibernation = group.options.hibernation;
    if (hibernation === undefined) return false;
    const quiet = group.node.quietState();
    if (quiet === undefined || !hibernation.mayUnload()) return false;
    this.unload(group, { ...group.options, hibernation }, quiet);
    return true;
  }

  /** Replaces a loaded group by its dormant record and closes its store. Only between Readies. */
  private unload(group: HostedGroup, options: DormantGroup["options"], quiet: QuietState | undefined): void {
    this.groups.delete(group.groupId);
    this.awake.delete(group);
    this.dirty.delete(group);
    this.dormant.set(group.groupId, {
      groupId: group.groupId,
      options,
      quiet,
      status: { ...group.node.status(), progress: noProgress },
      termStartIndex: group.termStartIndex,
      pending: [],
      loading: undefined,
      campaignOnLoad: false,
      unloadedAtMs: Date.now(),
      hibernateDelayMs: group.hibernateDelayMs,
    });
    this.options.engine.closeGroup(group.store);
    options.hibernation.unloaded();
  }

  /**
   * Loads `groupId` again if it hibernates (no-op otherwise); resolves once
   * it is in memory. With `campaignIfLeaderless`, a group that knows no
   * leader campaigns at once: a local caller needs it.
   */
  async wake(groupId: GroupId, campaignIfLeaderless = true): Promise<void> {
    const dormant = this.dormant.get(groupId);
    if (dormant !== undefined && campaignIfLeaderless) dormant.campaignOnLoad = true;
    await this.load(groupId);
  }

  /** Whether `groupId` is hosted here but unloaded from memory. */
  isDormant(groupId: GroupId): boolean {
    return this.dormant.has(groupId);
  }

  private load(groupId: GroupId): Promise<HostedGroup | undefined> {
    const loaded = this.groups.get(groupId);
    if (loaded !== undefined) return Promise.resolve(loaded);
    const dormant = this.dormant.get(groupId);
    if (dormant === undefined) return Promise.resolve(undefined);
    dormant.loading ??= this.reload(dormant);
    return dormant.loading;
  }

  private async reload(dormant: DormantGroup): Promise<HostedGroup | undefined> {
    let opened;
    try {
      opened = await dormant.options.hibernation.load();
    } catch (error) {
      // The group's records could not be read back: storage failed under us.
      this.failFatally(error);
      return undefined;
    }
    if (this.stopped || this.dormant.get(dormant.groupId) !== dormant) {
      // Removed (or the driver stopped) while loading.
      for (const m of dormant.pending) this.dropStaged(m);
      this.options.engine.closeGroup(opened.store);
      dormant.options.hibernation.unloaded();
      return undefined;
    }
    this.dormant.delete(dormant.groupId);
    const delayMs = nextHibernateDelayMs(this.options.hibernateAfterMs ?? 0, dormant.hibernateDelayMs, Date.now() - dormant.unloadedAtMs);
    const group = this.host(opened.store, opened.stateMachine, dormant.options, dormant.quiet, dormant.termStartIndex, delayMs);
    this.options.observer?.onGroupLoaded?.(dormant.groupId);
    for (const message of dormant.pending) this.deliver(group, message);
    if (dormant.quiet === undefined && dormant.campaignOnLoad) group.node.campaign();
    this.touch(group);
    return group;
  }

  /**
   * Stops hosting `groupId` (this homeserver is no longer one of its
   * members); its callers fail. Resolves once no Ready of it is in flight,
   * so the caller may then drop its storage.
   */
  async removeGroup(groupId: GroupId): Promise<void> {
    const dormant = this.dormant.get(groupId);
    if (dormant !== undefined) {
      this.dormant.delete(groupId);
      for (const m of dormant.pending) this.dropStaged(m);
      await dormant.loading;
    }
    const group = this.groups.get(groupId);
    if (group === undefined) return;
    this.groups.delete(groupId);
    this.awake.delete(group);
    this.dirty.delete(group);
    // A restore under way writes the group's keys: the caller may drop them only after it.
    await this.restoreStopped(group);
    for (const waiter of group.proposals.values()) waiter.reject(new OutcomeUnknownError(groupId, "this homeserver left the group"));
    for (const read of group.reads.values()) read.reject(new OutcomeUnknownError(groupId, "this homeserver left the group"));
    group.proposals.clear();
    group.reads.clear();
    await this.loopRunning;
  }

  /**
   * Resolves once a restore of `group` no longer writes: at once when there is
   * none, or when its state is written and only the take-up is left, which
   * will not run for a group leaving or a driver stopping (the applied index
   * has not moved, so the next start restores again).
   */
  private restoreStopped(group: HostedGroup): Promise<void> {
    if (group.restoring === undefined) return Promise.resolve();
    if (group.restoring.written) group.restoring.settle();
    return group.restoring.settled;
  }

  /**
   * Whether this homeserver leads `groupId` and has applied the first entry
   * of its term: everything committed before it became leader is then
   * applied here, so its state machine is current for deciding what to admit.
   */
  leaderReady(groupId: GroupId): boolean {
    const dormant = this.dormant.get(groupId);
    // Unloaded quiet: everything was applied, its term's first entry included.
    if (dormant !== undefined) return dormant.quiet?.leader === this.options.selfId;
    const group = this.groups.get(groupId);
    return group !== undefined && group.node.leader() === this.options.selfId && group.appliedIndex >= group.termStartIndex;
  }

  /** Whether `groupId` is hosted here. */
  hosts(groupId: GroupId): boolean {
    return this.groups.has(groupId) || this.dormant.has(groupId);
  }

  /** The membership of `groupId` as its core knows it now. */
  confState(groupId: GroupId): ConfState {
    const dormant = this.dormant.get(groupId);
    if (dormant !== undefined) return dormant.status.confState;
    return this.group(groupId).node.confState();
  }

  /** Whether `groupId`'s copy here is catching up (see RawNode.catchingUp); one not loaded counts as catching up (load it to tell). */
  catchingUp(groupId: GroupId): boolean {
    const group = this.groups.get(groupId);
    return group === undefined || group.node.catchingUp();
  }

  /** The catch-up floor `groupId`'s copy here was made with (none for one not loaded: load it to tell). */
  catchUpFloor(groupId: GroupId): CatchUpFloor {
    return this.groups.get(groupId)?.node.catchUpFloor() ?? noCatchUpFloor;
  }

  /** Whether `groupId`'s log holds a conf change its core has not applied (a hibernating group holds none: it applied everything). */
  holdsUnappliedConfChange(groupId: GroupId): boolean {
    if (this.dormant.has(groupId)) return false;
    return this.group(groupId).node.holdsUnappliedConfChange();
  }

  /**
   * Records that `group`'s core got an input: it may have a Ready, and it
   * ticks exactly while it is not quiesced. Call after every input.
   */
  private touch(group: HostedGroup): void {
    this.dirty.add(group);
    if (group.node.isQuiesced()) this.awake.delete(group);
    else this.awake.add(group);
    this.schedule();
  }

  /**
   * How many groups are hosted, how many of them are awake (ticking), how
   * many are unloaded (hibernating), and how many loaded ones have known no
   * leader for {@link RaftDriverOptions.leaderlessAfterMs} or longer.
   */
  counts(): { readonly groups: number; readonly awake: number; readonly unloaded: number; readonly leaderless: number } {
    const since = Date.now() - (this.options.leaderlessAfterMs ?? leaderlessAfterMsDefault);
    let leaderless = 0;
    for (const { sinceMs } of this.leaderless.values()) if (sinceMs <= since) leaderless++;
    return { groups: this.groups.size + this.dormant.size, awake: this.awake.size, unloaded: this.dormant.size, leaderless };
  }

  /**
   * Notes since when each awake group has known no leader, and logs one that
   * has known none for {@link RaftDriverOptions.leaderlessAfterMs} (a quiet
   * group knows its leader; only awake ones are looked at, and a group that
   * went quiet or left drops out).
   */
  private watchLeaders(): void {
    const now = Date.now();
    const afterMs = this.options.leaderlessAfterMs ?? leaderlessAfterMsDefault;
    const seen = new Map<HostedGroup, { readonly sinceMs: number; loggedAtMs: number }>();
    for (const group of this.awake) {
      if (group.node.leader() !== "") continue;
      const noted = this.leaderless.get(group) ?? { sinceMs: now, loggedAtMs: 0 };
      seen.set(group, noted);
      const forMs = now - noted.sinceMs;
      if (forMs < afterMs || now - noted.loggedAtMs < leaderlessLogEveryMs) continue;
      noted.loggedAtMs = now;
      this.options.logger.warn(
        { groupId: group.groupId, seconds: Math.round(forMs / 1000), term: group.node.status().term, voters: [...group.node.confState().voters], catchingUp: group.node.catchingUp() },
        "a Raft group has known no leader for a long time: a majority of its voters is down or cut off, or it is stuck (a channel group whose homeserver lost its data directory during a membership change stays so; see the operations notes)",
      );
    }
    this.leaderless = seen;
  }

  private onRaftEvent(groupId: GroupId, event: RaftEvent): void {
    this.options.observer?.onEvent?.(groupId, event);
    const log = this.options.logger;
    switch (event.kind) {
      case "became-leader": {
        const group = this.groups.get(groupId);
        if (group !== undefined) group.termStartIndex = group.node.status().lastIndex;
        log.info({ groupId, term: event.term }, "became leader");
        break;
      }
      case "became-follower":
      case "leader-known":
        if (event.leader !== "") log.info({ groupId, term: event.term, leader: event.leader }, "following leader");
        break;
      case "became-pre-candidate":
      case "became-candidate":
        // A leader change starts here: worth a line when diagnosing one.
        log.info({ groupId, term: event.term, kind: event.kind }, "no leader heard from: campaigning");
        break;
      case "conf-change-applied":
        // A core loaded from storage replays its log's conf changes: not news (a reloaded channel group did this at every wake).
        if (this.building === groupId) log.debug({ groupId, index: event.index, confState: event.confState }, "membership replayed from the log");
        else log.info({ groupId, index: event.index, confState: event.confState }, "membership changed");
        break;
      case "snapshot-restored":
        log.info({ groupId, index: event.index, term: event.term }, "installing snapshot from leader");
        break;
      default:
        break;
    }
  }

  /** Starts the tick clock. */
  start(): void {
    this.ticker = setInterval(() => {
      for (const group of this.awake) {
        group.node.tick();
        this.dirty.add(group);
        if (group.node.isQuiesced()) this.awake.delete(group);
      }
      this.schedule();
    }, this.options.tickIntervalMs);
    const leaderlessAfterMs = this.options.leaderlessAfterMs ?? leaderlessAfterMsDefault;
    this.leaderWatch = setInterval(() => this.watchLeaders(), Math.max(10, Math.min(1000, leaderlessAfterMs / 4)));
    this.leaderWatch.unref();
    const every = this.options.balanceLeadersEveryMs ?? 0;
    if (every > 0) {
      this.balancer = setInterval(() => this.balanceLeaders(), every);
      this.balancer.unref();
    }
    const hibernateAfterMs = this.options.hibernateAfterMs ?? 0;
    if (this.hibernates()) {
      this.hibernator = setInterval(() => {
        if (this.loopRunning === undefined && !this.loopScheduled) this.hibernateQuietGroups();
        else this.hibernationDue = true;
      }, hibernateAfterMs > 0 ? Math.max(50, Math.min(1000, hibernateAfterMs / 4)) : 1000);
      this.hibernator.unref();
    }
  }

  /**
   * One round of leader balancing: walks the balanced groups (once per
   * round, not per tick) and starts the planned transfers. A transfer wakes
   * the group; it goes quiet again under its new leader.
   */
  private balanceLeaders(): void {
    if (this.stopped) return;
    const groups = [];
    for (const group of this.groups.values()) {
      if (!group.balanced) continue;
      const conf = group.node.confState();
      if (conf.votersOutgoing.length > 0) continue;
      groups.push({ groupId: group.groupId, leader: group.node.leader(), voters: conf.voters });
    }
    const plan = planLeaderTransfers(this.options.selfId, groups, { maxTransfers: this.options.balanceTransfersMax ?? 20, slackGroups: 2 });
    for (const { groupId, to } of plan) this.transferLeadership(groupId, to);
    if (plan.length > 0) this.options.logger.debug({ transfers: plan.length }, "leader balancing: handing over groups");
  }

  /** Stops ticking and waits for the Ready loop to finish; pending callers get UNAVAILABLE. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimers();
    await this.loopRunning;
    await Promise.all([...this.dormant.values()].map((d) => d.loading));
    // Restores under way stop after their current chunk; the storage may close once they have.
    await Promise.all([...this.groups.values()].map((group) => this.restoreStopped(group)));
    for (const group of this.groups.values()) {
      for (const waiter of group.proposals.values()) waiter.reject(new OutcomeUnknownError(group.groupId, "the homeserver is stopping"));
      for (const read of group.reads.values()) read.reject(new OutcomeUnknownError(group.groupId, "the homeserver is stopping"));
      group.proposals.clear();
      group.reads.clear();
    }
  }

  /** Delivers messages received from peer `from`, each to its group. */
  receive(from: NodeId, messages: readonly Message[]): void {
    if (this.stopped) return;
    for (const m of messages) {
      if (m.from !== from) continue;
      const group = this.groups.get(m.groupId);
      if (group !== undefined) {
        this.deliver(group, m);
        continue;
      }
      const dormant = this.dormant.get(m.groupId);
      if (dormant === undefined) {
        this.dropStaged(m);
        this.options.onUnhostedMessage?.(from, m.groupId);
        continue;
      }
      if (dormant.pending.length < dormantPendingMax) dormant.pending.push(m);
      else this.dropStaged(m);
      void this.load(m.groupId);
    }
    this.schedule();
  }

  private deliver(group: HostedGroup, received: Message): void {
    let m: Message | undefined = received;
    if (group.node.leader() === this.options.selfId) {
      if (this.options.onForeignMessage !== undefined && !isConfMember(group.node.confState(), m.from)) this.options.onForeignMessage(m.from, m.groupId);
      if (m.type === MessageType.Propose && this.options.admitForwarded !== undefined) m = this.options.admitForwarded(m.groupId, m);
      if (m === undefined) return;
    }
    if (m.type !== MessageType.Snapshot) {
      group.node.step(m);
      this.touch(group);
      return;
    }
    // Snapshot data staged in storage is deleted once restored; here, if the core declines it, or
    // if it replaces one the core took earlier and never handed out.
    const before = group.node.pendingSnapshotData();
    group.node.step(m);
    this.touch(group);
    const after = group.node.pendingSnapshotData();
    // Not one a Ready handed out, which the round under way stores and restores (and then deletes).
    if (before !== null && before !== after && before !== group.restoring?.data) void this.options.engine.discardStagedSnapshot(before).catch(() => undefined);
    if (m.snapshot !== null && m.snapshot.data !== after) this.dropStaged(m);
  }

  /** Deletes the staged data of a Snapshot message no core took. */
  private dropStaged(m: Message): void {
    if (m.type === MessageType.Snapshot && m.snapshot !== null) void this.options.engine.discardStagedSnapshot(m.snapshot.data).catch(() => undefined);
  }

  /**
   * The connection to peer `id` broke: groups it leads start electing at
   * once, quiet ones included (they wake). Walks every group, but only when a
   * stream breaks.
   */
  peerLost(id: NodeId): void {
    for (const group of this.groups.values()) {
      if (group.node.leader() !== id) continue;
      group.node.forgetLeader();
      this.touch(group);
    }
    // Unloaded ones stay unloaded: they elect when something needs them.
    for (const dormant of this.dormant.values()) if (dormant.quiet?.leader === id) dormant.quiet = undefined;
  }

  reportSnapshot(to: NodeId, groupId: GroupId, ok: boolean): void {
    const group = this.groups.get(groupId);
    if (group === undefined) return;
    group.node.reportSnapshot(to, ok);
    this.touch(group);
  }

  reportUnreachable(to: NodeId): void {
    for (const group of this.groups.values()) group.node.reportUnreachable(to);
  }

  private group(groupId: GroupId): HostedGroup {
    const group = this.groups.get(groupId);
    if (group === undefined) throw new UnknownGroupError(groupId);
    return group;
  }

  /** The group's status; for an unloaded group, as it was when unloaded (its leader as known now). */
  status(groupId: GroupId): RaftStatus {
    const dormant = this.dormant.get(groupId);
    if (dormant !== undefined) {
      const leader = dormant.quiet?.leader ?? "";
      return { ...dormant.status, leader, role: leader === this.options.selfId ? Role.Leader : Role.Follower };
    }
    const group = this.group(groupId);
    // Applied by the state machine: the core counts a snapshot applied once it is stored, before its restore.
    return { ...group.node.status(), applied: group.appliedIndex };
  }

  /** The leader group `groupId` knows of here, or "" (cheaper than `status`). */
  leaderOf(groupId: GroupId): NodeId {
    const dormant = this.dormant.get(groupId);
    if (dormant !== undefined) return dormant.quiet?.leader ?? "";
    return this.group(groupId).node.leader();
  }

  groupIds(): GroupId[] {
    return [...this.groups.keys(), ...this.dormant.keys()];
  }

  /** The loaded group, loading it first if it hibernates; throws UnknownGroupError if not hosted. */
  private async loaded(groupId: GroupId): Promise<HostedGroup> {
    if (this.dormant.has(groupId)) await this.wake(groupId);
    return this.group(groupId);
  }

  /** Proposes `data`; resolves once it is committed and applied here, with its result. */
  async propose(groupId: GroupId, data: Uint8Array, options: ProposeOptions = {}): Promise<Applied> {
    const group = await this.loaded(groupId);
    this.options.observer?.onProposal?.(groupId);
    const result = group.node.propose(data);
    this.touch(group);
    return this.await(group, result, options.answerBeforeWrite === true);
  }

  /** Proposes on the leader or forwards to it, fire and forget; false when no leader is known. */
  proposeAnywhere(groupId: GroupId, data: Uint8Array): boolean {
    const dormant = this.dormant.get(groupId);
    if (dormant !== undefined && !this.stopped) {
      if (dormant.quiet === undefined) return false;
      void this.wake(groupId).then(() => this.proposeAnywhere(groupId, data));
      return true;
    }
    const group = this.groups.get(groupId);
    if (group === undefined || this.stopped) return false;
    const sent = group.node.proposeAnywhere(data);
    this.touch(group);
    return sent;
  }

  /** Proposes a membership change; resolves once it is applied here. */
  async proposeConfChange(groupId: GroupId, change: ConfChange): Promise<Applied> {
    const group = await this.loaded(groupId);
    const result = group.node.proposeConfChange(change);
    this.touch(group);
    return this.await(group, result);
  }

  private await(group: HostedGroup, result: ReturnType<RawNode["propose"]>, beforeWrite = false): Promise<Applied> {
    if (!result.ok) {
      if (result.reason === "not-leader") throw this.notLeader(group);
      throw new ProposalRefusedError(group.groupId, result.reason);
    }
    const { index, term } = result;
    const applied = new Promise<Applied>((resolve, reject) => group.proposals.set(index, { term, beforeWrite, resolve, reject }));
    this.schedule();
    return applied;
  }

  private notLeader(group: HostedGroup): NotLeaderError {
    const leader = group.node.status().leader;
    return new NotLeaderError(group.groupId, leader, leader === "" ? "" : this.options.clientAddressOf(leader));
  }

  /**
   * A linearizable read point: resolves with an index once this node has
   * applied everything committed before the call, as confirmed by a quorum.
   * Calls made in the same turn of the event loop share one read index,
   * asked of the core at the end of that turn (after every one of them
   * started, so each still sees everything committed before it): a flood of
   * reads costs the group one quorum round per turn, not one per call.
   */
  async readIndex(groupId: GroupId): Promise<LogIndex> {
    const group = await this.loaded(groupId);
    const status = group.node.status();
    if (status.leader === "") throw this.notLeader(group);
    return new Promise<LogIndex>((resolve, reject) => {
      const open = group.openRead;
      if (open !== undefined && group.reads.has(open.context)) {
        open.callers.push({ resolve, reject });
        return;
      }
      const context = `r${++this.readCounter}`;
      const callers = [{ resolve, reject }];
      group.openRead = { context, callers };
      group.reads.set(context, {
        index: -1,
        resolve: (index) => callers.forEach((caller) => caller.resolve(index)),
        reject: (error) => callers.forEach((caller) => caller.reject(error)),
      });
      setImmediate(() => {
        if (group.openRead?.context === context) group.openRead = undefined;
        // Refused meanwhile (leadership moved, the group left or the driver stopped): nothing to ask.
        const read = group.reads.get(context);
        if (read === undefined || this.stopped) return;
        if (group.node.status().leader === "") {
          group.reads.delete(context);
          read.reject(this.notLeader(group));
          return;
        }
        group.node.readIndex(new TextEncoder().encode(context));
        this.touch(group);
      });
    });
  }

  /**
   * While `held`, this homeserver neither votes nor campaigns in `groupId`,
   * a loaded group that does not hibernate (see RawNode.holdVotes).
   */
  holdVotes(groupId: GroupId, held: boolean): void {
    const group = this.group(groupId);
    group.node.holdVotes(held);
    this.touch(group);
  }

  /** This homeserver's copy of `groupId` steps no message until {@link adoptTerm} (see RawNode.awaitTerm). */
  awaitTerm(groupId: GroupId): void {
    this.group(groupId).node.awaitTerm();
  }

  /** Takes `term` as `groupId`'s term, if higher, and steps messages again (see RawNode.adoptTerm). */
  adoptTerm(groupId: GroupId, term: Term): void {
    const group = this.group(groupId);
    group.node.adoptTerm(term);
    this.touch(group);
  }

  /** The newest entry of `groupId` stored here and known committed (see RawNode.storedCommitted). */
  storedCommitted(groupId: GroupId): { index: LogIndex; term: Term } {
    return this.group(groupId).node.storedCommitted();
  }

  /** Starts an election for `groupId` now (a pre-election first with PreVote), rather than at its timeout. */
  campaign(groupId: GroupId): void {
    if (this.dormant.has(groupId)) {
      // Loaded without campaigning on its own: the campaign below is the one asked for.
      void this.wake(groupId, false).then(() => this.campaign(groupId));
      return;
    }
    const group = this.group(groupId);
    group.node.campaign();
    this.touch(group);
  }

  transferLeadership(groupId: GroupId, to: NodeId): void {
    if (this.dormant.has(groupId)) {
      void this.wake(groupId).then(() => this.transferLeadership(groupId, to));
      return;
    }
    const group = this.group(groupId);
    group.node.transferLeadership(to);
    this.touch(group);
  }

  // ---- the Ready loop ----------------------------------------------------------------------------

  private schedule(): void {
    if (this.loopScheduled || this.stopped) return;
    this.loopScheduled = true;
    setImmediate(() => {
      this.loopScheduled = false;
      if (this.loopRunning !== undefined) return;
      this.loopRunning = this.runReadyLoop().finally(() => {
        this.loopRunning = undefined;
      });
    });
  }

  private async runReadyLoop(): Promise<void> {
    try {
      for (let round = 0; round < 1000 && !this.stopped; round++) {
        const batch: Array<{ group: HostedGroup; ready: Ready }> = [];
        // Every group given an input (or a tick) since the last round: its quiet time starts over.
        const now = Date.now();
        // Groups whose restore wrote its state: taken up first, between rounds, as apply is.
        const restored = [...this.dirty].filter((group) => group.restoring?.written === true);
        for (const group of restored) await this.finishRestore(group);
        for (const group of this.dirty) {
          group.lastInputMs = now;
          // A group restoring its state machine goes on storing entries, voting and answering its leader;
          // what commits meanwhile is applied once the restore is taken up.
          const withholdApply = group.restoring !== undefined;
          if (!group.node.hasReady({ withholdApply })) {
            this.dirty.delete(group);
            continue;
          }
          const ready = group.node.ready({ withholdApply });
          if (ready.snapshot !== null) {
            group.restoring = snapshotRestore(ready);
            // As leader it could serve nothing until the restore is taken up; it still votes.
            group.node.holdCampaigns(true);
          }
          batch.push({ group, ready });
        }
        if (batch.length === 0 && restored.length === 0) return;
        if (batch.length > 0) await this.handleReadies(batch);
        if (this.hibernationDue) this.hibernateQuietGroups();
      }
      this.schedule();
    } catch (error) {
      this.failFatally(error);
    }
  }

  /** Stops every timer the driver runs (clearing an unset one is a no-op). */
  private clearTimers(): void {
    clearInterval(this.ticker);
    clearInterval(this.balancer);
    clearInterval(this.hibernator);
    clearInterval(this.leaderWatch);
    clearTimeout(this.commitNoticeTimer);
  }

  private failFatally(error: unknown): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    this.options.onFatal(error);
  }

  private async handleReadies(batch: Array<{ group: HostedGroup; ready: Ready }>): Promise<void> {
    this.options.observer?.onReadyRound?.(batch.length);
    // 1. Persist entries, hard states and snapshots of every group in one synced batch. A Ready whose
    //    only change is the commit index is skipped: the commit index may be persisted lazily (a
    //    restarted node learns it again), and skipping saves a RocksDB write per round on the leader.
    //    A leader's Appends and heartbeats leave first, so followers write in parallel with it.
    const toPersist = batch.filter(({ group, ready }) => !onlyCommitChanged(ready, group.store.log.getHardState()));
    const early: Message[] = [];
    const late: Message[] = [];
    const snapshots: Array<{ group: HostedGroup; message: Message }> = [];
    for (const { group, ready } of batch) {
      for (const m of ready.messages) {
        if (m.type === MessageType.Snapshot) snapshots.push({ group, message: m });
        else (toPersist.length > 0 && !mayLeaveBeforePersist(m) ? late : early).push(m);
      }
    }
    if (early.length > 0) this.options.transport.send(early);
    // In groups told commits lazily (whose followers then store entry k + 1 and apply k in the same
    // round), a round with both entries to store and entries to apply writes both in one batch: one
    // RocksDB write and thread-pool turn instead of two. Only when every entry it applies was stored
    // by an earlier round: applying before this round's write must not act on an entry this node's
    // own unwritten copy made committed (a group of one voter). Elsewhere the apply would hold back
    // the round's answers to the leader, which channel groups' certificates wait on.
    const merged = toPersist.length > 0 && batch.every(({ group, ready }) => group.options.lazyCommitNotices === true && ready.snapshot === null && mayApplyBeforePersist(ready)) && batch.some(({ ready }) => ready.committedEntries.length > 0);
    let applied: AppliedRound | undefined;
    if (merged) {
      applied = await this.applyCommitted(batch);
      await this.options.engine.persistAndApply(toPersist.map(({ group, ready }) => ({ group: group.store, ready })), applied.writes, applied.localWrites);
    } else if (toPersist.length > 0) {
      await this.options.engine.persistReadies(toPersist.map(({ group, ready }) => ({ group: group.store, ready })));
    }
    // 2. Only now may messages that depend on that state leave; work on entries stored in their own
    //    term goes first (a follower's signatures on the commits they make), so that the leader has it
    //    with their acknowledgement.
    if (!merged && toPersist.length > 0) this.offerStored(toPersist);
    if (late.length > 0) this.options.transport.send(late);
    // A group given a leader's snapshot (stored now) restores its state machine from it off this loop: a
    // large one takes a minute, and the homeserver's other groups must go on meanwhile. Its Ready (which
    // hands out no committed entries) is done with now, and the group takes Readies that apply nothing
    // until the restore is taken up.
    for (const { group, ready } of batch) if (ready.snapshot !== null) this.restoreThenFinish(group);
    await this.finishRound(batch, applied);
    // 5. Snapshots for followers, of the state as now applied and stored.
    for (const { group, message } of snapshots) this.sendSnapshot(group, message);
  }

  /**
   * Steps 3 and 4 of a round for `items`, whose Readies are stored: apply
   * their committed entries (unless `applied` already did), answer callers
   * and advance the cores.
   */
  private async finishRound(items: ReadonlyArray<{ group: HostedGroup; ready: Ready }>, applied?: AppliedRound): Promise<void> {
    // 3. Apply committed entries (unless done above); state changes and applied indexes in one batch.
    if (applied === undefined) {
      applied = await this.applyCommitted(items);
      if (applied.writes.length > 0) await this.options.engine.apply(applied.writes, applied.localWrites);
    }
    const { outcomes } = applied;
    for (const { afterWrite } of outcomes) afterWrite?.();
    // 4. Answer callers and advance the cores. Reads wait for the applied index, set only now.
    for (const { group, entries, results, appliedIndex } of outcomes) {
      group.appliedIndex = appliedIndex;
      for (const entry of entries) group.appliedBytesSinceSnapshot += entry.data.byteLength;
      this.options.observer?.onCommitted?.(group.groupId, entries.length);
      this.answerProposals(group, entries, results, false);
    }
    for (const { group, ready } of items) {
      this.trackReads(group, ready);
      group.node.advance();
      this.options.observer?.onApplyLag?.(group.groupId, group.node.status().commit - group.appliedIndex);
      this.maybeSnapshot(group);
      if (group.node.commitNoticePending()) this.commitNoticesDue.add(group);
    }
    if (this.commitNoticesDue.size > 0) this.armCommitNotices();
    // Entries stored by earlier rounds may now follow everything applied.
    this.offerStored(items);
  }

  /**
   * Hands each group's state machine the entry right after the last one
   * applied, once, when this node stored it in its own term
   * (`storedNextIndex`, see `StateMachine.storedNext`), and then tells the
   * homeserver ({@link RaftDriverOptions.afterStoredNext}).
   */
  private offerStored(items: ReadonlyArray<{ group: HostedGroup }>): void {
    if (items.length > storedNextRoundGroupsMax) return;
    let offered = false;
    for (const { group } of items) offered = this.offerStoredNext(group) || offered;
    if (offered) this.options.afterStoredNext?.();
  }

  /** See {@link offerStored}; true if it handed an entry over. */
  private offerStoredNext(group: HostedGroup): boolean {
    const storedNext = group.stateMachine.storedNext;
    if (storedNext === undefined || group.restoring !== undefined) return false;
    const log = group.store.log;
    const index = storedNextIndex(group.storedView, group.appliedIndex);
    if (index === undefined) return false;
    const term = log.term(index);
    if (group.offeredNext.index === index && group.offeredNext.term === term) return false;
    group.offeredNext = { index, term };
    storedNext.call(group.stateMachine, log.entries(index, index + 1, Number.MAX_SAFE_INTEGER)[0]!);
    return true;
  }

  /**
   * Writes the state of the leader's snapshot `group`'s stored Ready carries
   * over its state machine's records, off the Ready loop: a large one takes a
   * minute, and the homeserver's other groups go on meanwhile. Only the
   * group's own records are touched; the Ready loop then takes the state up
   * ({@link finishRestore}). Until then the group's Readies hand out no
   * committed entries: it stores entries, votes and answers its leader, so a
   * group that needs this homeserver for a quorum goes on committing, and
   * applies here what it committed once the restore is taken up. Stopping the driver or removing the group cuts the write off between two
   * chunks (see {@link stop}, {@link removeGroup}); the applied index has not
   * moved then, so the next start restores again.
   */
  private restoreThenFinish(group: HostedGroup): void {
    const restoring = group.restoring!;
    const snapshot = restoring.ready.snapshot!;
    const cutOff = () => !this.stillHosts(group);
    if (cutOff()) {
      restoring.settle();
      return;
    }
    const startedMs = Date.now();
    group.stateMachine.restoreStored(untilCutOff(this.options.engine.snapshotChunks(snapshot.data), group.groupId, cutOff)).then(
      () => {
        this.options.logger.info({ groupId: group.groupId, index: snapshot.metadata.index, ms: Date.now() - startedMs }, "state machine restored from a leader's snapshot");
        if (cutOff()) {
          restoring.settle();
          return;
        }
        restoring.written = true;
        this.touch(group);
      },
      (error: unknown) => {
        restoring.settle();
        if (!cutOff()) this.failFatally(error);
        else this.options.logger.info({ groupId: group.groupId, index: snapshot.metadata.index, ms: Date.now() - startedMs }, "restore from a leader's snapshot cut off (the homeserver stops or left the group); a restart restores again");
      },
    );
  }

  /**
   * In the Ready loop, between rounds: takes up a restored state (reloads
   * what the state machine holds in memory, tells its listeners), records the
   * applied index, deletes the staged data it came from, and answers the reads
   * it reached. The entries committed after the snapshot are applied by the
   * group's next Readies.
   */
  private async finishRestore(group: HostedGroup): Promise<void> {
    const restoring = group.restoring!;
    const snapshot = restoring.ready.snapshot!;
    // Removed meanwhile (removeGroup waits for this round, then drops the group's storage), or stopping:
    // the applied index is left where it is, and nothing of the group is woken again.
    try {
      if (!this.stillHosts(group)) return;
      await group.stateMachine.afterRestore(snapshot.metadata.index);
      if (!this.stillHosts(group)) return;
      // Only now, synced: a crash before (after the state was written, before its take-up wrote the
      // inbox gap markers it implies) restores again on start, gap markers included.
      await group.store.recordRestored(snapshot.metadata.index);
      // Durable: the staged data it was read from may go.
      await this.options.engine.discardStagedSnapshot(snapshot.data);
      this.failProposalsUpTo(group, snapshot.metadata.index);
      group.appliedIndex = snapshot.metadata.index;
      group.lastSnapshotIndex = snapshot.metadata.index;
      group.appliedBytesSinceSnapshot = 0;
      this.answerReads(group);
      group.node.holdCampaigns(false);
    } finally {
      group.restoring = undefined;
      restoring.settle();
    }
    if (this.stillHosts(group)) this.touch(group);
  }

  /** Whether the driver runs and `group` is still the one hosted under its id (not removed, not reloaded). */
  private stillHosts(group: HostedGroup): boolean {
    return !this.stopped && this.groups.get(group.groupId) === group;
  }

  /** Sends, after `commitNoticeDelayMs`, the commit notices no Append carried meanwhile. */
  private armCommitNotices(): void {
    if (this.commitNoticeTimer !== undefined || this.stopped) return;
    this.commitNoticeTimer = setTimeout(() => {
      this.commitNoticeTimer = undefined;
      if (this.stopped) return;
      for (const group of this.commitNoticesDue) {
        if (this.groups.get(group.groupId) !== group) continue; // removed or unloaded meanwhile
        // Under load an Append usually told the followers meanwhile: then nothing is sent or woken.
        if (group.node.flushCommitNotices()) this.touch(group);
      }
      this.commitNoticesDue.clear();
    }, this.options.commitNoticeDelayMs ?? 2);
  }

  /**
   * Applies the committed entries of every group in `batch` to its state
   * machine and answers the proposers who asked to be answered before the
   * write ({@link ProposeOptions.answerBeforeWrite}).
   */
  private async applyCommitted(batch: ReadonlyArray<{ group: HostedGroup; ready: Ready }>): Promise<AppliedRound> {
    const round: AppliedRound = { writes: [], localWrites: [], outcomes: [] };
    for (const { group, ready } of batch) {
      const entries = ready.committedEntries;
      if (entries.length === 0) continue;
      const outcome = await group.stateMachine.apply(entries);
      const appliedIndex = entries[entries.length - 1]!.index;
      round.writes.push({ group: group.store, appliedIndex, writes: outcome.writes });
      if (outcome.localWrites !== undefined) round.localWrites.push(...outcome.localWrites);
      round.outcomes.push({ group, entries, results: outcome.results, appliedIndex, afterWrite: outcome.afterWrite });
      this.answerProposals(group, entries, outcome.results, true);
    }
    return round;
  }

  /**
   * Sends a follower behind the compacted log the state machine's state as of
   * the applied index, in place of the snapshot the core names (which, taken
   * only to compact the log, holds no data: see {@link maybeSnapshot}). The
   * state is read from a point-in-time iterator made now, between two Ready
   * rounds, when the stored state is exactly that of `appliedIndex` and the
   * core's membership that of the same index. Its index is at or past the
   * core's snapshot: the follower answers with it and the leader goes on from
   * there. A snapshot installed from a leader and not yet applied past (only
   * right after a restart) is sent from its stored or staged data.
   */
  private sendSnapshot(group: HostedGroup, message: Message): void {
    const stored = message.snapshot;
    if (stored === null) return;
    if (group.appliedIndex < stored.metadata.index) {
      this.options.transport.sendSnapshot(message, this.options.engine.snapshotChunks(stored.data));
      return;
    }
    const index = group.appliedIndex;
    const metadata = { index, term: group.store.log.term(index), confState: group.node.confState() };
    // The chunks come from a storage view made by this call: the group may go on applying, or hibernate.
    this.options.transport.sendSnapshot({ ...message, snapshot: { metadata, data: new Uint8Array(0) } }, group.stateMachine.snapshotChunks());
    this.options.logger.info({ groupId: group.groupId, to: message.to, index }, "snapshot of the applied state sent to a follower");
  }

  /** Answers the proposers of `entries`: with `beforeWrite`, only those who asked to be answered before the write. */
  private answerProposals(group: HostedGroup, entries: readonly Entry[], results: ReadonlyMap<LogIndex, unknown>, beforeWrite: boolean): void {
    if (group.proposals.size === 0) return; // a follower's, and most of a leader's: no lookup per entry
    for (const entry of entries) {
      const waiter = group.proposals.get(entry.index);
      if (waiter === undefined || (beforeWrite && !waiter.beforeWrite)) continue;
      group.proposals.delete(entry.index);
      if (entry.term === waiter.term) waiter.resolve({ index: entry.index, term: entry.term, result: results.get(entry.index) });
      else waiter.reject(new ProposalDroppedError(group.groupId));
    }
  }

  private failProposalsUpTo(group: HostedGroup, index: LogIndex): void {
    for (const [proposalIndex, waiter] of group.proposals) {
      if (proposalIndex > index) continue;
      group.proposals.delete(proposalIndex);
      waiter.reject(new OutcomeUnknownError(group.groupId, "a snapshot replaced the log"));
    }
  }

  private trackReads(group: HostedGroup, ready: Ready): void {
    if (ready.softState !== null) {
      // Leadership moved: requests the old leader held will never be answered.
      for (const read of group.reads.values()) if (read.index < 0) read.reject(new ProposalDroppedError(group.groupId));
      for (const [context, read] of group.reads) if (read.index < 0) group.reads.delete(context);
    }
    const decoder = new TextDecoder();
    for (const state of ready.readStates) {
      const read = group.reads.get(decoder.decode(state.context));
      if (read !== undefined) read.index = state.index;
    }
    this.answerReads(group);
  }

  /** Answers the reads whose read index the state machine has reached. */
  private answerReads(group: HostedGroup): void {
    for (const [context, read] of group.reads) {
      if (read.index < 0 || read.index > group.appliedIndex) continue;
      group.reads.delete(context);
      read.resolve(read.index);
    }
  }

  /**
   * Compacts the log of a group that applied `snapshotEveryEntries` entries
   * (or `snapshotEveryBytes` of them) since the last compaction, keeping
   * `snapshotKeepEntries` behind (no more than `snapshotKeepBytes`). The
   * snapshot recorded for it holds no data: the state machine's state is
   * already stored, with the applied index, by every apply, so nothing needs
   * a copy until a follower falls behind the compacted log, and then it gets
   * the state as of that moment ({@link sendSnapshot}). (Copying the state at
   * every compaction blocked the event loop in proportion to its size: with a
   * 256 MiB state, for longer than an election timeout.)
   */
  private maybeSnapshot(group: HostedGroup): void {
    const { snapshotEveryEntries, snapshotEveryBytes } = this.options;
    if (group.snapshotting || group.restoring !== undefined) return;
    const byCount = group.appliedIndex - group.lastSnapshotIndex >= snapshotEveryEntries;
    const byBytes = snapshotEveryBytes !== undefined && group.appliedBytesSinceSnapshot >= snapshotEveryBytes && group.appliedIndex > group.lastSnapshotIndex;
    if (!byCount && !byBytes) return;
    group.snapshotting = true;
    const index = group.appliedIndex;
    const keepEntries = this.keepEntriesBehind(group, index);
    group.appliedBytesSinceSnapshot = 0;
    group.store
      .createSnapshot(index, group.node.confState(), noSnapshotData, keepEntries)
      .then(
        () => {
          group.lastSnapshotIndex = Math.max(group.lastSnapshotIndex, index);
          this.options.logger.info({ groupId: group.groupId, index, keepEntries }, "log compacted");
        },
        (error: unknown) => this.options.logger.warn({ groupId: group.groupId, index, err: error }, "log not compacted"),
      )
      .finally(() => {
        group.snapshotting = false;
      });
  }

  /**
   * How many entries up to `index` a compaction keeps: `snapshotKeepEntries`,
   * or fewer if those hold over `snapshotKeepBytes`; but on a leader, as many
   * as its slowest follower still needs, if they hold at most
   * `snapshotEveryBytes` (and number at most `snapshotEveryEntries`). With
   * large entries the byte bound keeps few, and a follower catching up (one
   * that has just restored a large snapshot, say) would otherwise need a
   * snapshot again and again while writes go on.
   */
  private keepEntriesBehind(group: HostedGroup, index: LogIndex): number {
    const { snapshotKeepEntries, snapshotKeepBytes, snapshotEveryBytes, snapshotEveryEntries } = this.options;
    if (snapshotKeepBytes === undefined) return snapshotKeepEntries;
    const first = Math.max(group.store.log.firstIndex(), index - Math.max(snapshotKeepEntries, snapshotEveryEntries) + 1);
    if (first > index) return 0;
    const entries = group.store.log.entries(first, index + 1, Number.MAX_SAFE_INTEGER);
    const status = group.node.status();
    let slowest = index;
    if (status.role === Role.Leader) for (const [id, progress] of status.progress) if (id !== this.options.selfId) slowest = Math.min(slowest, progress.match);
    const followerNeeds = index - slowest;
    let bytes = 0;
    let keptByBytes = 0;
    let keptForFollower = 0;
    for (let i = entries.length - 1, n = 1; i >= 0; i--, n++) {
      bytes += entries[i]!.data.byteLength;
      if (n <= snapshotKeepEntries && bytes <= snapshotKeepBytes) keptByBytes = n;
      if (n <= followerNeeds && n <= snapshotEveryEntries && bytes <= (snapshotEveryBytes ?? snapshotKeepBytes)) keptForFollower = n;
      if (n >= followerNeeds && bytes > snapshotKeepBytes) break;
    }
    return Math.max(keptByBytes, keptForFollower === followerNeeds ? keptForFollower : 0);
  }
}

/** Bytes of the entries of `store`'s log after `index`, up to its applied index (those still in memory). */
function appliedBytesAfter(store: GroupStore, index: LogIndex): number {
  const first = Math.max(store.log.firstIndex(), index + 1);
  if (first > store.appliedIndex) return 0;
  let bytes = 0;
  for (const entry of store.log.entries(first, store.appliedIndex + 1, Number.MAX_SAFE_INTEGER)) bytes += entry.data.byteLength;
  return bytes;
}

/** Whether the only thing `ready` asks to persist is a new commit index. */
function onlyCommitChanged(ready: Ready, persisted: HardState): boolean {
  if (ready.entries.length > 0 || ready.snapshot !== null) return false;
  const hard = ready.hardState;
  return hard === null || (hard.term === persisted.term && hard.vote === persisted.vote);
}
