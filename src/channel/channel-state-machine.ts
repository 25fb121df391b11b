import { create, fromBinary } from "@bufbuild/protobuf";
import {
  CertificateSchema,
  ChannelEventSchema,
  type Certificate,
  EventKind,
  HandshakeMode,
  MemberRole,
  MemberSchema,
  type ChannelEvent,
  type CreateChannelRequest,
  type Member,
  type SendMessageRequest,
  type SubmitCommitRequest,
  type SubmitProposalRequest,
} from "../gen/epochd/channel/v1/channel_pb.ts";
import {
  ChannelRecordSchema,
  EpochRecordSchema,
  type CommitSignatures,
  type ChannelCommand,
  type ChannelRecord,
  type EpochRecord,
} from "../gen/epochd/state/v1/channel_state_pb.ts";
import {
  decodeGroupInfoMessage,
  inspectApplicationMessage,
  inspectPrivateCommit,
  verifyInitialGroupInfo,
  verifyNextGroupInfo,
  verifyPublicCommit,
  verifyPublicProposal,
  type Member as MlsMember,
  outlineGroupInfoMessage,
  sha256,
} from "../mls/index.ts";
import type { LogIndex } from "../raft/types.ts";
import { certificateStatement, detachedSignature, isCertified, verifyCommitSignature } from "./certificate.ts";
import { messageKey, certificateKey, channelKey, channelRecordPrefix, epochKey, eventKey, eventPrefix, isValidChannelId, uncertifiedKey, uncertifiedPrefix } from "./channel-keys.ts";
import type { ApplyBatch } from "../multiraft/apply-batch.ts";
import { followsMembers } from "./group-membership.ts";
import { encodeCertificate, encodeChannelEvent, encodeChannelRecord, encodeEpochRecord } from "./record-codec.ts";

/** Application messages may be encrypted in this many epochs before the current one. */
export const messageEpochWindow = 4n;
/** Most standalone proposals a channel holds for one epoch. */
export const pendingProposalsMax = 64;
/** Longest content type string. */
export const contentTypeBytesMax = 128;

/** What applying a channel command decided; itself replicated, so identical on every homeserver. */
export type ChannelResult =
  | { ok: true; kind: "created"; channelId: string }
  | { ok: true; kind: "commit-accepted"; channelId: string; epoch: bigint; commitHash: Uint8Array; sequence: bigint; voters: string[] }
  | { ok: true; kind: "proposal-accepted"; channelId: string; sequence: bigint }
  /** `duplicate`: the same message bytes were accepted before, at `sequence`; nothing changed. */
  | { ok: true; kind: "message-accepted"; channelId: string; sequence: bigint; duplicate?: true }
  | { ok: true; kind: "signatures"; certified: Array<{ channelId: string; epoch: bigint }> }
  | { ok: false; code: "invalid"; reason: string }
  | { ok: false; code: "not-found" | "exists"; reason: string }
  /** The channel's Raft group is still being changed to its members' homeservers: retry shortly. */
  | { ok: false; code: "busy"; reason: string }
  | { ok: false; code: "conflict"; channelId: string; currentEpoch: bigint; builtOn: bigint; reason: string };

/** The replicated facts the channel machine needs from the rest of the cluster state. */
export interface ChannelDirectory {
  readonly clusterId: string;
  /** The raw Ed25519 key a homeserver signs certificates with; undefined if unknown. */
  signingKeyOf(homeserverId: string): Uint8Array | undefined;
  /**
   * The voters of the channel's own Raft group at the entry being applied,
   * when each channel has its own group (undefined while it has none).
   * Absent: every homeserver sponsoring a member votes (all channels in one
   * group). With groups, a command is applied only while the voters are
   * exactly the members' homeservers, so that a certificate's voters are the
   * homeservers of the tree it certifies.
   */
  votersOf?(channelId: string): readonly string[] | undefined;
}

/** A command's rejection (see {@link ChannelResult}). */
type Rejection = Extract<ChannelResult, { ok: false }>;

const invalid = (reason: string): Rejection => ({ ok: false, code: "invalid", reason });

