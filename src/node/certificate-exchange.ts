/**
 * Co-signing, off the log: a homeserver signs the commits it applies in one
 * turn of the event loop with one signature over their Merkle root, sends
 * that batch to the commits' other voters on the peer streams, and collects
 * theirs (CertificateCollector). A certificate is complete, and the waiting
 * client answered, as soon as a quorum has signed. The leader of the
 * channel's group then records complete certificates in its log, so that
 * every homeserver of the channel stores them (one that was down learns them
 * there): inside the channel's next command's entry, or in an entry of their
 * own after {@link recordDelayMs}, many per entry. Until then every
 * homeserver serves them from its collector. Own batches are sent again
 * while a certificate is incomplete here (and, rarely, while it stays
 * unrecorded), and complete certificates proposed again (by the leader after
 * {@link leaderReproposeMs}, by the others after {@link followerReproposeMs}),
 * while the log has not recorded them, so a lost notice or a leader change
 * delays a certificate but does not lose it.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { batchSigningMessage, quorumSize, rememberOwnBatchSignature } from "../channel/certificate.ts";
import { encodeCertificateRecords, type CertificateRecord } from "../channel/record-codec.ts";
import type { AcceptedCommit, ChannelResult } from "../channel/channel-state-machine.ts";
import { buildMerkleTree, maxMerkleLeaves, merkleLeafHash } from "../channel/merkle.ts";
import type { Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema, SignatureBatchSchema, type SignatureBatch } from "../gen/epochd/state/v1/channel_state_pb.ts";
import type { LogIndex } from "../raft/types.ts";
import type { AppliedCommit, BatchRefusal, CertificateCollector } from "./certificate-collector.ts";
import { encodeChannelCommand } from "../channel/channel-command.ts";
import type { SigningKey } from "./signing-key.ts";

/** The peer-stream notice topic of signature batches. */
export const signatureBatchTopic = "certificate-signatures";
/** How often own batches over certificates incomplete here are sent again, and pending certificates looked at. */
export const resendIntervalMs = 1000;
/** Own batches over certificates complete here but not yet recorded are sent again this often (past {@link recordDelayMs}). */
export const completeResendIntervalMs = 15_000;
/**
 * A complete certificate of a group this homeserver leads waits this long
 * for the channel's next command, whose entry it goes in (a certificate entry
 * of its own is a whole Raft round in the group: with one commit per entry,
 * about a third of the replication work of a commit), before it is proposed
 * in an entry of its own. Meanwhile every homeserver that completed it
 * serves it from memory; 3 s made most certificates of channels committing
 * every 3 to 10 s (1,000 channels at 100 to 300 commits/s) an entry of their own.
 */
export const recordDelayMs = 10_000;
/**
 * A complete certificate of a group this homeserver leads is proposed again
 * when the log has not recorded it this long after the last proposal. Under
 * load an entry takes well over a second from proposal to apply, and an
 * earlier 1 s made most certificate entries duplicates at concurrency 256
 * (60% of the items applied were already recorded), each a full Raft round.
 */
export const leaderReproposeMs = 15_000;
/**
 * A homeserver that does not lead the group forwards a complete certificate
 * to the leader only when the log has not recorded it this long after it
 * completed (or after its last forward): the leader records it itself, so
 * this is for a leader that changed or lost it.
 */
export const followerReproposeMs = 30_000;
/** Own batches kept for resending; the oldest are dropped beyond this. */
export const sentBatchesMax = 10_000;
/** Most certificates one log entry records. */
export const certificatesPerEntryMax = 256;
/**
 * Most bytes of certificates one command's entry takes along (a command may
 * be several MiB already; an entry must stay below the peer codec's
 * 8 MiB bound).
 */
export const alongsideBytesMax = 256 * 1024;

/** About the bytes a certificate's signatures take in a log entry (an upper bound, for {@link alongsideBytesMax}). */
function approximateCertificateBytes(certificate: Certificate): number {
  let bytes = 64 + certificate.channelId.length;
  for (const s of certificate.signatures) bytes += 130 + s.homeserverId.length + 34 * s.proof.length;
  return bytes;
}

