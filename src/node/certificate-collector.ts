/**
 * Assembles commit certificates in memory from the signatures homeservers
 * exchange directly, so a client's SubmitCommit is answered as soon as a
 * quorum has signed, without waiting for the signatures to go through the
 * log. Every signature is verified on arrival (once per signed batch) and
 * counted only for the statement this homeserver applied itself: a peer can
 * not make it count a signature over another commit, epoch or log index.
 */
import { create } from "@bufbuild/protobuf";
import { quorumSize, rememberVerifiedCommitSignature, statementBytes, verifyBatchSignature } from "../channel/certificate.ts";
import { buildMerkleTree, maxMerkleLeaves, merkleLeafHash, type MerkleTree } from "../channel/merkle.ts";
import { CertificateSchema, type Certificate, type Signature } from "../gen/epochd/channel/v1/channel_pb.ts";
import type { SignatureBatch } from "../gen/epochd/state/v1/channel_state_pb.ts";

/** A commit this homeserver applied: what its certificate must say. */
export interface AppliedCommit {
  readonly channelId: string;
  readonly epoch: bigint;
  readonly commitHash: Uint8Array;
  readonly logIndex: bigint;
  readonly voters: readonly string[];
}

interface Collecting {
  /** Set once this homeserver applied the commit; until then signatures wait in `early`. */
  applied: (AppliedCommit & { readonly statement: Uint8Array }) | undefined;
  readonly signatures: Map<string, Signature>;
  /** Signatures that arrived before the local apply, with the statement each covers and the key that verified it. */
  readonly early: Map<string, { statement: Uint8Array; signature: Signature; key: Uint8Array }>;
  /**
   * Batches left unverified because, when they came, enough other signers had signed this commit
   * already (see {@link CertificateCollector.addBatch}); verified at the apply only if still needed.
   */
  deferred: SignatureBatch[] | undefined;
  complete: Certificate | undefined;
}

/**
 * Early signers a commit must have before a peer's batch over it is left
 * unverified until the apply: two make a quorum of the three voters most
 * channels have (this homeserver's own store-time signature and one peer's).
 */
const deferAfterEarlySigners = 2;

/** Why a signature batch from a peer was refused. */
export type BatchRefusal = "unknown-signer" | "empty" | "too-large" | "bad-signature";

/** Most batches left unverified per commit (see {@link CertificateCollector.addBatch}); more are verified on arrival. */
export const deferredPerCommitMax = 8;

/** Most batches, and most statements in them, kept per signer after a refusal for want of its current key (the oldest go first). */
export const refusedBatchesPerSignerMax = 16;
export const refusedStatementsPerSignerMax = 16_384;

/** Batches of one signer refused under `key` (undefined: the directory listed none). */
interface Refused {
  readonly key: Uint8Array | undefined;
  readonly batches: SignatureBatch[];
  statements: number;
}

const keyOf = (channelId: string, epoch: bigint) => `${channelId}/${epoch}`;

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

function sameKey(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a === undefined || b === undefined ? a === b : bytesEqual(a, b);
}

/** See the module comment. */
export class CertificateCollector {
  /** Insertion order = age, for the memory bound. */
  private readonly entries = new Map<string, Collecting>();
  /**
   * Keys of certificates the log recorded (forgotten here), newest last, as
   * many as `maxEntries`: a peer's batch arriving after that must not start
   * collecting them again. (It did: the entry it created was never forgotten,
   * so the own batch over that commit counted as open and was sent again
   * every second for good, thousands a second after a few minutes of load.)
   */
  private readonly recorded = new Set<string>();
  /**
   * Batches refused as from an unknown signer or with a bad signature, by
   * signer, checked again once the directory lists another key for it. A
   * homeserver that lost its data directory signs with a new key, which a
   * peer learns only when it applies the new directory record, often after
   * the first batch arrived; the signer, whose own certificate is complete,
   * sends it again only every 15 s. (Refused for good, it left a channel of
   * two homeservers without a certificate for 15 s: the integration test's
   * deadline, under CI's load.)
   */
  private readonly refused = new Map<string, Refused>();

  constructor(
    readonly clusterId: string,
    /** The raw Ed25519 key the directory lists for a homeserver: what signatures are checked with. */
    readonly signingKeyOf: (homeserverId: string) => Uint8Array | undefined,
    /** Called once per certificate when it reaches a quorum. */
    private readonly onComplete: (certificate: Certificate) => void,
    private readonly maxEntries = 100_000,
  ) {}

  /** The statement bytes of an applied commit under this cluster. */
  statementOf(commit: AppliedCommit): Uint8Array {
    return statementBytes(this.clusterId, commit.channelId, commit.epoch, commit.commitHash, commit.logIndex);
  }