/** A commit's accepted outcome: what the channel becomes, and who certifies it. */
interface CommitDecision {
  readonly ok: true;
  readonly commitHash: Uint8Array;
  readonly nextMembers: readonly MlsMember[];
  readonly nextGroupInfo: Uint8Array;
  readonly voters: string[];
}

/** What a commit's decision reads of its channel's record: each replaced, never changed in place, when the channel changes. */
const decisionInputKeys = ["epoch", "groupId", "groupInfo", "handshakeMode", "members", "witnesses", "pendingProposals", "pendingProposedAdds", "pendingProposedRemoves"] as const;
type DecisionInputs = Pick<ChannelRecord, (typeof decisionInputKeys)[number]>;

function inputsOf(record: ChannelRecord): DecisionInputs {
  const inputs: Partial<Record<keyof DecisionInputs, unknown>> = {};
  for (const key of decisionInputKeys) inputs[key] = record[key];
  return inputs as DecisionInputs;
}

/** A preview's decision, with its inputs: the request (the very object apply decodes, see ChannelGroupMachine), the record's fields and the voters. */
interface DecidedCommit extends DecisionInputs {
  readonly request: SubmitCommitRequest;
  readonly voters: readonly string[];
  readonly decision: CommitDecision | Rejection;
}

/** Whether `record` and `voters` are what `memo` was decided on: the same field objects, the same epoch and voters. */
function sameInputs(memo: DecidedCommit, record: ChannelRecord, voters: readonly string[]): boolean {
  return decisionInputKeys.every((key) => memo[key] === record[key]) && sameList(memo.voters, voters);
}

/** A commit a channel accepts (or would accept) at `logIndex`: what its certificate states. */
export interface AcceptedCommit {
  readonly channelId: string;
  readonly epoch: bigint;
  readonly commitHash: Uint8Array;
  readonly logIndex: bigint;
  readonly voters: readonly string[];
}

/**
 * The channel state machine: orders each channel's MLS commits by epoch.
 * A commit is accepted iff it builds on the current epoch, verifies as an MLS
 * commit of this group and epoch from a member allowed to make it, and comes
 * with the committer's GroupInfo for the next epoch; any other commit for an
 * epoch is rejected, deterministically. Channels are held in memory (loaded at
 * start) and written through to storage in the apply batch.
 */
export class ChannelStateMachine {
  private readonly channels = new Map<string, ChannelRecord>();
  /**
   * Certificates still gathering signatures, by `channel/epoch`: in memory (and
   * under 'u' for restarts) so that recording signatures needs no read.
   */
  private readonly uncertified = new Map<string, Certificate>();
  /** Channels whose record in memory is slimmed (see {@link slim}). */
  private readonly slimmed = new Set<string>();
  /**
   * The last commit decided per channel by a preview (see {@link previewCommit}),
   * with everything the decision read, so that the apply of the same request
   * on the same state takes it instead of checking the commit again.
   */
  private readonly decided = new Map<string, DecidedCommit>();

  constructor(private readonly directory: ChannelDirectory) {}

  /** Loads every channel record; call at start and after a snapshot restore. */
  async load(scan: (prefix: Uint8Array) => AsyncIterable<[Uint8Array, Uint8Array]>): Promise<void> {
    const stored = await readStoredChannels(scan);
    this.channels.clear();
    this.uncertified.clear();
    this.slimmed.clear();
    this.adopt(stored);
  }

  /** Takes channels read by {@link readStoredChannels} into memory, replacing what was held for them. */
  adopt(stored: StoredChannels): void {
    for (const record of stored.records) {
      this.channels.set(record.channelId, record);
      this.slimmed.delete(record.channelId);
    }
    for (const certificate of stored.uncertified) this.uncertified.set(`${certificate.channelId}/${certificate.epoch}`, certificate);
  }

