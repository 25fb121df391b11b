/**
 * Channel: one device's handle on one channel. It owns the device's ts-mls state for the channel and moves
 * it only through commits that carry a valid certificate (P3): its own once the cluster accepted them,
 * others' as it reads them from the channel's event log or receives a winner with a conflict.
 *
 * Conflicts: a commit is built from the current state, which is KEPT (ts-mls states are immutable) until
 * the cluster answers. On a lost race the winner is processed from that kept state, the intent is rebuilt
 * on the new epoch and resubmitted, up to commitAttemptsMax times. The secrets a commit consumed are
 * zeroed only after the cluster accepted it (or after the winner was processed instead).
 *
 * Calls on one Channel are serialized; separate Channels (devices) run concurrently.
 */
import { randomBytes } from "node:crypto";
import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  createGroup,
  createGroupInfoWithExternalPubAndRatchetTree,
  emptyPskIndex,
  encodeMlsMessage,
  processMessage,
  zeroOutUint8Array,
  type ClientState,
  type Proposal,
} from "ts-mls";
import { EventKind, HandshakeMode, type Certificate, type ChannelEvent, type ListEventsResponse } from "../gen/epochd/channel/v1/channel_pb.ts";
import { verifyUnderDirectory } from "./certificate.ts";
import { commitRemovesOwnLeaf } from "./commit-effects.ts";
import { buildProposals, checkKeyPackages, committableProposals, type CommitIntent } from "./commit-intent.ts";
import { sdkClientConfig, type Device } from "./device.ts";
import { joinFromWelcome } from "./welcome-join.ts";
import { witnessesExtension, witnessesOf } from "../mls/witnesses.ts";
import { decodeKeyPackageMessage, decodeWelcomeMessage, decodeWholeMessage, encodeGroupInfoMessage, encodeWelcomeMessage, sha256, toHex, treeHomeservers, treeMembers, type TreeMember } from "./mls-codec.ts";
import { CertificateError, CommitRetriesExhaustedError, ForkError, NotAMemberError, type ChannelTransport, type SubmitOutcome } from "./transport.ts";

/** Tunables of a Channel handle. */
export interface ChannelOptions {
  /** Commit submissions per intent before giving up (each lost race costs one). */
  readonly commitAttemptsMax?: number;
  /** Events asked for per ListEvents page. */
  readonly eventsPageLimit?: number;
  /** ListEvents pages read per sync at most. */
  readonly syncPagesMax?: number;
  /** How long to wait for a commit's certificate still gathering signatures before leaving it for later. */
  readonly certificateWaitMs?: number;
}

/** Something sync() received, in channel order. */
export type Received =
  | { readonly kind: "message"; readonly sequence: bigint; readonly epoch: bigint; readonly data: Uint8Array }
  | { readonly kind: "commit"; readonly sequence: bigint; readonly epoch: bigint; readonly members: readonly string[] }
  | { readonly kind: "skipped"; readonly sequence: bigint; readonly epoch: bigint; readonly reason: string }
  /** Sync stopped before this commit: its certificate has no quorum yet. Nothing after it was read. */
  | { readonly kind: "pending"; readonly sequence: bigint; readonly epoch: bigint; readonly reason: string };

/** The result of addMembers / removeMembers / updateKeys. */
export interface CommitOutcome {
  /** The channel epoch after the call. */
  readonly epoch: bigint;
  /** Submissions made (0 when another member's commit already achieved the intent). */
  readonly attempts: number;
  /** The certificate of this device's accepted commit; undefined when none was needed. */
  readonly certificate: Certificate | undefined;
  /** The MLSMessage-framed Welcome for added devices, when this device's commit added some. */
  readonly welcome: Uint8Array | undefined;
}

