/**
 * Co-signing, off the log: a homeserver signs the commits it applies in one
 * turn of the event loop with one signature over their Merkle root, sends
 * that batch to the commits' other voters on the peer streams, and collects
 * theirs (CertificateCollector). A certificate is complete, and the waiting
 * client answered, as soon as a quorum has signed. The leader of the
 * channel's group then records complete certificates in its log, many per
 * entry, so that every homeserver of the channel
 * stores them (one that was down learns them there). Own batches are sent
 * again, and complete certificates proposed again (by the leader after
 * {@link leaderReproposeMs}, by the others after {@link followerReproposeMs}),
 * while the log has not recorded them, so a lost notice or a leader change
 * delays a certificate but does not lose it.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { batchSigningMessage, rememberOwnBatchSignature } from "../channel/certificate.ts";
import type { ChannelResult } from "../channel/channel-state-machine.ts";
import { buildMerkleTree, maxMerkleLeaves, merkleLeafHash } from "../channel/merkle.ts";
import type { Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema, SignatureBatchSchema, type SignatureBatch } from "../gen/epochd/state/v1/channel_state_pb.ts";
import type { LogIndex } from "../raft/types.ts";
import type { AppliedCommit, BatchRefusal, CertificateCollector } from "./certificate-collector.ts";
import { encodeChannelCommand } from "../channel/channel-command.ts";
import type { SigningKey } from "./signing-key.ts";

/** The peer-stream notice topic of signature batches. */
export const signatureBatchTopic = "certificate-signatures";
/** How often own batches not yet recorded are sent again, and stale complete certificates looked at. */
export const resendIntervalMs = 1000;
/**
 * A complete certificate of a group this homeserver leads is proposed again
 * when the log has not recorded it this long after the last proposal. Under
 * load an entry takes well over a second from proposal to apply, and an
 * earlier 1 s made most certificate entries duplicates at concurrency 256
 * (60% of the items applied were already recorded), each a full Raft round.
 */
export const leaderReproposeMs = 5000;
/**
 * A homeserver that does not lead the group forwards a complete certificate
 * to the leader only when the log has not recorded it this long after it
 * completed (or after its last forward): the leader records it itself, so
 * this is for a leader that changed or lost it.
 */
export const followerReproposeMs = 10_000;
/** Own batches kept for resending; the oldest are dropped beyond this. */
export const sentBatchesMax = 10_000;
/** Most certificates one log entry records. */
export const certificatesPerEntryMax = 256;

interface SentBatch {
  readonly payload: Uint8Array;
  readonly peers: readonly string[];
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
  /** Told about a refused batch from a peer (for a log line or a counter). */
  readonly onRefused?: (from: string, reason: BatchRefusal | "malformed" | "forged-signer") => void;
}

const keyOf = (channelId: string, epoch: bigint) => `${channelId}/${epoch}`;