  /**
   * Keeps only what answering for a channel needs while its group
   * hibernates (members, roles, epoch): its GroupInfo and pending proposals
   * leave memory. Loading the group again brings the whole record back;
   * {@link wholeRecord} reads it from the store meanwhile.
   */
  slim(channelId: string): void {
    const record = this.channels.get(channelId);
    if (record === undefined) return;
    this.channels.set(channelId, create(ChannelRecordSchema, { ...record, groupInfo: new Uint8Array(0), pendingProposals: [] }));
    this.slimmed.add(channelId);
  }

  /** The channel's whole record: the one in memory, or, while it is slimmed, the stored one (read with `get`). */
  async wholeRecord(channelId: string, get: (key: Uint8Array) => Promise<Uint8Array | undefined>): Promise<ChannelRecord | undefined> {
    if (!this.slimmed.has(channelId)) return this.channels.get(channelId);
    const bytes = await get(channelKey(channelId));
    return bytes === undefined ? undefined : fromBinary(ChannelRecordSchema, bytes);
  }

  /** Drops a channel from memory (its group left this homeserver, or is about to be reloaded). */
  forget(channelId: string): void {
    this.channels.delete(channelId);
    this.decided.delete(channelId);
    this.slimmed.delete(channelId);
    const prefix = `${channelId}/`;
    for (const key of this.uncertified.keys()) if (key.startsWith(prefix)) this.uncertified.delete(key);
  }

  channel(channelId: string): ChannelRecord | undefined {
    return this.channels.get(channelId);
  }

  channelCount(): number {
    return this.channels.size;
  }

  /** Applies one command at log index `index`. Never throws on any command content. */
  async apply(command: ChannelCommand, index: LogIndex, batch: ApplyBatch): Promise<ChannelResult> {
    switch (command.command.case) {
      case "createChannel":
        return this.create(command.command.value, batch);
      case "submitCommit":
        return this.commit(command.command.value, BigInt(index), batch);
      case "submitProposal":
        return this.proposal(command.command.value, batch);
      case "sendMessage":
        return this.message(command.command.value, batch);
      case "signatures":
        return this.recordSignatures(command.command.value.items, batch);
      default:
        return invalid("empty channel command");
    }
  }

  private save(record: ChannelRecord, batch: ApplyBatch): void {
    this.channels.set(record.channelId, record);
    batch.put(channelKey(record.channelId), encodeChannelRecord(record));
  }

  private appendEvent(record: ChannelRecord, kind: EventKind, epoch: bigint, payload: Uint8Array, batch: ApplyBatch): bigint {
    record.lastSequence += 1n;
    const event = create(ChannelEventSchema, { sequence: record.lastSequence, kind, epoch, payload });
    batch.put(eventKey(record.channelId, record.lastSequence), encodeChannelEvent(event));
    return record.lastSequence;
  }

  private async create(request: CreateChannelRequest, batch: ApplyBatch): Promise<ChannelResult> {
    if (!isValidChannelId(request.channelId)) return invalid("channel_id must be 1 to 128 characters of [A-Za-z0-9._-]");
    if (this.channels.has(request.channelId)) return { ok: false, code: "exists", reason: `channel ${request.channelId} exists` };
    if (request.contentType.length === 0 || request.contentType.length > contentTypeBytesMax || !/^[\x21-\x7e]+$/.test(request.contentType)) {
      return invalid(`content_type must be 1 to ${contentTypeBytesMax} printable ASCII characters`);
    }
    const mode = request.handshakeMode === HandshakeMode.UNSPECIFIED ? HandshakeMode.PUBLIC : request.handshakeMode;
    if (mode !== HandshakeMode.PUBLIC && mode !== HandshakeMode.ENCRYPTED) return invalid("unknown handshake_mode");
    const decoded = decodeGroupInfoMessage(request.groupInfo);
    if ("reason" in decoded) return invalid(decoded.reason);
    const verified = await verifyInitialGroupInfo(decoded.context.groupId, request.groupInfo);
    if (!verified.ok) return invalid(verified.reason);
    // That the witnesses are homeservers of the cluster is checked where the creation is proposed
    // (channel-access.ts): the cluster directory is another group's state, which may lag here.
    const members = verified.members.map((m) => toMember(m, MemberRole.OWNER));
    this.save(
      create(ChannelRecordSchema, {
        channelId: request.channelId,
        groupId: decoded.context.groupId,
        epoch: verified.epoch,
        contentType: request.contentType,
        handshakeMode: mode,
        groupInfo: verified.view.groupInfo,
        members,
        witnesses: [...decoded.witnesses],
      }),
      batch,
    );
    return { ok: true, kind: "created", channelId: request.channelId };
  }