/** A commit built on a kept base state, not yet accepted. */
interface PendingCommit {
  readonly base: ClientState;
  readonly newState: ClientState;
  readonly commitBytes: Uint8Array;
  readonly commitHash: Uint8Array;
  readonly nextGroupInfo: Uint8Array;
  readonly welcome: Uint8Array | undefined;
  /** Secrets of `base` the commit consumed: zeroed only once the base state is no longer needed. */
  readonly consumed: Uint8Array[];
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** send() on a device whose own removal is proposed and not yet committed: it is leaving and cannot send. */
export class LeavingError extends Error {
  constructor(channelId: string) {
    super(`this device's removal from ${channelId} is pending; it cannot send`);
    this.name = "LeavingError";
  }
}

/** A commit's certificate did not reach a quorum within certificateWaitMs; nothing was applied. */
export class CertificatePendingError extends CertificateError {
  constructor(message: string) {
    super(message);
    this.name = "CertificatePendingError";
  }
}

function zeroAll(secrets: readonly Uint8Array[]): void {
  for (const secret of secrets) zeroOutUint8Array(secret);
}

/** One device's handle on one channel. */
export class Channel {
  private state: ClientState;
  /** The sequence of the last channel event processed. */
  private cursor: bigint;
  /** Commit hash (hex) of every epoch this handle saw end, to detect a history that changed under it. */
  private readonly endedEpochs = new Map<bigint, string>();
  /** Sequences of own application messages (this device cannot decrypt them). */
  private readonly ownMessages = new Set<bigint>();
  /** Received while catching up inside a commit retry; handed out by the next sync(). */
  private inbox: Received[] = [];
  private removed = false;
  /**
   * Own commits (by hex hash) whose submission ended without an answer (the transport gave up): the
   * cluster may still have accepted one. If a conflict or the event log later names one as the commit of
   * its base epoch, its state is adopted. Cleared whenever the state moves on.
   */
  private readonly unsettled = new Map<string, PendingCommit>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly commitAttemptsMax: number;
  private readonly eventsPageLimit: number;
  private readonly syncPagesMax: number;
  private readonly certificateWaitMs: number;

  private constructor(
    readonly device: Device,
    private readonly transport: ChannelTransport,
    readonly channelId: string,
    state: ClientState,
    cursor: bigint,
    /** The first epoch this device was a member of: older events are not for it. */
    readonly joinedAtEpoch: bigint,
    options: ChannelOptions,
  ) {
    this.state = state;
    this.cursor = cursor;
    this.commitAttemptsMax = options.commitAttemptsMax ?? 8;
    this.eventsPageLimit = options.eventsPageLimit ?? 256;
    this.syncPagesMax = options.syncPagesMax ?? 10_000;
    this.certificateWaitMs = options.certificateWaitMs ?? 5_000;
  }

  /**
   * Creates a channel with this device as its only member (and owner), at epoch 0. `witnesses` names
   * homeservers that vote in its group without sponsoring a member (fixed for the channel's life; see
   * src/mls/witnesses.ts): a channel on two homeservers with a third as witness survives losing one.
   */
  static async create(device: Device, transport: ChannelTransport, channelId: string, options: ChannelOptions & { contentType?: string; witnesses?: readonly string[] } = {}): Promise<Channel> {
    const own = await device.newKeyPackage();
    await device.forgetKeyPackage(own.publicPackage);
    const extensions = (options.witnesses ?? []).length > 0 ? [witnessesExtension(options.witnesses!)] : [];
    const state = await createGroup(new Uint8Array(randomBytes(16)), own.publicPackage, own.privatePackage, extensions, device.impl, sdkClientConfig);
    const groupInfo = await createGroupInfoWithExternalPubAndRatchetTree(state, [], device.impl);
    const channelState = await transport.createChannel({
      channelId,
      groupInfo: encodeGroupInfoMessage(groupInfo),
      contentType: options.contentType ?? "text/plain",
      handshakeMode: HandshakeMode.PUBLIC,
    });
    return new Channel(device, transport, channelId, state, channelState.lastSequence, state.groupContext.epoch, options);
  }

