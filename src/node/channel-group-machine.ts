/**
 * The state machine of one channel's own Raft group: the channel's commands
 * (create, commits, proposals, messages, certificate signatures) applied by
 * the shared {@link ChannelStateMachine}, and the group's membership as its
 * conf-change entries leave it, so that apply knows the voters at each entry
 * (a certificate names exactly them, and a channel whose voters differ from
 * its members' homeservers takes no command until the group follows).
 *
 * Each homeserver hosting the group fills its local devices' inboxes while
 * applying; those writes go to the cluster group's key space (where the
 * inboxes live) in the same RocksDB batch as the apply.
 */
import { readStoredChannels, type AcceptedCommit, type ChannelResult, type ChannelStateMachine, type StoredChannels } from "../channel/channel-state-machine.ts";
import type { ChannelCommand } from "../gen/epochd/state/v1/channel_state_pb.ts";
import type { InboxFanout } from "../inbox/inbox-fanout.ts";
import { ApplyBatch } from "../multiraft/apply-batch.ts";
import { entryBody } from "../multiraft/entry-payload.ts";
import { decodePairChunks, snapshotChunks } from "../multiraft/pairs-snapshot.ts";
import type { ApplyOutcome, SnapshotChunks, StateMachine } from "../multiraft/state-machine.ts";
import { applyConfChange, confMembers, decodeConfChange } from "../raft/conf-change.ts";
import { emptyConfState, EntryType, type ConfState, type Entry, type LogIndex } from "../raft/types.ts";
import type { GroupReader, GroupStore, KvWrite } from "../storage/storage-engine.ts";
import { channelCommandOp } from "../channel/channel-command.ts";
import { decodeChannelCommand } from "../channel/command-decoder.ts";

/** Namespace of the channel's records in its group's key space (see channel-keys.ts). */
export const channelNamespace = 0x43; // "C"
/** Key of the group's membership as of the last applied entry. */
const confStateKey = Uint8Array.of(0x47); // "G"

/** What a channel group's apply tells its homeserver. */
export interface ChannelGroupListener {
  /**
   * A channel command's result as soon as it is applied in memory, before
   * the batch is written; `requestId` as the proposer chose it (empty if
   * none). Its proposer may be answered now (the entry is committed, and a
   * restart replays the same result), but whoever reads the command's
   * records from the store must wait for them first (a read index).
   */
  onCommandApplied(result: ChannelResult, index: LogIndex, requestId: Uint8Array): void;
  /** A channel command's result (or certificates recorded along with one), after the batch is written. */
  onChannelResult(result: ChannelResult, index: LogIndex): void;
  /** The group's membership as of the last applied entry changed (by an entry or a snapshot). */
  onMembership(channelId: string, confState: ConfState): void;
  /**
   * A commit changed the channel's members: called during apply, before the
   * batch is written, so that the leader stops admitting commands at once.
   */
  onMembersApplied(channelId: string): void;
  /** A commit was accepted at `index`: called during apply, before the batch is written (co-signing starts at once). */
  onCommitAccepted(result: Extract<ChannelResult, { kind: "commit-accepted" }>, index: LogIndex): void;
  /**
   * The commit an entry stored here but not yet committed will make the
   * channel accept, if it commits: the entry follows everything applied
   * here and was stored in its own term, from that term's leader (see
   * {@link ChannelGroupMachine.storedNext}).
   */
  onCommitStored(commit: AcceptedCommit): void;
}

/** The shared parts every channel group's machine uses. */
export interface ChannelGroupContext {
  readonly channels: ChannelStateMachine;
  /** Local inboxes, filled while applying; undefined in tests without inboxes. */
  readonly inbox: InboxFanout | undefined;
  /** The store the inboxes live in (the cluster group's). */
  readonly inboxStore: GroupStore | undefined;
  readonly listener: ChannelGroupListener;
}

/** The group's membership as applied: the conf state, the index of its entry, and who left it. */
interface AppliedMembership {
  readonly conf: ConfState;
  readonly index: LogIndex;
  /** Homeservers a membership change removed and none added back: they may still hold a copy. */
  readonly former: readonly string[];
}

const noMembership: AppliedMembership = { conf: emptyConfState, index: 0, former: [] };