  private conflict(record: ChannelRecord, builtOn: bigint): Rejection {
    const reason = builtOn < record.epoch ? `epoch ${builtOn} already has its commit` : `epoch ${builtOn} is ahead of the channel's epoch ${record.epoch}`;
    return { ok: false, code: "conflict", channelId: record.channelId, currentEpoch: record.epoch, builtOn, reason };
  }

  private async commit(request: SubmitCommitRequest, logIndex: bigint, batch: ApplyBatch): Promise<ChannelResult> {
    const record = this.channels.get(request.channelId);
    if (record === undefined) return { ok: false, code: "not-found", reason: `no channel ${request.channelId}` };
    const decision = await this.decideCommit(record, request);
    this.decided.delete(record.channelId);
    if (!decision.ok) return decision;
    const { commitHash, nextMembers, nextGroupInfo, voters } = decision;
    const epochRecord = create(EpochRecordSchema, {
      epoch: record.epoch,
      commit: request.commit,
      welcome: request.welcome,
      certificate: create(CertificateSchema, { clusterId: this.directory.clusterId, channelId: record.channelId, epoch: record.epoch, commitHash, logIndex, voters }),
    });
    const builtOn = record.epoch;
    epochRecord.sequence = this.appendEvent(record, EventKind.COMMIT, builtOn, request.commit, batch);
    batch.put(epochKey(record.channelId, builtOn), encodeEpochRecord(epochRecord));
    this.uncertified.set(`${record.channelId}/${builtOn}`, epochRecord.certificate!);
    batch.put(uncertifiedKey(record.channelId, builtOn), encodeCertificate(epochRecord.certificate!));
    const roles = new Map(record.members.map((m) => [m.deviceId, m.role]));
    record.members = nextMembers.map((m) => toMember(m, roles.get(m.deviceId) ?? MemberRole.MEMBER));
    record.epoch = builtOn + 1n;
    record.groupInfo = nextGroupInfo;
    record.pendingProposals = [];
    record.pendingProposedAdds = [];
    record.pendingProposedRemoves = [];
    this.save(record, batch);
    return { ok: true, kind: "commit-accepted", channelId: record.channelId, epoch: builtOn, commitHash, sequence: epochRecord.sequence, voters };
  }

  /**
   * What a commit decides on `record` when applied: the decision a preview
   * of the same request made on the same state (see {@link previewCommit}),
   * else {@link checkCommit}'s.
   */
  private async decideCommit(record: ChannelRecord, request: SubmitCommitRequest): Promise<CommitDecision | Rejection> {
    const memo = this.decided.get(record.channelId);
    if (memo !== undefined && memo.request === request && sameInputs(memo, record, this.voters(record))) return memo.decision;
    return this.checkCommit(record, request);
  }

  /**
   * What a commit decides on `record`: accepted (with what the channel
   * becomes) or the rejection. At once for encrypted handshakes (framing and
   * the next GroupInfo's outline); a promise for public ones, whose
   * signatures are checked. Changes nothing, so {@link previewCommit} can run
   * it on a shallow copy while apply moves the channel on (apply replaces a
   * record's fields, never changes a field's value in place).
   */
  private checkCommit(record: ChannelRecord, request: SubmitCommitRequest): CommitDecision | Rejection | Promise<CommitDecision | Rejection> {
    const busy = this.busy(record);
    if (busy !== undefined) return busy;
    if (request.epoch !== record.epoch) return this.conflict(record, request.epoch);
    // Before any await: a preview runs while apply may change the group's voters.
    const voters = this.voters(record);
    if (record.handshakeMode === HandshakeMode.ENCRYPTED) return this.checkEncryptedCommit(record, request, voters);
    return this.checkPublicCommit(record, request, voters);
  }