  private entry(key: string): Collecting {
    let entry = this.entries.get(key);
    if (entry === undefined) {
      if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
      entry = { applied: undefined, signatures: new Map(), early: new Map(), deferred: undefined, complete: undefined };
      this.entries.set(key, entry);
    }
    return entry;
  }

  /** Records a commit this homeserver applied; signatures that came early now count if they match it. */
  applied(commit: AppliedCommit): void {
    if (this.recorded.has(keyOf(commit.channelId, commit.epoch))) return;
    const entry = this.entry(keyOf(commit.channelId, commit.epoch));
    if (entry.applied !== undefined) return;
    entry.applied = { ...commit, statement: this.statementOf(commit) };
    for (const [signer, early] of entry.early) if (bytesEqual(early.statement, entry.applied.statement)) this.count(entry, signer, early.signature, early.key);
    entry.early.clear();
    const deferred = entry.deferred;
    entry.deferred = undefined;
    // Not enough without them: checked now, like any batch (a refused one is kept as addBatch keeps it).
    if (deferred !== undefined && entry.complete === undefined) for (const batch of deferred) this.addBatch(batch, false);
  }

  /**
   * Adds a batch of signatures a peer sent. The signature over the batch root
   * is verified once; then each statement's signature (with its inclusion
   * proof) counts toward that commit's certificate.
   */
  addBatch(batch: SignatureBatch, mayDefer = true): BatchRefusal | undefined {
    const signer = batch.homeserverId;
    if (batch.statements.length === 0) return "empty";
    if (batch.statements.length > maxMerkleLeaves) return "too-large";
    const key = this.signingKeyOf(signer);
    if (key === undefined) return this.refuse(batch, key, "unknown-signer");
    // With 3 voters, the second peer's batch usually finds every certificate complete: nothing to
    // verify it for (an Ed25519 verification and a Merkle tree per batch on every homeserver).
    if (this.addsNothing(batch)) return undefined;
    // With signatures made at store time, both peers' batches often come before the apply: the second
    // is checked only if the first two signers turn out not to be a quorum of the commit's voters.
    if (mayDefer && this.defer(batch)) return undefined;
    const statements = batch.statements.map((s) => statementBytes(s.clusterId, s.channelId, s.epoch, s.commitHash, s.logIndex));
    const tree = buildMerkleTree(statements.map(merkleLeafHash));
    if (!verifyBatchSignature(key, tree.root, batch.signature)) return this.refuse(batch, key, "bad-signature");
    this.countBatch(batch, statements, tree, key);
    return undefined;
  }

  /** Keeps a batch refused under `key` to check again when the signer's key changes (bounded per signer). */
  private refuse(batch: SignatureBatch, key: Uint8Array | undefined, reason: BatchRefusal): BatchRefusal {
    const signer = batch.homeserverId;
    let refused = this.refused.get(signer);
    if (refused !== undefined && !sameKey(refused.key, key)) {
      // Refused under an older key: checked under this one first, and kept again only if still refused.
      this.checkAgain(signer, refused);
      refused = this.refused.get(signer);
    }
    if (refused === undefined) this.refused.set(signer, (refused = { key, batches: [], statements: 0 }));
    refused.batches.push(batch);
    refused.statements += batch.statements.length;
    while (refused.batches.length > refusedBatchesPerSignerMax || refused.statements > refusedStatementsPerSignerMax) {
      refused.statements -= refused.batches.shift()!.statements.length;
    }
    return reason;
  }

  /**
   * Checks again the refused batches of every signer the directory now lists
   * another key for (called every second): a signature that was refused only
   * because this homeserver had not yet applied its signer's new key counts.
   */
  recheckRefused(): void {
    for (const [signer, refused] of [...this.refused]) {
      const key = this.signingKeyOf(signer);
      if (key !== undefined && !sameKey(refused.key, key)) this.checkAgain(signer, refused);
    }
  }

  /** Adds `refused`, the signer's refused batches, again: those still refused are kept anew. */
  private checkAgain(signer: string, refused: Refused): void {
    this.refused.delete(signer);
    for (const batch of refused.batches) this.addBatch(batch);
  }

  /** How many refused batches wait for their signer's key to change (for tests). */
  refusedCount(): number {
    let count = 0;
    for (const refused of this.refused.values()) count += refused.batches.length;
    return count;
  }

  /**
   * Adds this homeserver's own batch, signed over `tree` (the Merkle tree of
   * `statements`, the batch's statements in order) just now: the tree and
   * statements are the signer's, not built again, and nothing is verified.
   */
  addOwnBatch(batch: SignatureBatch, statements: readonly Uint8Array[], tree: MerkleTree, publicKeyRaw: Uint8Array): void {
    this.countBatch(batch, statements, tree, publicKeyRaw);
  }