function encodeMembership(m: AppliedMembership): Uint8Array {
  return new TextEncoder().encode(JSON.stringify([m.conf.voters, m.conf.votersOutgoing, m.conf.learners, m.conf.learnersNext, m.index, m.former]));
}

function decodeMembership(bytes: Uint8Array | undefined): AppliedMembership {
  if (bytes === undefined) return noMembership;
  const [voters, votersOutgoing, learners, learnersNext, index, former] = JSON.parse(new TextDecoder().decode(bytes)) as [string[], string[], string[], string[], number, string[]];
  return { conf: { voters, votersOutgoing, learners, learnersNext }, index: index ?? 0, former: former ?? [] };
}



/** See the module comment. */
export class ChannelGroupMachine implements StateMachine {
  private membership: AppliedMembership = noMembership;
  /**
   * Commands {@link storedNext} decoded, by their entry (the log hands apply
   * the same entry object): apply takes the command from here, and with it
   * the decision the preview made (ChannelStateMachine.previewCommit).
   */
  private readonly decodedAhead = new WeakMap<Entry, ChannelCommand>();

  constructor(
    readonly channelId: string,
    readonly store: GroupStore,
    private readonly context: ChannelGroupContext,
  ) {}

  /** The group's membership as of the last applied entry. */
  confState(): ConfState {
    return this.membership.conf;
  }

  /** Index of the entry of the membership last applied. */
  confIndex(): LogIndex {
    return this.membership.index;
  }

  /** Homeservers removed from the group (and not added back): they may still hold a copy to drop. */
  formerMembers(): readonly string[] {
    return this.membership.former;
  }

  /** Loads the channel and the membership from the group's store; call before hosting it. */
  async load(): Promise<void> {
    this.adopt(await readChannelGroup(this.store));
  }

  /**
   * Takes what {@link readChannelGroup} read into memory in one synchronous
   * step, so that nobody sees the channel missing halfway through a load.
   */
  adopt(stored: StoredChannelGroup): void {
    this.context.channels.forget(this.channelId);
    this.membership = stored.membership;
    this.context.channels.adopt(stored.channels);
  }

  async apply(entries: readonly Entry[]): Promise<ApplyOutcome> {
    const writes: KvWrite[] = [];
    const results = new Map<LogIndex, unknown>();
    const batch = new ApplyBatch(channelNamespace, (key) => this.store.get(key));
    const inbox = this.context.inbox?.begin();
    const announced: Array<[ChannelResult, LogIndex]> = [];
    let confChanged = false;
    for (const entry of entries) {
      if (entry.type === EntryType.ConfChange) {
        confChanged = this.applyConfChange(entry) || confChanged;
        continue;
      }
      const body = entryBody(entry.data, channelCommandOp);
      if (body === undefined) continue;
      let command: ChannelCommand;
      try {
        command = this.decodedAhead.get(entry) ?? decodeChannelCommand(body);
      } catch {
        results.set(entry.index, { ok: false, code: "invalid", reason: "malformed channel command" } satisfies ChannelResult);
        continue;
      }
      if (command.certificates.length > 0) {
        // Certificates the leader recorded along with the command: of earlier commits, so before it.
        const recorded = this.context.channels.recordSignatures(command.certificates.filter((item) => item.channelId === this.channelId), batch);
        if (recorded.certified.length > 0) announced.push([recorded, entry.index]);
      }
      const result = await this.applyCommand(command, entry.index, batch, inbox);
      results.set(entry.index, result);
      if (command.requestId.byteLength > 0) this.context.listener.onCommandApplied(result, entry.index, command.requestId);
      // A commit changes the members; a creation names the first member and any witnesses.
      if (result.ok && (result.kind === "commit-accepted" || result.kind === "created")) this.context.listener.onMembersApplied(this.channelId);
      if (result.ok && result.kind === "commit-accepted") this.context.listener.onCommitAccepted(result, entry.index);
      announced.push([result, entry.index]);
    }
    writes.push(...batch.writes);
    if (confChanged) writes.push({ key: confStateKey, value: encodeMembership(this.membership) });
    const inboxWrites = inbox?.writes ?? [];
    const localWrites = inboxWrites.length > 0 && this.context.inboxStore !== undefined ? [{ group: this.context.inboxStore, writes: inboxWrites }] : [];
    const conf = this.membership.conf;
    const afterWrite = () => {
      inbox?.afterWrite();
      if (confChanged) this.context.listener.onMembership(this.channelId, conf);
      for (const [result, index] of announced) this.context.listener.onChannelResult(result, index);
    };
    return { writes, results, localWrites, afterWrite };
  }