  /** {@link checkCommit} of a channel with encrypted handshakes: its framing, and the outline of the next GroupInfo. */
  private checkEncryptedCommit(record: ChannelRecord, request: SubmitCommitRequest, voters: string[]): CommitDecision | Rejection {
    const framed = inspectPrivateCommit({ groupId: record.groupId, epoch: record.epoch, groupInfo: record.groupInfo }, request.commit);
    if (!framed.ok) return invalid(framed.reason);
    // The signature cannot be checked against a commit the homeservers cannot read: the outline is enough.
    const next = outlineGroupInfoMessage(request.nextGroupInfo);
    if ("reason" in next) return invalid(next.reason);
    if (next.epoch !== record.epoch + 1n) return invalid(`next GroupInfo is for epoch ${next.epoch}, expected ${record.epoch + 1n}`);
    if (Buffer.compare(next.groupId, record.groupId) !== 0) return invalid("next GroupInfo is for another group");
    if (!sameList(next.witnesses, record.witnesses)) return invalid(witnessesChanged(record));
    return { ok: true, commitHash: framed.commitHash, nextMembers: next.members, nextGroupInfo: request.nextGroupInfo, voters };
  }

  /** {@link checkCommit} of a channel with public handshakes: the commit against the tree, the sender's role, the next GroupInfo. */
  private async checkPublicCommit(record: ChannelRecord, request: SubmitCommitRequest, voters: string[]): Promise<CommitDecision | Rejection> {
    const view = { groupId: record.groupId, epoch: record.epoch, groupInfo: record.groupInfo };
    const verified = await verifyPublicCommit(view, request.commit, record.pendingProposals);
    if (!verified.ok) return invalid(verified.reason);
    const denied = this.checkRole(record, verified.sender.deviceId, verified.adds, verified.removes.map((m) => m.deviceId));
    if (denied !== undefined) return invalid(denied);
    const next = await verifyNextGroupInfo(view, verified, request.nextGroupInfo);
    if (!next.ok) return invalid(next.reason);
    const decoded = decodeGroupInfoMessage(next.view.groupInfo);
    const nextWitnesses = "reason" in decoded ? [] : decoded.witnesses;
    if (!sameList(nextWitnesses, record.witnesses)) return invalid(witnessesChanged(record));
    return { ok: true, commitHash: verified.commitHash, nextMembers: next.members, nextGroupInfo: next.view.groupInfo, voters };
  }

  /**
   * What applying `request` at `logIndex` would decide if it were applied
   * now, on the channel as applied so far: the statement a certificate of it
   * would sign, or undefined if it would not be accepted (or the channel is
   * not held whole here). A homeserver that stored the commit's entry right
   * after everything it applied signs this ahead of the commit (see
   * docs/ARCHITECTURE.md, "Signing at store time"). At once for a channel
   * with encrypted handshakes, later for a public one. The decision is kept
   * for the apply of the same request object on the same state, which takes
   * it instead of checking the commit again. Never throws.
   */
  previewCommit(request: SubmitCommitRequest, logIndex: bigint): AcceptedCommit | undefined | Promise<AcceptedCommit | undefined> {
    const record = this.channels.get(request.channelId);
    if (record === undefined || this.slimmed.has(request.channelId)) return undefined;
    // A copy: apply replaces the record's fields while a public commit's checks are awaited.
    const copy = { ...record };
    try {
      const voters = this.voters(copy);
      const accepted = (decision: CommitDecision | Rejection): AcceptedCommit | undefined => {
        this.decided.set(copy.channelId, { request, decision, voters, ...inputsOf(copy) });
        return decision.ok ? { channelId: copy.channelId, epoch: copy.epoch, commitHash: decision.commitHash, logIndex, voters: decision.voters } : undefined;
      };
      const decision = this.checkCommit(copy, request);
      return decision instanceof Promise ? decision.then(accepted, () => undefined) : accepted(decision);
    } catch {
      return undefined;
    }
  }