/** See the module comment. */
export class CertificateExchange {
  private toSign: AppliedCommit[] = [];
  /**
   * Complete certificates the log has not recorded yet, by key; insertion
   * order = age. `proposedAtMs`: when last proposed (0: never, due now).
   */
  private readonly toRecord = new Map<string, { certificate: Certificate; proposedAtMs: number }>();
  /** Keys of complete certificates this homeserver leads and has not proposed yet: the next flush proposes them. */
  private fresh: string[] = [];
  private readonly sent: SentBatch[] = [];
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
    if (result.voters.includes(this.options.selfId)) {
      this.toSign.push(commit);
      this.schedule();
    }
  }

  /** Reacts to an applied channel command (called in log order, after the apply is written): certificates the log recorded. */
  onChannelResult(result: ChannelResult): void {
    if (!result.ok || result.kind !== "signatures") return;
    for (const { channelId, epoch } of result.certified) {
      this.options.collector.forget(channelId, epoch);
      this.toRecord.delete(keyOf(channelId, epoch));
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

  /** A certificate the collector completed: queued for the log (proposed now by the leader, later by others). */
  onComplete(certificate: Certificate): void {
    const key = keyOf(certificate.channelId, certificate.epoch);
    if (!this.options.isLeader(certificate.channelId)) {
      // Counted as if proposed now: the leader completes and proposes it too.
      this.toRecord.set(key, { certificate, proposedAtMs: Date.now() });
      return;
    }
    this.toRecord.set(key, { certificate, proposedAtMs: 0 });
    this.fresh.push(key);
    this.schedule();
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
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.signApplied();
      // Only the fresh ones: those proposed already are in the log's pipeline, and retry() proposes
      // again any still unrecorded a second later. (Proposing every pending one on every turn put the
      // same certificates into the log over and over under load.)
      const fresh = this.fresh;
      this.fresh = [];
      const due = [];
      for (const key of fresh) {
        const record = this.toRecord.get(key);
        if (record !== undefined && record.proposedAtMs === 0) due.push(record);
      }
      this.propose(due, 0, Infinity);
    });
  }

  /** Signs everything applied since the last turn with one signature, counts it and sends it to the peers. */
  private signApplied(): void {
    while (this.toSign.length > 0) {
      const commits = this.toSign.splice(0, maxMerkleLeaves);
      const collector = this.options.collector;
      const root = buildMerkleTree(commits.map((c) => merkleLeafHash(collector.statementOf(c)))).root;
      const signature = this.options.key.sign(batchSigningMessage(root));
      rememberOwnBatchSignature(this.options.key.publicKeyRaw, root, signature);
      const batch = create(SignatureBatchSchema, {
        homeserverId: this.options.selfId,
        signature,
        statements: commits.map((c) => ({ clusterId: collector.clusterId, channelId: c.channelId, epoch: c.epoch, commitHash: c.commitHash, logIndex: c.logIndex })),
      });
      collector.addBatch(batch, true);
      const peers = [...new Set(commits.flatMap((c) => c.voters))].filter((id) => id !== this.options.selfId);
      const sent: SentBatch = { payload: toBinary(SignatureBatchSchema, batch), peers, keys: commits.map((c) => keyOf(c.channelId, c.epoch)), sentAtMs: Date.now() };
      for (const peer of peers) this.options.sendNotice(peer, signatureBatchTopic, sent.payload);
      if (peers.length > 0) this.sent.push(sent);
      if (this.sent.length > sentBatchesMax) this.sent.shift();
    }
  }

  /**
   * Proposes those of `records` that were not proposed
   * within the last `leaderMinAgeMs` (channels whose group this homeserver
   * leads) or `otherMinAgeMs` (the others: forwarded to their leader), one
   * entry per channel and at most {@link certificatesPerEntryMax} per entry.
   */
  private propose(records: Iterable<{ certificate: Certificate; proposedAtMs: number }>, leaderMinAgeMs: number, otherMinAgeMs: number): void {
    const now = Date.now();
    const byChannel = new Map<string, Array<{ certificate: Certificate; proposedAtMs: number }>>();
    for (const record of records) {
      const channelId = record.certificate.channelId;
      const minAgeMs = this.options.isLeader(channelId) ? leaderMinAgeMs : otherMinAgeMs;
      if (now - record.proposedAtMs < minAgeMs) continue;
      const list = byChannel.get(channelId) ?? [];
      list.push(record);
      byChannel.set(channelId, list);
    }
    for (const [channelId, due] of byChannel) {
      for (let i = 0; i < due.length; i += certificatesPerEntryMax) {
        const chunk = due.slice(i, i + certificatesPerEntryMax);
        const command = create(ChannelCommandSchema, {
          command: { case: "signatures", value: { items: chunk.map(({ certificate: c }) => ({ channelId: c.channelId, epoch: c.epoch, signatures: c.signatures })) } },
        });
        if (!this.options.propose(channelId, encodeChannelCommand(toBinary(ChannelCommandSchema, command)))) break;
        for (const record of chunk) record.proposedAtMs = now;
      }
    }
  }

  /** Every second: send own batches again while the log lacks their certificates; propose stale ones. */
  private retry(): void {
    const now = Date.now();
    const collector = this.options.collector;
    for (let i = this.sent.length - 1; i >= 0; i--) {
      const sent = this.sent[i]!;
      const open = sent.keys.some((key) => collector.isCollecting(key));
      if (!open) {
        this.sent.splice(i, 1);
        continue;
      }
      if (now - sent.sentAtMs < resendIntervalMs) continue;
      sent.sentAtMs = now;
      for (const peer of sent.peers) this.options.sendNotice(peer, signatureBatchTopic, sent.payload);
    }
    this.propose(this.toRecord.values(), leaderReproposeMs, followerReproposeMs);
  }
}