  /**
   * A commit's entry, stored right after everything applied here, in its
   * own term (see `StateMachine.storedNext`): what it will make the channel
   * accept is decided by the log up to it, all applied here, and the entry
   * itself, so the listener may sign it before it commits. Not while the
   * group's membership is joint: a certificate counts a majority of one set
   * of voters, the Raft core then two.
   */
  storedNext(entry: Entry): void {
    if (entry.type !== EntryType.Normal || this.membership.conf.votersOutgoing.length > 0) return;
    const body = entryBody(entry.data, channelCommandOp);
    if (body === undefined) return;
    let command: ChannelCommand;
    try {
      command = decodeChannelCommand(body);
    } catch {
      return;
    }
    if (command.command.case !== "submitCommit" || command.command.value.channelId !== this.channelId) return;
    this.decodedAhead.set(entry, command);
    const preview = this.context.channels.previewCommit(command.command.value, BigInt(entry.index));
    const listener = this.context.listener;
    if (preview instanceof Promise) void preview.then((commit) => commit !== undefined && listener.onCommitStored(commit), () => undefined);
    else if (preview !== undefined) listener.onCommitStored(preview);
  }

  /** Follows a conf-change entry exactly as the Raft core does (the same pure function); true if it changed. */
  private applyConfChange(entry: Entry): boolean {
    let outcome;
    try {
      outcome = applyConfChange(this.membership.conf, decodeConfChange(entry.data));
    } catch {
      return false;
    }
    if (!outcome.ok) return false;
    const now = new Set(confMembers(outcome.confState));
    const former = new Set([...this.membership.former, ...confMembers(this.membership.conf).filter((id) => !now.has(id))].filter((id) => !now.has(id)));
    this.membership = { conf: outcome.confState, index: entry.index, former: [...former].sort() };
    return true;
  }

  private applyCommand(command: ChannelCommand, index: LogIndex, batch: ApplyBatch, inbox: ReturnType<InboxFanout["begin"]> | undefined): Promise<ChannelResult> {
    const value = command.command.value;
    // A group holds one channel: a command naming another is refused, and signatures for another are ignored.
    if (command.command.case === "signatures" && value !== undefined && "items" in value) {
      value.items = value.items.filter((item) => item.channelId === this.channelId);
    } else if (value !== undefined && "channelId" in value && value.channelId !== this.channelId) {
      return Promise.resolve({ ok: false, code: "invalid", reason: `this group orders channel ${this.channelId}, not ${value.channelId}` });
    }
    const apply = () => this.context.channels.apply(command, index, batch);
    return inbox === undefined ? apply() : inbox.channelCommand(command, index, apply);
  }

  snapshotChunks(): SnapshotChunks {
    return snapshotChunks((prefix) => this.store.scan(prefix));
  }

  restoreStored(chunks: SnapshotChunks): Promise<void> {
    return this.store.restoreStateMachine(decodePairChunks(chunks));
  }

  async afterRestore(index: LogIndex): Promise<void> {
    await this.load();
    this.context.listener.onMembership(this.channelId, this.membership.conf);
    await this.context.inbox?.afterSnapshot(index, [this.channelId]);
  }
}

/** A channel group's state machine records as stored: its applied membership and its channel. */
export interface StoredChannelGroup {
  readonly membership: AppliedMembership;
  readonly channels: StoredChannels;
}

/** What {@link readChannelGroup} reads from: an open group's store, or the engine's reader of a closed one. */
export type StateRecordReader = Pick<GroupReader, "get" | "scan">;

/**
 * Reads a channel group's state machine records with all reads in flight at
 * once. A store open or not: a hibernating group's records are read while
 * its log is loaded.
 */
export async function readChannelGroup(reader: StateRecordReader): Promise<StoredChannelGroup> {
  const [membership, channels] = await Promise.all([reader.get(confStateKey), readStoredChannels((prefix) => reader.scan(withNamespace(prefix)))]);
  return { membership: decodeMembership(membership), channels };
}

/** `key` in the channel namespace of a channel group's key space. */
export function withNamespace(key: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + key.byteLength);
  out[0] = channelNamespace;
  out.set(key, 1);
  return out;
}