  /**
   * Owners and admins add and remove others; anyone may remove themselves or
   * update their own keys. Adds and removes that standalone proposals of this
   * epoch carry were allowed by their proposer's role already, so any member
   * may commit them (by reference).
   */
  private checkRole(record: ChannelRecord, sender: string, added: readonly string[], removed: readonly string[]): string | undefined {
    const role = record.members.find((m) => m.deviceId === sender)?.role;
    if (role === undefined) return `${sender} is not a member of ${record.channelId}`;
    if (role === MemberRole.OWNER || role === MemberRole.ADMIN) return undefined;
    if (added.some((id) => !record.pendingProposedAdds.includes(id))) return `${sender} may not add members: only owners and admins may`;
    if (removed.some((id) => id !== sender && !record.pendingProposedRemoves.includes(id))) return `${sender} may not remove others: only owners and admins may`;
    return undefined;
  }

  /**
   * The homeservers that certify a channel's commits: the voters of its
   * group, else those sponsoring a member whose key the directory knows.
   */
  voters(record: ChannelRecord): string[] {
    const groupVoters = this.directory.votersOf?.(record.channelId);
    if (groupVoters !== undefined) return [...groupVoters].sort();
    return orderingHomeservers(record).filter((id) => this.directory.signingKeyOf(id) !== undefined);
  }

  /**
   * Refuses every command of a channel whose group's voters differ from its
   * members' homeservers (an MLS add or remove was accepted and the group is
   * following it): its certificates would not match its tree, and a
   * homeserver losing its last member must see no new channel content.
   */
  private busy(record: ChannelRecord): Rejection | undefined {
    const groupVoters = this.directory.votersOf?.(record.channelId);
    if (groupVoters === undefined) return undefined;
    const wanted = orderingHomeservers(record);
    if (followsMembers(groupVoters, wanted)) return undefined;
    const voters = [...groupVoters].sort();
    return { ok: false, code: "busy", reason: `${record.channelId} is changing its homeservers from [${voters.join(", ")}] to [${wanted.join(", ")}]: retry shortly` };
  }

  private async proposal(request: SubmitProposalRequest, batch: ApplyBatch): Promise<ChannelResult> {
    const record = this.channels.get(request.channelId);
    if (record === undefined) return { ok: false, code: "not-found", reason: `no channel ${request.channelId}` };
    const busy = this.busy(record);
    if (busy !== undefined) return busy;
    if (request.epoch !== record.epoch) return this.conflict(record, request.epoch);
    if (record.handshakeMode !== HandshakeMode.PUBLIC) return invalid("standalone proposals need a channel with public handshakes");
    if (record.pendingProposals.length >= pendingProposalsMax) return invalid(`at most ${pendingProposalsMax} proposals per epoch`);
    const verified = await verifyPublicProposal({ groupId: record.groupId, epoch: record.epoch, groupInfo: record.groupInfo }, request.proposal);
    if (!verified.ok) return invalid(verified.reason);
    const removesOther = verified.remove !== undefined && verified.remove.deviceId !== verified.sender.deviceId;
    const added = verified.add === undefined ? [] : [verified.add.deviceId];
    const denied = this.checkRole(record, verified.sender.deviceId, added, removesOther ? [verified.remove!.deviceId] : []);
    if (denied !== undefined) return invalid(denied);
    record.pendingProposals = [...record.pendingProposals, request.proposal];
    record.pendingProposedAdds = [...record.pendingProposedAdds, ...added];
    if (verified.remove !== undefined) record.pendingProposedRemoves = [...record.pendingProposedRemoves, verified.remove.deviceId];
    const sequence = this.appendEvent(record, EventKind.PROPOSAL, record.epoch, request.proposal, batch);
    this.save(record, batch);
    return { ok: true, kind: "proposal-accepted", channelId: record.channelId, sequence };
  }

