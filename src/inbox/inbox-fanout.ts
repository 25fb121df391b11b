/**
 * Fills the inboxes of the devices this homeserver sponsors while the cluster
 * log is applied: for each accepted channel event, an entry per local
 * recipient, written in the same batch as the apply.
 *
 * Recipients (decided from the replicated channel state, so identical on every
 * homeserver that would serve the device):
 * - a commit: every member of the epoch it ends (the members before it), so
 *   removed devices get their removal and added ones do not;
 * - its Welcome: the devices the commit added;
 * - a proposal or an application message: the channel's members when it is
 *   accepted, the sender's own device included (an encrypted message hides
 *   its sender, and the sender's other state may need the echo).
 */
import type { ChannelResult, ChannelStateMachine } from "../channel/channel-state-machine.ts";
import { EntryKind, GapReason } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import type { ChannelCommand } from "../gen/epochd/state/v1/channel_state_pb.ts";
import { parseDeviceId } from "../mls/identity.ts";
import type { Entry, LogIndex } from "../raft/types.ts";
import type { KvWrite } from "../storage/storage-engine.ts";
import { decodeDirectCommand, directMessageId } from "./direct-command.ts";
import type { InboxStore } from "./inbox-store.ts";

/** What applying a direct-message entry did here, for a proposer on this homeserver. */
export type DirectResult =
  | { readonly ok: true; readonly queuedHere: boolean; readonly messageId: string }
  | { readonly ok: false; readonly code: "full"; readonly reason: string; readonly messageId: string }
  | { readonly ok: false; readonly code: "invalid"; readonly reason: string };

/** One apply round's inbox writes: collected during apply, announced once written. */
export interface InboxApplyRound {
  /** Applies a channel command through `apply` and queues its events for local devices. */
  channelCommand(command: ChannelCommand, index: LogIndex, apply: () => Promise<ChannelResult>): Promise<ChannelResult>;
  /** Queues a direct message entry if its target is a local device. */
  direct(entry: Entry): DirectResult;
  /** The inbox writes, for the apply batch. */
  readonly writes: KvWrite[];
  /** Call once the batch is in storage. */
  afterWrite(): void;
}

const encoder = new TextEncoder();

/** Creates an apply round per batch of entries; see {@link InboxApplyRound}. */
export class InboxFanout {
  /** Told of each applied direct message once its batch is written (SendDirect waits on it). */
  onDirectApplied: ((messageId: string, result: DirectResult) => void) | undefined;

  constructor(
    private readonly selfId: string,
    readonly store: InboxStore,
    private readonly channels: ChannelStateMachine,
  ) {}

  private localMembers(channelId: string): string[] {
    const record = this.channels.channel(channelId);
    if (record === undefined) return [];
    return record.members.filter((m) => m.homeserverId === this.selfId).map((m) => m.deviceId);
  }

  /** Starts the inbox part of one apply round. */
  begin(): InboxApplyRound {
    const writes: KvWrite[] = [];
    const directs: Array<[string, DirectResult]> = [];
    return {
      writes,
      channelCommand: (command, index, apply) => this.channelCommand(command, index, apply, writes),
      direct: (entry) => {
        const result = this.direct(entry, writes);
        if (result.ok || result.code === "full") directs.push([result.messageId, result]);
        return result;
      },
      afterWrite: () => {
        this.store.markDurable();
        for (const [messageId, result] of directs) this.onDirectApplied?.(messageId, result);
      },
    };
  }

  private async channelCommand(command: ChannelCommand, index: LogIndex, apply: () => Promise<ChannelResult>, writes: KvWrite[]): Promise<ChannelResult> {
    const channelId = command.command.case === undefined || command.command.case === "signatures" ? undefined : command.command.value.channelId;
    const before = channelId === undefined ? [] : this.localMembers(channelId);
    const result = await apply();
    if (!result.ok || channelId === undefined) return result;
    const logIndex = BigInt(index);
    if (result.kind === "commit-accepted" && command.command.case === "submitCommit") {
      const { commit, welcome } = command.command.value;
      const base = { channelId, channelSequence: result.sequence, epoch: result.epoch, logIndex };
      for (const deviceId of before) {
        this.store.append(deviceId, { ...base, kind: EntryKind.COMMIT, payload: commit, messageId: `${channelId}#${result.sequence}` }, writes);
      }
      if (welcome.byteLength > 0) {
        const added = this.localMembers(channelId).filter((id) => !before.includes(id));
        for (const deviceId of added) {
          this.store.append(deviceId, { ...base, kind: EntryKind.WELCOME, payload: welcome, messageId: `${channelId}#${result.sequence}/welcome` }, writes);
        }
      }
    } else if (result.kind === "proposal-accepted" && command.command.case === "submitProposal") {
      const { proposal, epoch } = command.command.value;
      this.queueForMembers(channelId, { kind: EntryKind.PROPOSAL, payload: proposal, epoch, sequence: result.sequence, logIndex }, writes);
    } else if (result.kind === "message-accepted" && result.duplicate !== true && command.command.case === "sendMessage") {
      const { message, epoch } = command.command.value;
      this.queueForMembers(channelId, { kind: EntryKind.MESSAGE, payload: message, epoch, sequence: result.sequence, logIndex }, writes);
    }
    return result;
  }

  private queueForMembers(
    channelId: string,
    event: { kind: EntryKind; payload: Uint8Array; epoch: bigint; sequence: bigint; logIndex: bigint },
    writes: KvWrite[],
  ): void {
    for (const deviceId of this.localMembers(channelId)) {
      this.store.append(
        deviceId,
        { kind: event.kind, channelId, channelSequence: event.sequence, epoch: event.epoch, payload: event.payload, logIndex: event.logIndex, messageId: `${channelId}#${event.sequence}` },
        writes,
      );
    }
  }

  private direct(entry: Entry, writes: KvWrite[]): DirectResult {
    const command = decodeDirectCommand(entry.data);
    if (command === undefined) return { ok: false, code: "invalid", reason: "malformed direct message" };
    const target = parseDeviceId(encoder.encode(command.targetDeviceId));
    if (target === undefined) return { ok: false, code: "invalid", reason: "target is not a device id" };
    const messageId = directMessageId(command.senderDeviceId, command.nonce);
    if (target.homeserver !== this.selfId) return { ok: true, queuedHere: false, messageId };
    const outcome = this.store.append(
      target.deviceId,
      { kind: EntryKind.DIRECT, payload: command.payload, senderDeviceId: command.senderDeviceId, logIndex: BigInt(entry.index), messageId },
      writes,
    );
    if (!outcome.queued) return { ok: false, code: "full", reason: `the inbox of ${target.deviceId} is full`, messageId };
    return { ok: true, queuedHere: true, messageId };
  }

  /**
   * After installing a snapshot at `index`, this homeserver never applied the
   * entries the snapshot covers: each local member of each channel gets a gap
   * marker telling it to resync the channel from its own last sequence. Direct
   * messages among the skipped entries are lost (documented).
   */
  async afterSnapshot(index: LogIndex, channelIds: readonly string[]): Promise<void> {
    const writes: KvWrite[] = [];
    for (const channelId of channelIds) {
      for (const deviceId of this.localMembers(channelId)) this.store.appendGap(deviceId, channelId, BigInt(index), GapReason.SNAPSHOT, writes);
    }
    if (writes.length === 0) return;
    await this.store.writeLocal(writes);
    this.store.markDurable();
  }
}