  /**
   * Joins a channel from a Welcome addressed to one of `device`'s KeyPackages. Before trusting the
   * Welcome, checks that the cluster certified the commit that made it (the commit ending the epoch before
   * the joined one carries exactly this Welcome and a valid certificate). A joiner has no earlier view of
   * the group, so it takes that certificate's voters as stated. The join itself is joinFromWelcome (ts-mls'
   * joinGroup, with a workaround for its 1.6 unmerged_leaves bug).
   */
  static async join(device: Device, transport: ChannelTransport, channelId: string, welcomeBytes: Uint8Array, options: ChannelOptions = {}): Promise<Channel> {
    const welcome = decodeWelcomeMessage(welcomeBytes);
    const own = device.takeKeyPackageFor(welcome);
    if (own === undefined) throw new Error(`the Welcome is not addressed to any KeyPackage of ${device.id}`);
    const state = await joinFromWelcome(welcome, own.publicPackage, own.privatePackage, device.impl, sdkClientConfig);
    const epoch = state.groupContext.epoch;
    if (epoch === 0n) throw new CertificateError("a Welcome into epoch 0 cannot come from a certified commit");
    const committed = await transport.getCommit(channelId, epoch - 1n);
    if (committed === undefined || committed.certificate === undefined) throw new CertificateError(`no certified commit ended epoch ${epoch - 1n} of ${channelId}`);
    if (!bytesEqual(committed.welcome, welcomeBytes)) throw new CertificateError(`the Welcome is not the one certified for epoch ${epoch - 1n}`);
    const commitHash = sha256(committed.commit);
    const verdict = await verifyUnderDirectory(committed.certificate, { channelId, epoch: epoch - 1n, commitHash }, committed.certificate.voters, (refresh) => transport.directory(refresh));
    if (!verdict.ok) throw new CertificateError(`join: ${verdict.reason}`);
    const channel = new Channel(device, transport, channelId, state, 0n, epoch, options);
    channel.endedEpochs.set(epoch - 1n, toHex(commitHash));
    return channel;
  }

  /** The device's current epoch in this channel. */
  epoch(): bigint {
    return this.state.groupContext.epoch;
  }

  /** The current epoch's authenticator: equal on every member iff they share the epoch's secrets. */
  epochAuthenticator(): Uint8Array {
    return this.state.keySchedule.epochAuthenticator.slice();
  }

  /** The members of the current epoch, from the device's own tree. */
  members(): TreeMember[] {
    return treeMembers(this.state.ratchetTree);
  }

  /** False once a commit removed this device. */
  isMember(): boolean {
    return !this.removed;
  }

  /** Adds the devices of MLSMessage-framed KeyPackages: one commit plus a Welcome for them. */
  addMembers(keyPackages: readonly Uint8Array[]): Promise<CommitOutcome> {
    return this.exclusive(async () => {
      const decoded = keyPackages.map(decodeKeyPackageMessage);
      await checkKeyPackages(decoded, this.device.impl);
      return this.commitWithRetry({ kind: "add", keyPackages: decoded });
    });
  }

  /** Removes every leaf of the given devices. */
  removeMembers(deviceIds: readonly string[]): Promise<CommitOutcome> {
    return this.exclusive(() => this.commitWithRetry({ kind: "remove", deviceIds }));
  }

  /** Rotates this device's keys: an empty commit carrying a fresh UpdatePath. */
  updateKeys(): Promise<CommitOutcome> {
    return this.exclusive(() => this.commitWithRetry({ kind: "update" }));
  }