  private async message(request: SendMessageRequest, batch: ApplyBatch): Promise<ChannelResult> {
    const record = this.channels.get(request.channelId);
    if (record === undefined) return { ok: false, code: "not-found", reason: `no channel ${request.channelId}` };
    const busy = this.busy(record);
    if (busy !== undefined) return busy;
    const inspected = inspectApplicationMessage(record.groupId, request.message);
    if (!inspected.ok) return invalid(inspected.reason);
    if (inspected.epoch !== request.epoch) return invalid(`message is encrypted in epoch ${inspected.epoch}, not ${request.epoch}`);
    if (inspected.epoch > record.epoch || inspected.epoch + messageEpochWindow < record.epoch) {
      return invalid(`epoch ${inspected.epoch} is outside the accepted window [${record.epoch > messageEpochWindow ? record.epoch - messageEpochWindow : 0n}, ${record.epoch}]`);
    }
    // MLS never encrypts two messages to the same bytes: the same bytes again are a retry of one already ordered.
    const seenKey = messageKey(record.channelId, sha256(request.message));
    const seen = await batch.get(seenKey);
    if (seen !== undefined) return { ok: true, kind: "message-accepted", channelId: record.channelId, sequence: new DataView(seen.buffer, seen.byteOffset, 8).getBigUint64(0), duplicate: true };
    const sequence = this.appendEvent(record, EventKind.MESSAGE, inspected.epoch, request.message, batch);
    const value = new Uint8Array(8);
    new DataView(value.buffer).setBigUint64(0, sequence);
    batch.put(seenKey, value);
    this.save(record, batch);
    return { ok: true, kind: "message-accepted", channelId: record.channelId, sequence };
  }

  /**
   * Adds the signatures the leader collected to the stored certificates: a
   * `signatures` command's, or those recorded along with another command
   * (ChannelCommand.certificates). Each is checked here, deterministically:
   * from a voter of the commit's epoch, not there yet, and valid through its
   * batch root over this very statement.
   */
  recordSignatures(items: readonly CommitSignatures[], batch: ApplyBatch): Extract<ChannelResult, { kind: "signatures" }> {
    const certified: Array<{ channelId: string; epoch: bigint }> = [];
    for (const item of items) {
      const key = `${item.channelId}/${item.epoch}`;
      const certificate = this.uncertified.get(key);
      if (certificate === undefined) continue;
      const statement = certificateStatement(certificate);
      let added = false;
      for (const [position, signature] of item.signatures.entries()) {
        const signer = signature.homeserverId;
        if (!certificate.voters.includes(signer) || certificate.signatures.some((s) => s.homeserverId === signer)) continue;
        // The key the recorder checked it with, from the log: the same decision on every homeserver,
        // whatever its own directory holds now. Entries older than signer_keys fall back on the directory.
        const logged = item.signerKeys[position];
        const key = logged !== undefined && logged.byteLength > 0 ? logged : this.directory.signingKeyOf(signer);
        if (key === undefined || !verifyCommitSignature(key, statement, signature)) continue;
        certificate.signatures.push(detachedSignature(signature));
        added = true;
      }
      if (!added) continue;
      certificate.signatures.sort((a, b) => (a.homeserverId < b.homeserverId ? -1 : a.homeserverId > b.homeserverId ? 1 : 0));
      if (isCertified(certificate)) {
        this.uncertified.delete(key);
        batch.delete(uncertifiedKey(item.channelId, item.epoch));
        batch.put(certificateKey(item.channelId, item.epoch), encodeCertificate(certificate));
        certified.push({ channelId: item.channelId, epoch: item.epoch });
      } else {
        batch.put(uncertifiedKey(item.channelId, item.epoch), encodeCertificate(certificate));
      }
    }
    return { ok: true, kind: "signatures", certified };
  }

  /** Certificates still gathering signatures (after a restart, a homeserver signs those it had not). */
  gatheringCertificates(): Iterable<Certificate> {
    return this.uncertified.values();
  }

  /** Whether the certificate of the commit that ended `epoch` is still gathering signatures (no read needed). */
  isGathering(channelId: string, epoch: bigint): boolean {
    return this.uncertified.has(`${channelId}/${epoch}`);
  }