  /**
   * Counts each statement's signature (the batch signature with its proof)
   * toward that commit's certificate; `signerKey` is the public key the
   * batch signature is valid under (checked, or this homeserver's own).
   */
  private countBatch(batch: SignatureBatch, statements: readonly Uint8Array[], tree: MerkleTree, signerKey: Uint8Array): void {
    const signer = batch.homeserverId;
    const leafCount = statements.length;
    batch.statements.forEach((s, i) => {
      if (s.clusterId !== this.clusterId) return;
      const key = keyOf(s.channelId, s.epoch);
      if (this.recorded.has(key)) return;
      const entry = this.entry(key);
      if (entry.complete !== undefined) return;
      // A plain object of the generated type: create() per statement costs more than everything else here.
      const signature: Signature = { $typeName: "epochd.channel.v1.Signature", homeserverId: signer, signature: batch.signature, leafIndex: i, leafCount, proof: tree.proof(i) };
      if (entry.applied === undefined) entry.early.set(signer, { statement: statements[i]!, signature, key: signerKey });
      else if (bytesEqual(entry.applied.statement, statements[i]!)) this.count(entry, signer, signature, signerKey);
    });
  }

  /**
   * Leaves `batch` unverified, with each commit it covers, when every one of
   * them is not applied here yet and has {@link deferAfterEarlySigners}
   * other signers already; true if it did. Its signatures count only once
   * verified, at the apply, if a commit then still lacks a quorum.
   */
  private defer(batch: SignatureBatch): boolean {
    const entries: Collecting[] = [];
    for (const s of batch.statements) {
      const entry = s.clusterId === this.clusterId ? this.entries.get(keyOf(s.channelId, s.epoch)) : undefined;
      if (entry === undefined || entry.applied !== undefined || entry.early.has(batch.homeserverId)) return false;
      if (entry.early.size < deferAfterEarlySigners || (entry.deferred?.length ?? 0) >= deferredPerCommitMax) return false;
      entries.push(entry);
    }
    for (const entry of entries) (entry.deferred ??= []).push(batch);
    return true;
  }

  /** Whether every statement of `batch` is of this cluster and for a certificate already complete here. */
  private addsNothing(batch: SignatureBatch): boolean {
    return batch.statements.every((s) => {
      const key = keyOf(s.channelId, s.epoch);
      return s.clusterId === this.clusterId && (this.recorded.has(key) || this.entries.get(key)?.complete !== undefined);
    });
  }

  private count(entry: Collecting, signer: string, signature: Signature, key: Uint8Array): void {
    const applied = entry.applied!;
    if (entry.complete !== undefined || !applied.voters.includes(signer) || entry.signatures.has(signer)) return;
    entry.signatures.set(signer, signature);
    // Valid under `key` (checked, or this homeserver's own): when the log records it, apply need not hash its proof again.
    rememberVerifiedCommitSignature(key, applied.statement, signature);
    if (entry.signatures.size < quorumSize(applied.voters.length)) return;
    entry.complete = create(CertificateSchema, {
      clusterId: this.clusterId,
      channelId: applied.channelId,
      epoch: applied.epoch,
      commitHash: applied.commitHash,
      logIndex: applied.logIndex,
      voters: [...applied.voters],
      signatures: [...entry.signatures.values()].sort((a, b) => (a.homeserverId < b.homeserverId ? -1 : 1)),
    });
    this.onComplete(entry.complete);
  }

  /** The complete certificate of the commit that ended `epoch`, if a quorum has signed. */
  certificate(channelId: string, epoch: bigint): Certificate | undefined {
    return this.entries.get(keyOf(channelId, epoch))?.complete;
  }

  /** Drops what is kept for a commit whose certificate the log now holds; later signatures for it are ignored. */
  forget(channelId: string, epoch: bigint): void {
    const key = keyOf(channelId, epoch);
    this.entries.delete(key);
    this.recorded.add(key);
    if (this.recorded.size > this.maxEntries) this.recorded.delete(this.recorded.values().next().value!);
  }

  /** Whether this homeserver applied the commit `channel/epoch` (or the log recorded its certificate). */
  isApplied(key: string): boolean {
    return this.recorded.has(key) || this.entries.get(key)?.applied !== undefined;
  }

  /** Whether the commit `channel/epoch` is still collected (its certificate not yet recorded in the log). */
  isCollecting(key: string): boolean {
    return this.entries.has(key);
  }

  /** Whether this homeserver counted `signer`'s signature over the commit `channel/epoch`. */
  hasSignatureOf(key: string, signer: string): boolean {
    return this.entries.get(key)?.signatures.has(signer) === true;
  }

  /** Whether the commit `channel/epoch` has a complete certificate here. */
  isComplete(key: string): boolean {
    return this.entries.get(key)?.complete !== undefined;
  }

  /** How many commits are being collected (for metrics and tests). */
  size(): number {
    return this.entries.size;
  }
}