  /**
   * Encrypts and sends an application message in the current epoch; returns its channel sequence.
   * ts-mls refuses to encrypt while the state holds received, uncommitted proposals ("Cannot send application
   * message with unapplied proposals"), so this device first commits them (one commit, retried like any
   * other); a device whose own removal is pending cannot send (LeavingError).
   */
  send(data: Uint8Array): Promise<bigint> {
    return this.exclusive(async () => {
      this.assertMember();
      if (Object.keys(this.state.unappliedProposals).length > 0) await this.commitWithRetry({ kind: "pending" });
      this.assertMember();
      if (Object.keys(this.state.unappliedProposals).length > 0) throw new LeavingError(this.channelId);
      const epoch = this.epoch();
      const made = await createApplicationMessage(this.state, data, this.device.impl);
      this.state = made.newState;
      zeroAll(made.consumed);
      const message = encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage: made.privateMessage });
      const sequence = await this.transport.sendMessage({ channelId: this.channelId, epoch, message });
      this.ownMessages.add(sequence);
      return sequence;
    });
  }

  /**
   * Reads the channel's events after the cursor: verifies and applies every commit (refusing any without a
   * valid certificate: CertificateError, the state stays where it was), decrypts messages, and returns what
   * it received (including what arrived while a commit was being retried).
   */
  sync(): Promise<Received[]> {
    return this.exclusive(async () => {
      await this.pullEvents();
      const received = this.inbox;
      this.inbox = [];
      return received;
    });
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    // The cluster answers a channel's calls only for its members (NotAMemberError from the transport):
    // a commit removed this device, which its inbox holds; the channel is left for good.
    const guarded = () =>
      work().catch((error: unknown) => {
        if (error instanceof NotAMemberError) this.removed = true;
        throw error;
      });
    const run = this.queue.then(guarded, guarded);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private assertMember(): void {
    if (this.removed) throw new NotAMemberError(this.channelId);
  }

  private async commitWithRetry(intent: CommitIntent): Promise<CommitOutcome> {
    for (let attempt = 1; attempt <= this.commitAttemptsMax; attempt++) {
      // Read what the channel holds for this epoch (messages, proposals) before leaving it: ts-mls keeps
      // the keys of only a few past epochs, and a commit must carry the epoch's pending proposals.
      if (attempt === 1) await this.pullEvents();
      this.assertMember();
      const base = this.state;
      const built = buildProposals(intent, base, base.privatePath.leafIndex);
      if (built.kind === "satisfied") return { epoch: this.epoch(), attempts: attempt - 1, certificate: undefined, welcome: undefined };
      const pending = await this.prepareCommit(base, built.proposals);
      this.unsettled.set(toHex(pending.commitHash), pending);
      const outcome = await this.transport.submitCommit({
        channelId: this.channelId,
        epoch: base.groupContext.epoch,
        commit: pending.commitBytes,
        nextGroupInfo: pending.nextGroupInfo,
        welcome: pending.welcome ?? new Uint8Array(),
      });
      this.unsettled.delete(toHex(pending.commitHash));
      const certificate = await this.settle(outcome, pending);
      if (certificate !== undefined) return { epoch: this.epoch(), attempts: attempt, certificate, welcome: pending.welcome };
      // Lost: read the log, which holds this epoch's proposals and messages and then the winner, in order.
      await this.pullEvents();
      // The losing commit's secrets were taken from the base state: zero them once it is left behind.
      if (this.epoch() > base.groupContext.epoch || this.removed) zeroAll(pending.consumed);
    }
    throw new CommitRetriesExhaustedError(this.commitAttemptsMax);
  }

  private async prepareCommit(base: ClientState, proposals: Proposal[]): Promise<PendingCommit> {
    const impl = this.device.impl;
    // ts-mls commits every unapplied proposal by reference: hand it only those this device may commit.
    const committing = { ...base, unappliedProposals: committableProposals(base, base.privatePath.leafIndex) };
    const made = await createCommit({ state: committing, cipherSuite: impl }, { extraProposals: proposals, wireAsPublicMessage: true, ratchetTreeExtension: true });
    const nextGroupInfo = encodeGroupInfoMessage(await createGroupInfoWithExternalPubAndRatchetTree(made.newState, [], impl));
    const commitBytes = encodeMlsMessage(made.commit);
    return {
      base,
      newState: made.newState,
      commitBytes,
      commitHash: sha256(commitBytes),
      nextGroupInfo,
      welcome: made.welcome === undefined ? undefined : encodeWelcomeMessage(made.welcome),
      consumed: made.consumed,
    };
  }

  /**
   * Settles a submission: returns the certificate when this commit is THE commit of its epoch (accepted,
   * or reported as the winner of a resubmission) and adopts its state; otherwise processes the winner from
   * the kept base state when the conflict carries it, and returns undefined.
   */
  private async settle(outcome: SubmitOutcome, pending: PendingCommit): Promise<Certificate | undefined> {
    const baseEpoch = pending.base.groupContext.epoch;
    let certificate: Certificate | undefined;
    if (outcome.kind === "accepted") certificate = outcome.certificate;
    else {
      const winner = outcome.conflict.winner;
      if (winner === undefined || winner.epoch !== baseEpoch) return undefined;
      // Another member's commit, or an earlier own commit whose answer was lost: the caller reads it from
      // the log, after the proposals and messages that came before it (applying it from the answer alone
      // would skip those).
      if (!bytesEqual(sha256(winner.commit), pending.commitHash)) return undefined;
      certificate = winner.certificate;
    }
    await this.requireCertificate(certificate, baseEpoch, pending.commitHash, pending.base);
    this.state = pending.newState;
    this.endedEpochs.set(baseEpoch, toHex(pending.commitHash));
    zeroAll(pending.consumed);
    return certificate;
  }

  /**
   * Returns a certificate that certifies `commitHash` as the commit ending `epoch` of `base`, or throws
   * CertificateError. A certificate still gathering signatures is fetched again (GetCommit) until it has
   * a quorum or certificateWaitMs passed (then CertificatePendingError: nothing was applied, try later).
   */
  private async requireCertificate(certificate: Certificate | undefined, epoch: bigint, commitHash: Uint8Array, base: ClientState): Promise<Certificate> {
    const voters = channelVoters(base);
    const deadline = Date.now() + this.certificateWaitMs;
    let current = certificate;
    for (let poll = 0; ; poll++) {
      if (current === undefined) throw new CertificateError(`commit ending epoch ${epoch} came without a certificate`);
      const verdict = await verifyUnderDirectory(current, { channelId: this.channelId, epoch, commitHash }, voters, (refresh) => this.transport.directory(refresh));
      if (verdict.ok) return current;
      if (verdict.incomplete !== true) throw new CertificateError(`commit ending epoch ${epoch}: ${verdict.reason}`);
      if (Date.now() >= deadline) throw new CertificatePendingError(`commit ending epoch ${epoch}: ${verdict.reason} after ${this.certificateWaitMs} ms`);
      await sleep(Math.min(200, 10 * 2 ** Math.min(poll, 5)));
      const fetched = await this.transport.getCommit(this.channelId, epoch);
      if (fetched !== undefined && !bytesEqual(sha256(fetched.commit), commitHash)) throw new ForkError(`the cluster now names another commit for epoch ${epoch}`);
      current = fetched?.certificate ?? current;
    }
  }

  /** Verifies another member's commit for the current epoch, then processes it with ts-mls. */
  private async applyCertifiedCommit(commitBytes: Uint8Array, certificate: Certificate | undefined): Promise<void> {
    const base = this.state;
    const epoch = base.groupContext.epoch;
    const commitHash = sha256(commitBytes);
    await this.requireCertificate(certificate, epoch, commitHash, base);
    const own = this.unsettled.get(toHex(commitHash));
    this.unsettled.clear();
    if (own !== undefined && own.base === base) {
      // This device's own commit, accepted although its submission ended without an answer.
      this.state = own.newState;
      this.endedEpochs.set(epoch, toHex(commitHash));
      zeroAll(own.consumed);
      return;
    }
    const message = decodeWholeMessage(commitBytes, "commit");
    if (message.wireformat !== "mls_public_message" && message.wireformat !== "mls_private_message") throw new Error(`commit has wire format ${message.wireformat}`);
    if (commitRemovesOwnLeaf(message, base)) {
      // Certified, so it is the commit of this epoch; ts-mls 1.6 may not see the removal (commit-effects.ts).
      this.endedEpochs.set(epoch, toHex(commitHash));
      this.removed = true;
      this.state = { ...base, unappliedProposals: {}, groupActiveState: { kind: "removedFromGroup" } };
      return;
    }
    const result = await processMessage(message, base, emptyPskIndex, acceptAll, this.device.impl);
    if (result.kind !== "newState") throw new Error(`certified commit for epoch ${epoch} is not a commit`);
    this.endedEpochs.set(epoch, toHex(commitHash));
    // A removed member cannot derive the next epoch: ts-mls keeps its epoch and marks it removed.
    if (result.newState.groupActiveState.kind !== "active") this.removed = true;
    else if (result.newState.groupContext.epoch !== epoch + 1n) throw new Error(`certified commit for epoch ${epoch} did not advance the epoch`);
    this.state = result.newState;
    zeroAll(result.consumed);
  }

  /** Reads and processes events after the cursor into the inbox, page by page (bounded). */
  private async pullEvents(): Promise<void> {
    for (let page = 0; page < this.syncPagesMax; page++) {
      let response: ListEventsResponse;
      try {
        response = await this.transport.listEvents({ channelId: this.channelId, afterSequence: this.cursor, limit: this.eventsPageLimit });
      } catch (error) {
        // The cluster no longer lets this device read the channel: a commit removed it. Reading is not
        // an error; the next send or commit is (NotAMemberError from assertMember).
        if (!(error instanceof NotAMemberError)) throw error;
        this.removed = true;
        return;
      }
      for (const event of response.events) {
        if (event.sequence <= this.cursor) continue;
        try {
          await this.applyEvent(event);
        } catch (error) {
          // A commit still gathering signatures: stop before it; the next sync continues from here.
          if (error instanceof CertificatePendingError) {
            this.inbox.push({ kind: "pending", sequence: event.sequence, epoch: event.epoch, reason: error.message });
            return;
          }
          throw error;
        }
        this.cursor = event.sequence;
      }
      if (response.events.length === 0 || this.cursor >= response.lastSequence) return;
    }
  }

  private async applyEvent(event: ChannelEvent): Promise<void> {
    if (this.removed) return;
    if (event.kind === EventKind.COMMIT) return this.applyCommitEvent(event);
    if (event.kind === EventKind.MESSAGE) return this.applyMessageEvent(event);
    if (event.kind === EventKind.PROPOSAL && event.epoch === this.epoch()) {
      const message = decodeWholeMessage(event.payload, "proposal");
      if (message.wireformat !== "mls_public_message" && message.wireformat !== "mls_private_message") return;
      try {
        const result = await processMessage(message, this.state, emptyPskIndex, acceptAll, this.device.impl);
        this.state = result.newState;
      } catch (error) {
        this.inbox.push({ kind: "skipped", sequence: event.sequence, epoch: event.epoch, reason: `proposal: ${(error as Error).message}` });
      }
    }
  }

  private async applyCommitEvent(event: ChannelEvent): Promise<void> {
    const epoch = this.epoch();
    if (event.epoch < epoch) {
      const known = this.endedEpochs.get(event.epoch);
      const hash = toHex(sha256(event.payload));
      if (known !== undefined && known !== hash) throw new ForkError(`epoch ${event.epoch} ended with commit ${known} here, the cluster now says ${hash}`);
      return;
    }
    if (event.epoch > epoch) throw new ForkError(`event ${event.sequence} is a commit for epoch ${event.epoch}, but this device is at ${epoch} (history has a gap)`);
    await this.applyCertifiedCommit(event.payload, event.certificate);
    this.inbox.push({ kind: "commit", sequence: event.sequence, epoch: this.epoch(), members: this.members().map((m) => m.deviceId) });
  }

  private async applyMessageEvent(event: ChannelEvent): Promise<void> {
    if (this.ownMessages.delete(event.sequence) || event.epoch < this.joinedAtEpoch) return;
    try {
      const message = decodeWholeMessage(event.payload, "message");
      if (message.wireformat !== "mls_private_message") throw new Error(`wire format ${message.wireformat}`);
      const result = await processMessage(message, this.state, emptyPskIndex, acceptAll, this.device.impl);
      if (result.kind !== "applicationMessage") throw new Error("not an application message");
      this.state = result.newState;
      zeroAll(result.consumed);
      this.inbox.push({ kind: "message", sequence: event.sequence, epoch: event.epoch, data: result.message });
    } catch (error) {
      this.inbox.push({ kind: "skipped", sequence: event.sequence, epoch: event.epoch, reason: (error as Error).message });
    }
  }
}

/**
 * The homeservers whose certificate the client accepts for a commit on `base`: those sponsoring a member
 * of its own tree, and the witnesses its own GroupContext names. A server cannot add either.
 */
export function channelVoters(base: ClientState): string[] {
  const witnesses = witnessesOf(base.groupContext.extensions);
  if (!Array.isArray(witnesses)) throw new CertificateError(`the group's ${witnesses.reason}`);
  return [...new Set([...treeHomeservers(base.ratchetTree), ...witnesses])].sort();
}