  /** The record of the commit that ended `epoch`, as stored. */
  async epochRecord(get: (key: Uint8Array) => Promise<Uint8Array | undefined>, channelId: string, epoch: bigint): Promise<EpochRecord | undefined> {
    const bytes = await get(epochKey(channelId, epoch));
    if (bytes === undefined) return undefined;
    const record = fromBinary(EpochRecordSchema, bytes);
    const gathering = this.uncertified.get(`${channelId}/${epoch}`);
    if (gathering !== undefined) {
      record.certificate = gathering;
    } else {
      const complete = await this.recordedCertificate(get, channelId, epoch);
      if (complete !== undefined) record.certificate = complete;
    }
    return record;
  }

  /** The complete certificate the log recorded for the commit that ended `epoch`, if it has one yet. */
  async recordedCertificate(get: (key: Uint8Array) => Promise<Uint8Array | undefined>, channelId: string, epoch: bigint): Promise<Certificate | undefined> {
    const bytes = await get(certificateKey(channelId, epoch));
    return bytes === undefined ? undefined : fromBinary(CertificateSchema, bytes);
  }

  /** Up to `limit` events of a channel after `afterSequence`, commits with their certificates. */
  async events(
    scan: (prefix: Uint8Array, from: Uint8Array, limit: number) => AsyncIterable<[Uint8Array, Uint8Array]>,
    get: (key: Uint8Array) => Promise<Uint8Array | undefined>,
    channelId: string,
    afterSequence: bigint,
    limit: number,
  ): Promise<ChannelEvent[]> {
    const events: ChannelEvent[] = [];
    for await (const [, value] of scan(eventPrefix(channelId), eventKey(channelId, afterSequence + 1n), limit)) {
      const event = fromBinary(ChannelEventSchema, value);
      if (event.kind === EventKind.COMMIT) {
        const record = await this.epochRecord(get, channelId, event.epoch);
        if (record !== undefined) {
          event.certificate = record.certificate;
          event.welcome = record.welcome;
        }
      }
      events.push(event);
    }
    return events;
  }
}

/** A channel group's stored channel records and certificates still gathering signatures. */
export interface StoredChannels {
  readonly records: readonly ChannelRecord[];
  readonly uncertified: readonly Certificate[];
}

/**
 * Reads the channel records and gathering certificates `scan` holds, both
 * scans at once: a hibernating group's reload waits for one round trip to
 * RocksDB's threads instead of one per scan.
 */
export async function readStoredChannels(scan: (prefix: Uint8Array) => AsyncIterable<[Uint8Array, Uint8Array]>): Promise<StoredChannels> {
  const decodeAll = async <T>(prefix: number, decode: (bytes: Uint8Array) => T): Promise<T[]> => {
    const values: T[] = [];
    for await (const [, value] of scan(Uint8Array.of(prefix))) values.push(decode(value));
    return values;
  };
  const [records, uncertified] = await Promise.all([
    decodeAll(channelRecordPrefix, (bytes) => fromBinary(ChannelRecordSchema, bytes)),
    decodeAll(uncertifiedPrefix, (bytes) => fromBinary(CertificateSchema, bytes)),
  ]);
  return { records, uncertified };
}

/** The homeservers sponsoring a member of the channel, sorted. */
export function memberHomeservers(record: ChannelRecord): string[] {
  return [...new Set(record.members.map((m) => m.homeserverId))].sort();
}

/**
 * The homeservers that order the channel (the voters its group follows and
 * its certificates count): those sponsoring a member, and its witnesses.
 */
export function orderingHomeservers(record: ChannelRecord): string[] {
  return [...new Set([...record.members.map((m) => m.homeserverId), ...record.witnesses])].sort();
}

function witnessesChanged(record: ChannelRecord): string {
  return `a commit may not change the channel's witnesses [${record.witnesses.join(", ")}]`;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function toMember(member: MlsMember, role: MemberRole): Member {
  return create(MemberSchema, { deviceId: member.deviceId, homeserverId: member.homeserver, role, leafIndex: member.leafIndex });
}