interface SentBatch {
  readonly payload: Uint8Array;
  /** Every other voter of its commits: where it goes again while a certificate is incomplete here. */
  readonly peers: readonly string[];
  /**
   * When it went to leaders alone (see {@link CertificateExchange.leaderToSendTo}), the leader of each
   * commit (of `keys`, in order; undefined for one sent to every voter); cleared once it went to all.
   */
  narrowTo: readonly (string | undefined)[] | undefined;
  /** The peers it went to so far (all of `peers` once widened). */
  readonly sentTo: Set<string>;
  /** `channel/epoch` of every commit in the batch. */
  readonly keys: readonly string[];
  sentAtMs: number;
}

/** What the exchange needs from its homeserver. */
export interface CertificateExchangeOptions {
  readonly selfId: string;
  readonly key: SigningKey;
  readonly collector: CertificateCollector;
  /** Sends a notice to a peer homeserver (best effort). */
  readonly sendNotice: (to: string, topic: string, payload: Uint8Array) => void;
  /** Proposes an entry to a channel's group, forwarded to its leader when this homeserver is not it; false without a leader. */
  readonly propose: (channelId: string, data: Uint8Array) => boolean;
  /** Whether this homeserver leads the channel's group. */
  readonly isLeader: (channelId: string) => boolean;
  /** The leader of the channel's group as known here, if any (see {@link CertificateExchange.leaderToSendTo}). */
  readonly leaderOf?: (channelId: string) => string | undefined;
  /**
   * Whether a complete certificate must be recorded at once rather than
   * wait for the channel's next command: when the commit brought in a
   * homeserver that did not vote on it, which can learn the certificate from
   * the log only, and whose joining member waits for it.
   */
  readonly recordAtOnce?: (certificate: Certificate) => boolean;
  /** Told about a refused batch from a peer (for a log line or a counter). */
  readonly onRefused?: (from: string, reason: BatchRefusal | "malformed" | "forged-signer") => void;
}

const keyOf = (channelId: string, epoch: bigint) => `${channelId}/${epoch}`;

const noBytes = new Uint8Array(0);

/**
 * What the log records of a complete certificate: its signatures (apply
 * rebuilds the rest from the commit), each with the key it was checked with
 * here, which apply verifies it against (see CommitSignatures.signer_keys).
 */
function signaturesOf(certificate: Certificate, signingKeyOf: (homeserverId: string) => Uint8Array | undefined): CertificateRecord {
  const signerKeys = certificate.signatures.map((s) => signingKeyOf(s.homeserverId) ?? noBytes);
  return { channelId: certificate.channelId, epoch: certificate.epoch, signatures: certificate.signatures, signerKeys };
}

/** A complete certificate waiting for the log to record it. */
interface PendingRecord {
  readonly certificate: Certificate;
  /** When it is (next) proposed on its own. */
  dueAtMs: number;
  /** Proposed already (or left to the leader): riding along with a command would only repeat it. */
  proposed: boolean;
}

/** Marks `records` proposed, each due again at `dueAtMs` unless the log records it first. */
function markProposed(records: readonly PendingRecord[], dueAtMs: number): void {
  for (const record of records) {
    record.proposed = true;
    record.dueAtMs = dueAtMs;
  }
}

