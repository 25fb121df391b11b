/**
 * One Raft group per channel, made of the homeservers that sponsor its
 * members. This module hosts a homeserver's channel groups and keeps each
 * one's membership following its MLS members:
 *
 * - Creating a channel claims its id in the cluster group, then creates the
 *   group with this homeserver as its only voter.
 * - When an accepted commit adds the first member of another homeserver, the
 *   group's leader asks that homeserver to host the group (a notice on the
 *   peer stream), adds it as a learner, and makes it a voter once it has
 *   caught up. When a commit removes a homeserver's last member, the leader
 *   removes it from the group and tells it to drop its copy.
 * - Until the voters are exactly the members' homeservers, the channel
 *   takes no command (see ChannelStateMachine's "busy"): certificates always
 *   name the homeservers of the tree they certify, and a homeserver that lost
 *   its last member sees no new channel content.
 *
 * A command proposed on a follower is forwarded to the group's leader inside
 * Raft; the follower learns its result when it applies the entry (by the
 * command's request id), so clients always talk to their own homeserver.
 *
 * The leader admits a command into the log only while the group follows its
 * members and it has applied everything committed before its term; until
 * then it holds the command (its own and forwarded ones) and proposes it
 * once admitted. So a homeserver whose last member a commit removed gets no
 * channel command appended after that commit was applied, only the
 * membership change that removes it.
 */
import { randomBytes } from "node:crypto";
import { create, isMessage, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { ChannelMembers } from "../auth/channel-membership.ts";
import { channelCommandOp, encodeChannelCommand } from "../channel/channel-command.ts";
import { SubmitCommitRequestSchema } from "../gen/epochd/channel/v1/channel_pb.ts";
import { encodeSubmitCommitCommand } from "../channel/record-codec.ts";
import { isValidChannelId } from "../channel/channel-keys.ts";
import { orderingHomeservers, type AcceptedCommit, type ChannelResult, type ChannelStateMachine } from "../channel/channel-state-machine.ts";
import { believesLeaveNotice, lostCopyAction, membershipSettled, nextMembershipStep, type LeaveNotice } from "../channel/group-membership.ts";
import type { ChannelRecord } from "../gen/epochd/state/v1/channel_state_pb.ts";
import { ChannelCommandSchema } from "../gen/epochd/state/v1/channel_state_pb.ts";
import type { InboxFanout } from "../inbox/inbox-fanout.ts";
import { entryBody } from "../multiraft/entry-payload.ts";
import { NotLeaderError, OutcomeUnknownError } from "../multiraft/errors.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import { confMembers, isConfMember } from "../raft/conf-change.ts";
import { ConfChangeType, EntryType, noCatchUpFloor, type CatchUpFloor, type GroupId, type LogIndex, type Message, type NodeId } from "../raft/types.ts";
import type { GroupStore, StorageEngine } from "../storage/storage-engine.ts";
import { ChannelGroupMachine, readChannelGroup, withNamespace, type ChannelGroupListener, type StoredChannelGroup } from "./channel-group-machine.ts";
import { KeyedWaiters } from "./keyed-waiters.ts";
import { retryWhileLeaderChanges } from "./leader-change-retry.ts";

/** Every channel group's id starts with this; the channel id follows. */
export const channelGroupPrefix = "channel/";
/**
 * Peer notice: "host this channel's group" (payload: the channel id, the
 * sender's commit index and the term of its last entry, one per line: the
 * new copy's catch-up floor, see Raft.catchUpFloor), from its leader, or
 * from the other voter of a two-voter group that lost its copy (see
 * onMissingCopy).
 */
export const hostChannelGroupTopic = "channel-group-host";
/**
 * Peer notice: "I hold no copy of this channel's group" (payload: the channel
 * id), to a homeserver that sent it a message for the group. If the sender
 * leads the group and counts it as a member (its copy was lost with its data
 * directory), it adds it again as a new member (see onMissingCopy).
 */
export const missingChannelGroupTopic = "channel-group-missing";
/** Peer notice: "you are no longer a member of this channel's group" (payload: the channel id). */
export const leaveChannelGroupTopic = "channel-group-leave";
/**
 * Peer notice: "load this channel's group now, a command for it is coming"
 * (payload: the channel id). Sent by a homeserver waking a hibernating group
 * for a command, so that its peers read the group from RocksDB while it does,
 * not after its first Append reaches them.
 */
export const wakeChannelGroupTopic = "channel-group-wake";
/** Most channel groups one homeserver hosts. */
export const channelGroupsMax = 200_000;
/** How often the leaders look at channels whose group does not yet follow their members. */
export const reconcileIntervalMs = 50;
/** How often a notice to one homeserver about one group is sent again while it has no effect. */
export const noticeRepeatMs = 1000;
/** Most (channel, homeserver) keys a rate limit remembers (notices, lost-copy removals): a bound on memory, whatever peers send. */
const rateLimitKeysMax = 10_000;
/** Longest a follower waits for a forwarded command's entry before answering UNAVAILABLE (the client retries). */
export const forwardWaitMsMax = 4000;
/** Longest a command waits for its group to elect a leader before it is refused (UNAVAILABLE; the client retries). */
export const leaderWaitMsMax = 3000;
/** Most commands a leader holds for one channel while it does not admit them; more are dropped (their callers retry). */
export const heldCommandsMax = 1000;
/** How long after a membership change the leader keeps telling former members to drop their copies. */
export const leaveNoticesMs = 30_000;
/** A copy hosted at a leader's request that got no entry within this is dropped (the addition was abandoned). */
export const unjoinedCopyMs = 30_000;
/**
 * How often, at most, a leader removes the same voter from a group because
 * it said it holds no copy (to add it back): a homeserver that keeps losing
 * its copy, or claims to, cannot keep the channel changing membership.
 */
export const lostCopyRemovalIntervalMs = 60_000;

/** The key of `lostCopyRemovals`: a channel and a homeserver. */
function lostCopyKey(channelId: string, homeserver: NodeId): string {
  return `${channelId}\n${homeserver}`;
}

/** The group id of channel `channelId`. */
export function channelGroupId(channelId: string): GroupId {
  return `${channelGroupPrefix}${channelId}`;
}

/** What the client API needs of the channels hosted here. */
export interface HostedChannels extends ChannelMembers {
  /** Whether this homeserver hosts the channel's group (it sponsors a member, or is about to). */
  hosts(channelId: string): boolean;
  /** A linearizable read point of the channel's group (forwarded to its leader by a follower). */
  readIndex(channelId: string): Promise<LogIndex>;
}

/** A command for a channel that is not hosted here. */
export class ChannelNotHostedError extends Error {
  constructor(readonly channelId: string) {
    super(`channel ${channelId} is not hosted by this homeserver`);
    this.name = "ChannelNotHostedError";
  }
}

type Command = NonNullable<MessageInitShape<typeof ChannelCommandSchema>["command"]>;

/** What the channel groups need from their homeserver. */
export interface ChannelGroupsOptions {
  readonly selfId: NodeId;
  readonly engine: StorageEngine;
  readonly driver: RaftDriver;
  /** The in-memory index of the channels hosted here (shared by all their groups). */
  readonly channels: ChannelStateMachine;
  readonly inbox: InboxFanout | undefined;
  /** Where the inboxes live (the cluster group's store). */
  readonly inboxStore: GroupStore | undefined;
  readonly sendNotice: (to: NodeId, topic: string, payload: Uint8Array) => void;
  /** Claims `channelId` for this homeserver in the cluster group; rejects if another homeserver has it. */
  readonly claim: (channelId: string, waitMs: number) => Promise<void>;
  /** Every applied channel command's result, in log order per channel (certificates, waiting clients). */
  readonly onChannelResult: (result: ChannelResult) => void;
  /** A commit was accepted, told during apply before the batch is written (see ChannelGroupListener.onCommitAccepted). */
  readonly onCommitAccepted: (result: Extract<ChannelResult, { kind: "commit-accepted" }>, index: LogIndex) => void;
  /** A commit stored here ahead of its commit, as the channel will accept it (see ChannelGroupListener.onCommitStored). */
  readonly onCommitStored?: (commit: AcceptedCommit) => void;
  /**
   * Asked just before this homeserver, the channel's leader, appends a
   * command to its log (its own or a forwarded one, not one held back while
   * the group changes its voters): records of the command's repeated
   * fields, encoded, to append to its encoding (a repeated field's records
   * may follow the rest of a message; a scalar field's would override it),
   * such as certificates to record.
   */
  readonly alongside?: (channelId: string) => Uint8Array | undefined;
  readonly logger: Logger;
}

interface Waiter<T> {
  readonly resolve: (value: T) => void;
  readonly reject: (error: Error) => void;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** See the module comment. */
export class ChannelGroups implements HostedChannels {
  /** Every channel whose group is hosted here, loaded or hibernating (see GroupHibernation). */
  private readonly hosted = new Set<string>();
  /** The state machines of the hosted groups loaded in memory. */
  private readonly machines = new Map<string, ChannelGroupMachine>();
  /** Channels whose group is being opened, created or dropped here. */
  private readonly busyOpening = new Map<string, Promise<void>>();
  /** Channels whose voters differ from their members' homeservers (as applied here). */
  private readonly unsettled = new Set<string>();
  /** Channels whose membership changed lately, by when: their leader tells former members to drop their copies. */
  private readonly recentlyChanged = new Map<string, number>();
  /** When a voter that lost its copy was last removed to be added back, by channel and homeserver. */
  private readonly lostCopyRemovals = new Map<string, number>();
  /** Channels hosted at a leader's request, by when: a copy that got no entry within {@link unjoinedCopyMs} is dropped. */
  private readonly hostedOnRequest = new Map<string, number>();
  private readonly resultWaiters = new Map<string, Waiter<{ result: ChannelResult; index: LogIndex }>>();
  private readonly settleWaiters = new KeyedWaiters();
  private readonly lastNoticeMs = new Map<string, number>();
  /** Commands held until the channel's leader admits them (see the module comment), with when they arrived. */
  private readonly held = new Map<string, Array<{ readonly data: Uint8Array; readonly atMs: number }>>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: ChannelGroupsOptions) {}

  /** The listener every channel group machine reports to. */
  private readonly listener: ChannelGroupListener = {
    onCommandApplied: (result, index, requestId) => this.resultWaiters.get(Buffer.from(requestId).toString("hex"))?.resolve({ result, index }),
    onChannelResult: (result) => this.options.onChannelResult(result),
    onMembersApplied: (channelId) => this.refreshSettled(channelId),
    onCommitAccepted: (result, index) => this.options.onCommitAccepted(result, index),
    onCommitStored: (commit) => this.options.onCommitStored?.(commit),
    onMembership: (channelId) => {
      // A copy does not drop itself on applying its own removal: one catching up replays old removals
      // before its latest addition, and the others may still need its vote to learn the removal
      // committed. The group's leader tells it when to (see tellToLeave).
      this.recentlyChanged.set(channelId, Date.now());
      this.refreshSettled(channelId);
      this.releaseHeld(channelId);
    },
  };

  /** The voters of the channel's group as applied here, for the channel state machine. */
  votersOf(channelId: string): readonly string[] | undefined {
    if (!this.hosted.has(channelId)) return undefined;
    return this.machines.get(channelId)?.confState().voters ?? this.options.driver.confState(channelGroupId(channelId)).voters;
  }

  hosts(channelId: string): boolean {
    return this.hosted.has(channelId);
  }

  channel(channelId: string): ChannelRecord | undefined {
    return this.options.channels.channel(channelId);
  }

  /** How many channel groups are hosted here, loaded or hibernating. */
  count(): number {
    return this.hosted.size;
  }

  /** Reads of a hosted channel group's records (loaded or hibernating). */
  private reader(channelId: string): Pick<GroupStore, "get" | "scan"> {
    if (!this.hosted.has(channelId)) throw new ChannelNotHostedError(channelId);
    return this.machines.get(channelId)?.store ?? this.options.engine.reader(channelGroupId(channelId));
  }

  /** A channel record key (see channel-keys.ts) as of the last entry applied here. */
  channelGet(channelId: string, key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.reader(channelId).get(withNamespace(key));
  }

  /** Channel record keys under `prefix`, from `from`, at most `limit`, as of the last entry applied here. */
  channelScan(channelId: string, prefix: Uint8Array, from: Uint8Array, limit: number): AsyncIterable<[Uint8Array, Uint8Array]> {
    return this.reader(channelId).scan(withNamespace(prefix), limit, withNamespace(from));
  }

  /**
   * Hosts again the channel groups stored here (after a restart); returns
   * how many. Each is loaded and checked, then unloaded again unless it has
   * work left: none knows a leader yet, and each elects one when it is next
   * needed, instead of all of them campaigning at once.
   */
  async reopen(): Promise<number> {
    const ids = (await this.options.engine.listGroups()).filter((id) => id.startsWith(channelGroupPrefix));
    for (const groupId of ids) await this.host(groupId.slice(channelGroupPrefix.length), await this.options.engine.openGroup(groupId), true);
    if (ids.length > 0) this.options.logger.info({ groups: ids.length, loaded: this.machines.size }, "channel groups reopened");
    return ids.length;
  }

  private async host(channelId: string, store: GroupStore, reopening = false): Promise<void> {
    this.hosted.add(channelId);
    await this.loadMachine(channelId, store);
    this.refreshSettled(channelId);
    const hibernation = {
      load: async () => {
        // The log and the state machine records are read at the same time: a reload costs one round
        // trip to RocksDB's threads, which under load is what a commit on a hibernating channel waits for.
        const groupId = channelGroupId(channelId);
        const engine = this.options.engine;
        const [store, stored] = await Promise.all([engine.reopenGroup(groupId), readChannelGroup(engine.reader(groupId))]);
        const machine = this.installMachine(channelId, store, stored);
        this.refreshSettled(channelId);
        return { store, stateMachine: machine };
      },
      mayUnload: () => this.mayUnload(channelId),
      unloaded: () => {
        this.machines.delete(channelId);
        this.options.channels.slim(channelId);
      },
    };
    await this.options.driver.addGroup(store, this.machines.get(channelId)!, { quiesce: true, balanceLeadership: true, hibernation, startUnloaded: reopening && this.mayUnload(channelId) });
  }

  private async loadMachine(channelId: string, store: GroupStore): Promise<ChannelGroupMachine> {
    return this.installMachine(channelId, store, await readChannelGroup(store));
  }

  /** The channel's group machine over `store`, holding what was read of it, in memory from now on. */
  private installMachine(channelId: string, store: GroupStore, stored: StoredChannelGroup): ChannelGroupMachine {
    const machine = new ChannelGroupMachine(channelId, store, { channels: this.options.channels, inbox: this.options.inbox, inboxStore: this.options.inboxStore, listener: this.listener });
    machine.adopt(stored);
    this.machines.set(channelId, machine);
    return machine;
  }

  /** Whether the channel's group may leave memory: nothing is pending for it here. */
  private mayUnload(channelId: string): boolean {
    return (
      this.hosted.has(channelId) &&
      !this.unsettled.has(channelId) &&
      // Former members are told to drop their copies for a while after a change (see reconcileAll).
      !(this.recentlyChanged.has(channelId) && (this.machines.get(channelId)?.formerMembers().length ?? 0) > 0) &&
      !this.hostedOnRequest.has(channelId) &&
      !this.held.has(channelId) &&
      !this.busyOpening.has(channelId)
    );
  }

  start(): void {
    this.timer = setInterval(() => this.reconcileAll(), reconcileIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    for (const waiter of this.resultWaiters.values()) waiter.reject(new OutcomeUnknownError("channel", "the homeserver is stopping"));
    this.resultWaiters.clear();
  }

  /** Runs `work` for `channelId` after any open, create or drop of its group in progress here. */
  private exclusive(channelId: string, work: () => Promise<void>): Promise<void> {
    const previous = this.busyOpening.get(channelId) ?? Promise.resolve();
    const next = previous.then(work, work).finally(() => {
      if (this.busyOpening.get(channelId) === next) this.busyOpening.delete(channelId);
    });
    this.busyOpening.set(channelId, next);
    return next;
  }

  /**
   * Creates the channel: claims its id, creates its group with this
   * homeserver as the only voter, waits for leadership and proposes the
   * create command. Idempotent for a retried create of the same id here.
   */
  async create(channelId: string, command: Command, waitMs: number): Promise<{ result: ChannelResult; index: LogIndex }> {
    const deadline = Date.now() + waitMs;
    await this.options.claim(channelId, waitMs);
    const groupId = channelGroupId(channelId);
    await this.exclusive(channelId, async () => {
      if (this.hosted.has(channelId)) return;
      const [store] = await this.options.engine.createGroups([groupId], [this.options.selfId]);
      await this.host(channelId, store!);
      this.options.driver.campaign(groupId);
    });
    await this.waitForLeader(groupId, deadline);
    return this.propose(channelId, command, deadline - Date.now());
  }

  /** Waits (bounded) until this homeserver leads the new group and has applied its first entry; a one-voter group elects itself at once. */
  private async waitForLeader(groupId: GroupId, deadline: number): Promise<void> {
    for (let tries = 0; !this.options.driver.leaderReady(groupId) && Date.now() < deadline && tries < 2000; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  /**
   * Orders `command` in the channel's group and resolves with its result:
   * proposed here on the leader, else forwarded to the leader and learned
   * from this homeserver's own apply of the entry; either way as soon as
   * the entry is applied, before the apply batch is written (reading the
   * command's records from the store takes a read index first).
   */
  async propose(channelId: string, command: Command, waitMs: number): Promise<{ result: ChannelResult; index: LogIndex }> {
    if (!this.hosted.has(channelId)) throw new ChannelNotHostedError(channelId);
    const groupId = channelGroupId(channelId);
    if (this.options.driver.isDormant(groupId)) {
      for (const peer of confMembers(this.options.driver.confState(groupId))) this.notice(peer, wakeChannelGroupTopic, channelId);
    }
    await this.options.driver.wake(groupId);
    // A group loaded without a leader (its leader's homeserver went away while it hibernated) is electing one now.
    await this.waitForLeaderKnown(groupId, Date.now() + Math.min(waitMs, leaderWaitMsMax));
    const requestId = randomBytes(16);
    const submitCommit = command.case === "submitCommit" && isMessage(command.value, SubmitCommitRequestSchema) ? command.value : undefined;
    const body = submitCommit !== undefined ? encodeSubmitCommitCommand(submitCommit, requestId) : toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command, requestId }));
    const data = encodeChannelCommand(body);
    // Leader balancing hands groups over all the time: order the command wherever the group is led
    // once the hand-over is done (bounded by the election timeout; see leader-change-retry.ts).
    return retryWhileLeaderChanges(
      () => this.order(channelId, groupId, requestId, data, waitMs),
      (deadlineMs) => this.waitForLeaderKnown(groupId, deadlineMs),
      Date.now() + Math.min(waitMs, leaderWaitMsMax),
    );
  }

  /** One attempt of {@link propose}: on the leader, or forwarded to it. */
  private async order(channelId: string, groupId: GroupId, requestId: Buffer, data: Uint8Array, waitMs: number): Promise<{ result: ChannelResult; index: LogIndex }> {
    const driver = this.options.driver;
    const leading = driver.leaderOf(groupId) === this.options.selfId;
    if (leading && this.admits(channelId)) {
      // The caller bounds the wait (its deadline); a lost proposal fails at once here.
      // Answered once applied, before the apply batch is written (see ChannelGroupListener.onCommandApplied).
      const applied = await driver.propose(groupId, this.withAlongside(channelId, data), { answerBeforeWrite: true });
      return { result: applied.result as ChannelResult, index: applied.index };
    }
    const key = requestId.toString("hex");
    const done = new Promise<{ result: ChannelResult; index: LogIndex }>((resolve, reject) => this.resultWaiters.set(key, { resolve, reject }));
    try {
      if (leading) this.hold(channelId, data);
      else if (!driver.proposeAnywhere(groupId, data)) throw new NotLeaderError(groupId, "");
      return await withTimeout(done, Math.min(waitMs, forwardWaitMsMax), () => new OutcomeUnknownError(groupId, "the forwarded command was not ordered in time"));
    } finally {
      this.resultWaiters.delete(key);
    }
  }

  /** Waits (bounded) until the group knows a leader. */
  private async waitForLeaderKnown(groupId: GroupId, deadline: number): Promise<void> {
    for (let tries = 0; this.options.driver.leaderOf(groupId) === "" && Date.now() < deadline && tries < 1000; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Whether this homeserver, the channel's leader, admits commands into its log now (see the module comment). */
  private admits(channelId: string): boolean {
    return !this.unsettled.has(channelId) && this.options.driver.leaderReady(channelGroupId(channelId));
  }

  /** Keeps a command out of the log until {@link admits}; the oldest are dropped beyond {@link heldCommandsMax}. */
  private hold(channelId: string, data: Uint8Array): void {
    const list = this.held.get(channelId) ?? [];
    list.push({ data, atMs: Date.now() });
    if (list.length > heldCommandsMax) list.shift();
    this.held.set(channelId, list);
  }

  /** Proposes the held commands once admitted here, or forwards them to a new leader; drops those nobody waits for any more. */
  private releaseHeld(channelId: string): void {
    const list = this.held.get(channelId);
    if (list === undefined) return;
    const groupId = channelGroupId(channelId);
    const driver = this.options.driver;
    if (!this.hosted.has(channelId)) {
      this.held.delete(channelId);
      return;
    }
    const leader = driver.leaderOf(groupId);
    if (leader === this.options.selfId ? !this.admits(channelId) : leader === "") {
      const fresh = list.filter((c) => Date.now() - c.atMs < forwardWaitMsMax);
      if (fresh.length === 0) this.held.delete(channelId);
      else this.held.set(channelId, fresh);
      return;
    }
    this.held.delete(channelId);
    for (const { data } of list) driver.proposeAnywhere(groupId, data);
  }

  /**
   * The driver asks before appending a proposal a follower forwarded to this
   * leader: admitted now, or held and proposed once admitted.
   */
  admitForwarded(groupId: GroupId, message: Message): Message | undefined {
    if (!groupId.startsWith(channelGroupPrefix)) return message;
    const channelId = groupId.slice(channelGroupPrefix.length);
    if (this.admits(channelId)) {
      const last = message.entries.findLastIndex((entry) => entry.type === EntryType.Normal && entryBody(entry.data, channelCommandOp) !== undefined);
      if (last < 0) return message;
      const entries = [...message.entries];
      entries[last] = { ...entries[last]!, data: this.withAlongside(channelId, entries[last]!.data) };
      return { ...message, entries };
    }
    for (const entry of message.entries) if (entry.data.byteLength > 0) this.hold(channelId, entry.data);
    return undefined;
  }

  /**
   * `data`, a channel command's entry this homeserver, the channel's leader,
   * is about to append, with whatever should go in the same entry (see
   * {@link ChannelGroupsOptions.alongside}).
   */
  private withAlongside(channelId: string, data: Uint8Array): Uint8Array {
    const extra = this.options.alongside?.(channelId);
    if (extra === undefined || extra.byteLength === 0) return data;
    const out = new Uint8Array(data.byteLength + extra.byteLength);
    out.set(data, 0);
    out.set(extra, data.byteLength);
    return out;
  }

  async readIndex(channelId: string): Promise<LogIndex> {
    if (!this.hosted.has(channelId)) throw new ChannelNotHostedError(channelId);
    // The driver loads a hibernating group first (electing at once if it knows no leader).
    return this.options.driver.readIndex(channelGroupId(channelId));
  }

  /** Whether this homeserver leads the channel's group. */
  leads(channelId: string): boolean {
    return this.hosted.has(channelId) && this.options.driver.leaderOf(channelGroupId(channelId)) === this.options.selfId;
  }

  /** The leader of the channel's group as known here; undefined when none is known or the group is not hosted here. */
  leaderOf(channelId: string): string | undefined {
    if (!this.hosted.has(channelId)) return undefined;
    const leader = this.options.driver.leaderOf(channelGroupId(channelId));
    return leader === "" ? undefined : leader;
  }

  /** Proposes a channel command on the group's leader or forwards it, fire and forget; false without a leader. */
  proposeAnywhere(channelId: string, data: Uint8Array): boolean {
    return this.hosted.has(channelId) && this.options.driver.proposeAnywhere(channelGroupId(channelId), data);
  }

  /** Resolves once the channel's group follows its members (the voters are their homeservers), or at `waitMs`. */
  async waitSettled(channelId: string, waitMs: number): Promise<boolean> {
    if (!this.unsettled.has(channelId)) return true;
    await this.settleWaiters.wait(channelId, waitMs);
    return !this.unsettled.has(channelId);
  }

  private refreshSettled(channelId: string): void {
    const record = this.options.channels.channel(channelId);
    const machine = this.machines.get(channelId);
    if (record === undefined || machine === undefined) {
      this.unsettled.delete(channelId);
      return;
    }
    if (!membershipSettled(machine.confState(), orderingHomeservers(record))) {
      this.unsettled.add(channelId);
      this.reconcile(channelId);
      return;
    }
    this.unsettled.delete(channelId);
    this.settleWaiters.wake(channelId);
  }

  private reconcileAll(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const channelId of this.unsettled) this.reconcile(channelId);
    for (const channelId of [...this.held.keys()]) this.releaseHeld(channelId);
    for (const [channelId, at] of this.recentlyChanged) {
      const machine = this.machines.get(channelId);
      if (now - at > leaveNoticesMs || machine === undefined) this.recentlyChanged.delete(channelId);
      else for (const former of machine.formerMembers()) this.tellToLeave(channelId, former);
    }
    for (const [channelId, at] of this.hostedOnRequest) {
      const machine = this.machines.get(channelId);
      const joined = machine === undefined || machine.store.log.lastIndex() > 0;
      if (!joined && now - at < unjoinedCopyMs) continue;
      this.hostedOnRequest.delete(channelId);
      if (!joined) void this.leave(channelId, "its addition to the group was abandoned");
    }
  }

  /**
   * On the group's leader, takes the next step towards voters = the members'
   * homeservers (see nextMembershipStep). One membership change at a time:
   * the core refuses another while one is in flight.
   */
  private reconcile(channelId: string): void {
    const groupId = channelGroupId(channelId);
    const driver = this.options.driver;
    const record = this.options.channels.channel(channelId);
    if (record === undefined || !driver.hosts(groupId) || driver.leaderOf(groupId) !== this.options.selfId) return;
    const status = driver.status(groupId);
    const step = nextMembershipStep(orderingHomeservers(record), status.confState, (id) => status.progress.get(id)?.match ?? 0, status.commit);
    if (step === undefined) return;
    if (step.kind === "add-learner") {
      this.askToHost(step.homeserver, channelId, true);
      // A voter removed because it lost its copy comes back as a voter at once: its removal, committed by
      // the others, fenced off the acknowledgements it lost, so it is an ordinary voter that lags, and the
      // channel need not wait for it to catch up (it would wait for good if that homeserver failed again).
      const lostCopy = Date.now() - (this.lostCopyRemovals.get(lostCopyKey(channelId, step.homeserver)) ?? 0) < lostCopyRemovalIntervalMs;
      this.changeMembership(groupId, lostCopy ? ConfChangeType.AddVoter : ConfChangeType.AddLearner, step.homeserver);
    } else if (step.kind === "remind-learner") {
      this.askToHost(step.homeserver, channelId);
    } else {
      this.changeMembership(groupId, step.kind === "promote" ? ConfChangeType.AddVoter : ConfChangeType.RemoveNode, step.homeserver);
    }
  }

  private changeMembership(groupId: GroupId, type: ConfChangeType, nodeId: NodeId): void {
    try {
      this.options.driver.proposeConfChange(groupId, { steps: [{ type, nodeId }], leaveJoint: false }).then(
        () => {
          if (type === ConfChangeType.RemoveNode) this.tellToLeave(groupId.slice(channelGroupPrefix.length), nodeId);
        },
        () => undefined,
      );
    } catch {
      // One change at a time: the next reconcile round tries again.
    }
  }

  /** Sends a notice about `channelId` to `to`, at most once per {@link noticeRepeatMs} unless `now`. */
  private notice(to: NodeId, topic: string, channelId: string, now = false, payload: string = channelId): void {
    if (to === this.options.selfId) return;
    const key = `${topic}/${to}/${channelId}`;
    const at = Date.now();
    if (!now && at - (this.lastNoticeMs.get(key) ?? 0) < noticeRepeatMs) return;
    this.lastNoticeMs.set(key, at);
    if (this.lastNoticeMs.size > rateLimitKeysMax) {
      // Entries older than the repeat interval limit nothing any more; all go if that frees less than half
      // (so a scan happens at most once per rateLimitKeysMax / 2 notices).
      for (const [tracked, sentMs] of this.lastNoticeMs) if (at - sentMs >= noticeRepeatMs) this.lastNoticeMs.delete(tracked);
      if (this.lastNoticeMs.size > rateLimitKeysMax / 2) this.lastNoticeMs.clear();
    }
    this.options.sendNotice(to, topic, encoder.encode(payload));
  }

  /**
   * Asks `to` to host the channel's group, naming this homeserver's commit
   * index and the term of its last entry as the new copy's catch-up floor.
   */
  private askToHost(to: NodeId, channelId: string, now = false): void {
    const groupId = channelGroupId(channelId);
    const driver = this.options.driver;
    // A leader asks only once its term's first entry is applied: before, its last term may be on no other
    // log, and the new copy would refuse every other candidate (a review's finding). The caller asks again.
    if (driver.leaderOf(groupId) === this.options.selfId && !driver.leaderReady(groupId)) return;
    const { commit, lastTerm } = driver.status(groupId);
    this.notice(to, hostChannelGroupTopic, channelId, now, `${channelId}\n${commit}\n${lastTerm}`);
  }

  /**
   * As the group's leader, tells `to` to drop its copy, only when that is safe (the multi-group
   * simulator checks the same rule): this leader has applied every membership change before its term
   * (so, with none of its own in flight, its membership is the latest), `to` is not in it, and no member
   * of the channel is on `to` (so this leader will not add it back). The notice names this leader's term,
   * the index of its membership and its last index, so that a deposed leader or a delayed notice is not
   * believed (see believesLeaveNotice).
   */
  private tellToLeave(channelId: string, to: NodeId): void {
    const groupId = channelGroupId(channelId);
    const machine = this.machines.get(channelId);
    const record = this.options.channels.channel(channelId);
    const driver = this.options.driver;
    if (machine === undefined || to === this.options.selfId || !driver.leaderReady(groupId)) return;
    if (isConfMember(driver.confState(groupId), to) || (record !== undefined && orderingHomeservers(record).includes(to))) return;
    const status = driver.status(groupId);
    this.notice(to, leaveChannelGroupTopic, channelId, false, `${status.term}\n${machine.confIndex()}\n${channelId}\n${status.lastIndex}`);
  }

  /** Whether this copy believes a leave notice (see believesLeaveNotice). */
  private believesLeave(channelId: string, notice: LeaveNotice): boolean {
    const machine = this.machines.get(channelId);
    if (machine === undefined) return false;
    const groupId = channelGroupId(channelId);
    const status = this.options.driver.status(groupId);
    return believesLeaveNotice(notice, { confState: this.options.driver.confState(groupId), term: status.term, confIndex: machine.confIndex(), lastIndex: status.lastIndex, lastTerm: status.lastTerm, floor: this.options.driver.catchUpFloor(groupId) });
  }

  /** A peer's notice about a channel group (see the topics above). */
  onNotice(from: NodeId, topic: string, payload: Uint8Array): void {
    if (this.stopped) return;
    if (topic === leaveChannelGroupTopic) {
      const [term, confIndex, channelId, lastIndex] = decoder.decode(payload).split("\n");
      if (channelId === undefined || !isValidChannelId(channelId) || ![term, confIndex, lastIndex].every((n) => /^\d{1,15}$/.test(n ?? ""))) return;
      const notice: LeaveNotice = { from, term: Number(term), confIndex: Number(confIndex), lastIndex: Number(lastIndex) };
      if (!this.hosted.has(channelId)) return;
      // A hibernating copy is loaded first: the notice is checked against its applied membership.
      void this.options.driver
        .wake(channelGroupId(channelId), false)
        .then(() => {
          if (this.believesLeave(channelId, notice)) void this.leave(channelId, `${from}, the group's leader, removed this homeserver`);
        })
        .catch(() => undefined);
      return;
    }
    // The channel id, and for a request to host a copy the new copy's catch-up floor (index and term).
    const [channelId = "", ...floorText] = decoder.decode(payload).split("\n");
    if (!isValidChannelId(channelId) || floorText.length > 2 || !floorText.every((n) => /^\d{1,15}$/.test(n))) return;
    const catchUpFloor: CatchUpFloor = floorText.length === 2 ? { index: Number(floorText[0]), term: Number(floorText[1]) } : noCatchUpFloor;
    if (topic === wakeChannelGroupTopic) {
      // Loaded in its quiet role, without campaigning: the waking peer's command follows.
      if (this.hosted.has(channelId)) this.options.driver.wake(channelGroupId(channelId), false).catch(() => undefined);
      return;
    }
    if (topic === missingChannelGroupTopic) {
      this.onMissingCopy(channelId, from);
      return;
    }
    if (topic !== hostChannelGroupTopic || this.hosted.has(channelId) || this.hosted.size >= channelGroupsMax) return;
    void this.exclusive(channelId, async () => {
      if (this.hosted.has(channelId) || this.stopped) return;
      // The floor is stored with the new copy, before it takes any message.
      await this.host(channelId, await this.options.engine.openGroup(channelGroupId(channelId), [], catchUpFloor));
      this.hostedOnRequest.set(channelId, Date.now());
      this.options.logger.info({ channelId, from, catchUpFloor }, "hosting a channel group at a member's request");
    }).catch((error: unknown) => this.options.logger.warn({ channelId, from, err: error }, "could not host a channel group"));
  }

  /**
   * `from`, a member of the group, holds no copy of it (its data directory
   * was lost).
   * - Of two voters, this homeserver and `from`: if this one holds every
   *   committed entry, `from` is asked to host the group again in place (a
   *   removal would need its acknowledgement and never commit). It does when
   *   it leads (every entry committed in its term needed it, and it holds
   *   those of earlier terms), and when it follows, is not itself catching up
   *   (a copy made anew replays old memberships), and has that membership
   *   applied with no later conf change in its log (the leader commits nothing
   *   past a conf change before applying it, so every later entry was committed
   *   by both). The new copy's catch-up floor is this one's commit index and
   *   last term, so it votes only for a log at least as complete as this one's.
   *   A follower must do it: if `from` led, nobody else can be elected without
   *   its vote.
   * - Otherwise only the leader acts. Another voter is removed, at most once
   *   per {@link lostCopyRemovalIntervalMs}, and then added back as a voter
   *   with a new copy (reconcile). The removal commits on a majority without
   *   it, which holds everything it had acknowledged, and its
   *   acknowledgements from before count no more: the new copy is an ordinary
   *   voter that lags. A copy rebuilt in place would vote, with the membership
   *   from the log's first entries, before it held the entries committed with
   *   the acknowledgements it lost.
   * - A learner is asked again to host the group.
   */
  private onMissingCopy(channelId: string, from: NodeId): void {
    const groupId = channelGroupId(channelId);
    const driver = this.options.driver;
    const selfId = this.options.selfId;
    if (!this.hosted.has(channelId) || !driver.hosts(groupId)) return;
    if (driver.isDormant(groupId)) {
      // Hibernated since it sent the message: loaded first, to tell whether it is catching up.
      driver.wake(groupId, false).then(() => driver.isDormant(groupId) || this.onMissingCopy(channelId, from), () => undefined);
      return;
    }
    const leads = driver.leaderOf(groupId) === selfId;
    const action = lostCopyAction({
      selfId,
      from,
      leads,
      confState: driver.confState(groupId),
      catchingUp: driver.catchingUp(groupId),
      holdsUnappliedConfChange: driver.holdsUnappliedConfChange(groupId),
    });
    if (action === "host") {
      this.options.logger.info({ channelId, homeserver: from, leads }, "a member of a channel group holds no copy of it (its data directory was lost): asking it to host the group again");
      this.askToHost(from, channelId);
    } else if (action === "remove") {
      const key = lostCopyKey(channelId, from);
      const now = Date.now();
      if (now - (this.lostCopyRemovals.get(key) ?? 0) < lostCopyRemovalIntervalMs) return;
      if (this.lostCopyRemovals.size >= rateLimitKeysMax) this.lostCopyRemovals.clear();
      this.lostCopyRemovals.set(key, now);
      this.options.logger.info({ channelId, homeserver: from }, "a voter of a channel group holds no copy of it (its data directory was lost): removing it, to add it back with a new copy");
      this.changeMembership(groupId, ConfChangeType.RemoveNode, from);
    }
  }

  /** A message came for a channel group not hosted here: tell its sender, which may count this homeserver as a member. */
  onUnhostedMessage(from: NodeId, groupId: GroupId): void {
    if (this.stopped || !groupId.startsWith(channelGroupPrefix)) return;
    const channelId = groupId.slice(channelGroupPrefix.length);
    if (isValidChannelId(channelId) && !this.hosted.has(channelId)) this.notice(from, missingChannelGroupTopic, channelId);
  }

  /** A message for a group this homeserver leads came from a non-member: it was removed and missed it. */
  onForeignMessage(from: NodeId, groupId: GroupId): void {
    if (groupId.startsWith(channelGroupPrefix)) this.tellToLeave(groupId.slice(channelGroupPrefix.length), from);
  }

  /** Stops hosting the channel's group and deletes its copy here. */
  private leave(channelId: string, why: string): Promise<void> {
    return this.exclusive(channelId, async () => {
      if (!this.hosted.has(channelId)) return;
      const groupId = channelGroupId(channelId);
      this.hosted.delete(channelId);
      this.machines.delete(channelId);
      this.unsettled.delete(channelId);
      this.recentlyChanged.delete(channelId);
      this.hostedOnRequest.delete(channelId);
      await this.options.driver.removeGroup(groupId);
      await this.options.engine.dropGroup(groupId);
      this.options.channels.forget(channelId);
      this.options.logger.info({ channelId, why }, "left a channel group");
    }).catch((error: unknown) => this.options.logger.warn({ channelId, err: error }, "could not leave a channel group"));
  }
}

function withTimeout<T>(work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(error()), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (failure: unknown) => {
        clearTimeout(timer);
        reject(failure instanceof Error ? failure : new Error(String(failure)));
      },
    );
  });
}