/** See the module comment. */
export class CertificateExchange {
  private toSign: AppliedCommit[] = [];
  /** Complete certificates the log has not recorded yet, by channel (to go in its commands' entries), then by key. */
  private readonly toRecord = new Map<string, Map<string, PendingRecord>>();
  private readonly sent: SentBatch[] = [];
  /** Own batches that went to leaders alone, by `channel/epoch` of their commits (see {@link answerWidened}). */
  private readonly narrowByKey = new Map<string, SentBatch>();
  private flushScheduled = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: CertificateExchangeOptions) {}

  start(): void {
    this.timer = setInterval(() => this.retry(), resendIntervalMs);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  /**
   * Collects (and, as a voter, co-signs) a commit the log accepted at
   * `index`. Called during apply, before the batch is written: acceptance
   * follows from the committed log alone (a restart replays the same
   * decision), so the signature need not wait for the local write, which
   * under load queues behind other groups' synced writes.
   */
  onCommitAccepted(result: Extract<ChannelResult, { kind: "commit-accepted" }>, index: LogIndex): void {
    const commit: AppliedCommit = { channelId: result.channelId, epoch: result.epoch, commitHash: result.commitHash, logIndex: BigInt(index), voters: result.voters };
    this.options.collector.applied(commit);
    // Signed when stored, over this very statement: the collector counted that signature just now.
    if (this.options.collector.hasSignatureOf(keyOf(commit.channelId, commit.epoch), this.options.selfId)) return;
    if (result.voters.includes(this.options.selfId)) {
      this.toSign.push(commit);
      this.schedule();
    }
  }

  /**
   * Co-signs a commit before it commits: its entry is stored here in its own
   * term, from that term's leader, right after everything applied here, and
   * `commit` is what applying it will accept (ChannelGroupMachine.storedNext).
   * A signature made so counts toward the certificate like the
   * acknowledgement that left with the store counts toward the commit: a
   * quorum of them means a quorum stored the entry in its term, which Raft
   * then commits. The leader, which usually signed its own store before the
   * followers' answers came, then has a quorum when it applies the commit,
   * and answers the client without waiting for them to learn the commit,
   * apply and sign (docs/ARCHITECTURE.md, "Signing at store time"). The
   * driver offers each stored entry once, so nothing here repeats it.
   */
  onCommitStored(commit: AcceptedCommit): void {
    if (!commit.voters.includes(this.options.selfId)) return;
    // A public commit's preview may end after its apply, which signed it already.
    if (this.options.collector.isApplied(keyOf(commit.channelId, commit.epoch))) return;
    this.toSign.push(commit);
    this.schedule();
  }

  /** Reacts to an applied channel command (called in log order, after the apply is written): certificates the log recorded. */
  onChannelResult(result: ChannelResult): void {
    if (!result.ok || result.kind !== "signatures") return;
    for (const { channelId, epoch } of result.certified) {
      this.options.collector.forget(channelId, epoch);
      const pending = this.toRecord.get(channelId);
      if (pending?.delete(keyOf(channelId, epoch)) === true && pending.size === 0) this.toRecord.delete(channelId);
    }
  }

  /**
   * After a restart: collects (and, as a voter, signs again) the commits whose
   * certificates the log has not completed, since what was collected in
   * memory before is gone. Peers resend their batches until the log records them.
   */
  resume(gathering: Iterable<Certificate>): void {
    for (const c of gathering) {
      const commit: AppliedCommit = { channelId: c.channelId, epoch: c.epoch, commitHash: c.commitHash, logIndex: c.logIndex, voters: c.voters };
      this.options.collector.applied(commit);
      if (c.voters.includes(this.options.selfId)) this.toSign.push(commit);
    }
    if (this.toSign.length > 0) this.schedule();
  }

  /**
   * A certificate the collector completed: queued for the log. The leader
   * records it in the channel's next command's entry or after {@link recordDelayMs};
   * the others leave it to the leader, which completes it too, and forward it
   * only if it is still unrecorded after {@link followerReproposeMs}.
   */
  onComplete(certificate: Certificate): void {
    const { channelId, epoch } = certificate;
    const now = Date.now();
    const leader = this.options.isLeader(channelId);
    const record = { certificate, dueAtMs: now + (leader ? recordDelayMs : followerReproposeMs), proposed: !leader };
    let pending = this.toRecord.get(channelId);
    if (pending === undefined) this.toRecord.set(channelId, (pending = new Map()));
    pending.set(keyOf(channelId, epoch), record);
    if (leader && this.options.recordAtOnce?.(certificate) === true) this.propose([record], now);
  }

  /**
   * The channel's complete certificates not proposed yet, encoded as the
   * `certificates` field of a ChannelCommand, to append to the command this
   * homeserver, the channel's leader, is about to put in its log (its own
   * or one a follower forwarded): both are then one entry. Empty when there
   * are none. Each is due again after {@link leaderReproposeMs} if the log
   * has not recorded it by then.
   */
  takeAlongside(channelId: string): Uint8Array {
    const pending = this.toRecord.get(channelId);
    if (pending === undefined) return noBytes;
    const due: PendingRecord[] = [];
    let bytes = 0;
    for (const record of pending.values()) {
      if (record.proposed) continue;
      bytes += approximateCertificateBytes(record.certificate);
      if (due.length === certificatesPerEntryMax || bytes > alongsideBytesMax) break;
      due.push(record);
    }
    if (due.length === 0) return noBytes;
    markProposed(due, Date.now() + leaderReproposeMs);
    return encodeCertificateRecords(due.map(({ certificate }) => signaturesOf(certificate, this.options.collector.signingKeyOf)));
  }

  /** Complete certificates waiting for the log to record them (for metrics and tests). */
  pendingCount(): number {
    let count = 0;
    for (const pending of this.toRecord.values()) count += pending.size;
    return count;
  }

  /** A signature batch from peer `from`. Malformed or forged batches are refused and change nothing. */
  onNotice(from: string, payload: Uint8Array): void {
    let batch: SignatureBatch;
    try {
      batch = fromBinary(SignatureBatchSchema, payload);
    } catch {
      this.options.onRefused?.(from, "malformed");
      return;
    }
    if (batch.homeserverId !== from) {
      this.options.onRefused?.(from, "forged-signer");
      return;
    }
    const refusal = this.options.collector.addBatch(batch);
    if (refusal !== undefined) this.options.onRefused?.(from, refusal);
    this.answerWidened(from, batch);
  }

  /**
   * Signs now what waits to be signed, instead of at the end of this turn of
   * the event loop: the Ready loop calls it (RaftDriverOptions.afterStoredNext)
   * before a round's acknowledgements leave, so that a follower's signatures
   * on the commits it just stored reach the leader with them.
   */
  signNow(): void {
    if (this.toSign.length > 0) this.signApplied();
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.signApplied();
    });
  }

  /** Signs everything applied since the last turn with one signature, counts it and sends it to the peers. */
  private signApplied(): void {
    while (this.toSign.length > 0) {
      const commits = this.toSign.splice(0, maxMerkleLeaves);
      const collector = this.options.collector;
      const statements = commits.map((c) => collector.statementOf(c));
      const tree = buildMerkleTree(statements.map(merkleLeafHash));
      const signature = this.options.key.sign(batchSigningMessage(tree.root));
      rememberOwnBatchSignature(this.options.key.publicKeyRaw, tree.root, signature);
      const batch = create(SignatureBatchSchema, {
        homeserverId: this.options.selfId,
        signature,
        statements: commits.map((c) => ({ clusterId: collector.clusterId, channelId: c.channelId, epoch: c.epoch, commitHash: c.commitHash, logIndex: c.logIndex })),
      });
      collector.addOwnBatch(batch, statements, tree, this.options.key.publicKeyRaw);
      const peers = [...new Set(commits.flatMap((c) => c.voters))].filter((id) => id !== this.options.selfId);
      const leaders = commits.map((c) => this.leaderToSendTo(c));
      const firstPeers = new Set<string>();
      commits.forEach((c, i) => {
        const leader = leaders[i];
        if (leader !== undefined) firstPeers.add(leader);
        else for (const voter of c.voters) if (voter !== this.options.selfId) firstPeers.add(voter);
      });
      const narrowTo = firstPeers.size < peers.length ? leaders : undefined;
      const keys = commits.map((c) => keyOf(c.channelId, c.epoch));
      const sent: SentBatch = { payload: toBinary(SignatureBatchSchema, batch), peers, narrowTo, sentTo: firstPeers, keys, sentAtMs: Date.now() };
      for (const peer of firstPeers) this.options.sendNotice(peer, signatureBatchTopic, sent.payload);
      if (narrowTo !== undefined) for (const key of keys) this.narrowByKey.set(key, sent);
      if (peers.length > 0) this.sent.push(sent);
      if (this.sent.length > sentBatchesMax) this.unindex(this.sent.shift()!);
    }
  }

  /** Drops `sent` from {@link narrowByKey}: it went to every peer, or is done with. */
  private unindex(sent: SentBatch): void {
    if (sent.narrowTo === undefined) return;
    sent.narrowTo = undefined;
    for (const key of sent.keys) if (this.narrowByKey.get(key) === sent) this.narrowByKey.delete(key);
  }

  /**
   * A batch from `from` over commits whose own batch went to leaders alone,
   * and not to `from`: `from` sends to this homeserver only when it widened
   * (it has not counted its leader's signature: a notice from the leader to it
   * was lost, or it took another homeserver for the leader), so it may lack
   * this one's too. It gets it now, once, rather than at the 15 s resend.
   */
  private answerWidened(from: string, batch: SignatureBatch): void {
    if (this.narrowByKey.size === 0) return;
    const owed = new Set<SentBatch>();
    for (const s of batch.statements) {
      const sent = this.narrowByKey.get(keyOf(s.channelId, s.epoch));
      if (sent !== undefined && !sent.sentTo.has(from) && sent.peers.includes(from)) owed.add(sent);
    }
    for (const sent of owed) {
      this.options.sendNotice(from, signatureBatchTopic, sent.payload);
      sent.sentTo.add(from);
      if (sent.sentTo.size === sent.peers.length) this.unindex(sent);
    }
  }

  /**
   * Whom a batch goes to first for `commit`: its group's leader alone, or
   * undefined for every other voter. A follower of a group of at most three voters
   * sends it to the group's leader alone: its own signature and the
   * leader's, which the leader sends to every voter, are a quorum, so every
   * voter completes the certificate without the followers' batches to each
   * other (a third of the batches, and of the checks of their signatures,
   * per commit). Every other voter gets it otherwise, and a second after a
   * narrow send if one of its certificates is still incomplete here or was
   * completed without the leader's signature: a leader lost before it
   * signed leaves the followers to each other's batches.
   */
  private leaderToSendTo(commit: AppliedCommit): string | undefined {
    const leader = this.options.leaderOf?.(commit.channelId);
    const alone = leader !== undefined && leader !== this.options.selfId && commit.voters.includes(leader) && quorumSize(commit.voters.length) <= 2;
    return alone ? leader : undefined;
  }

  /**
   * Proposes `records` (to the channel's leader, forwarded when this
   * homeserver is not it), one entry per channel and at most
   * {@link certificatesPerEntryMax} per entry; each is due again after
   * {@link leaderReproposeMs} or {@link followerReproposeMs} if the log has
   * not recorded it by then.
   */
  private propose(records: Iterable<PendingRecord>, now: number): void {
    const byChannel = new Map<string, PendingRecord[]>();
    for (const record of records) {
      const channelId = record.certificate.channelId;
      const list = byChannel.get(channelId) ?? [];
      list.push(record);
      byChannel.set(channelId, list);
    }
    for (const [channelId, due] of byChannel) {
      const againMs = this.options.isLeader(channelId) ? leaderReproposeMs : followerReproposeMs;
      for (let i = 0; i < due.length; i += certificatesPerEntryMax) {
        const chunk = due.slice(i, i + certificatesPerEntryMax);
        const command = create(ChannelCommandSchema, { command: { case: "signatures", value: { items: chunk.map(({ certificate }) => signaturesOf(certificate, this.options.collector.signingKeyOf)) } } });
        if (!this.options.propose(channelId, encodeChannelCommand(toBinary(ChannelCommandSchema, command)))) break;
        markProposed(chunk, now + againMs);
      }
    }
  }

  /**
   * Every second: checks again peers' batches refused for want of their
   * signer's current key, sends own batches again while a certificate of
   * theirs is incomplete here (every {@link completeResendIntervalMs} while
   * only unrecorded: a peer may still lack it), and proposes the pending
   * certificates that are due.
   */
  private retry(): void {
    const now = Date.now();
    const collector = this.options.collector;
    collector.recheckRefused();
    for (let i = this.sent.length - 1; i >= 0; i--) {
      const sent = this.sent[i]!;
      const open = sent.keys.filter((key) => collector.isCollecting(key));
      if (open.length === 0) {
        this.unindex(this.sent.splice(i, 1)[0]!);
        continue;
      }
      // Sent to a leader alone: the others need it if this homeserver has not counted that leader's signature.
      const narrowTo = sent.narrowTo;
      const withoutLeader = narrowTo?.some((leader, at) => leader !== undefined && collector.isCollecting(sent.keys[at]!) && !collector.hasSignatureOf(sent.keys[at]!, leader)) === true;
      const intervalMs = withoutLeader || open.some((key) => !collector.isComplete(key)) ? resendIntervalMs : completeResendIntervalMs;
      if (now - sent.sentAtMs < intervalMs) continue;
      this.unindex(sent);
      sent.sentAtMs = now;
      for (const peer of sent.peers) this.options.sendNotice(peer, signatureBatchTopic, sent.payload);
      for (const peer of sent.peers) sent.sentTo.add(peer);
    }
    const due: PendingRecord[] = [];
    for (const pending of this.toRecord.values()) for (const record of pending.values()) if (record.dueAtMs <= now) due.push(record);
    this.propose(due, now);
  }
}
