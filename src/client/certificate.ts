/**
 * Certificate verification: the check that stands between a member and a forked group. The SDK applies a
 * commit only when a majority of the channel's homeservers signed (cluster, channel, epoch, commit hash,
 * log index) for exactly that commit, each with the key the cluster directory lists for it. A homeserver
 * signs a batch of commits at once, over a Merkle root: each signature carries the commit's inclusion
 * proof, and the check recomputes the root from the statement before verifying (see channel.proto).
 * Pure: no I/O, no clock; the caller supplies the directory (or, for verifyUnderDirectory, how to fetch
 * it) and the voters it derived from its own tree.
 */
import { createPublicKey, verify, type KeyObject } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { batchSigningMessage, signedRoot } from "../channel/certificate.ts";
import { SignedCommitStatementSchema, type Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";

/** Length in bytes of a raw Ed25519 public key. */
export const ed25519PublicKeyBytes = 32;
/** Length in bytes of an Ed25519 signature. */
export const ed25519SignatureBytes = 64;
/** Length in bytes of a SHA-256 commit hash. */
export const commitHashBytes = 32;

/** What the client is about to apply: the commit a certificate must name. */
export interface ExpectedCommit {
  /** The cluster id from the directory (ListHomeservers) the client trusts. */
  readonly clusterId: string;
  readonly channelId: string;
  /** The epoch the commit builds on (the client's current epoch). */
  readonly epoch: bigint;
  /** SHA-256 of the commit's MLSMessage bytes. */
  readonly commitHash: Uint8Array;
}

/**
 * The outcome of a certificate check: ok, or the first reason it failed. `incomplete` is set when the
 * only fault is too few signatures (every signature present is valid): homeservers co-sign after the
 * commit is accepted, so a reader may see a certificate still gathering signatures.
 */
export type CertificateVerdict = { readonly ok: true } | { readonly ok: false; readonly reason: string; readonly incomplete?: true; readonly keyFault?: true };

/** Homeserver id to its Ed25519 public key, as the cluster directory lists them. */
export type HomeserverKeys = ReadonlyMap<string, KeyObject>;

// SPKI DER prefix of an Ed25519 public key (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING }.
const ed25519SpkiPrefix = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);

/** Imports a raw 32-byte Ed25519 public key (as ListHomeservers returns it); throws on a wrong length. */
export function importEd25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== ed25519PublicKeyBytes) throw new Error(`Ed25519 public key must be ${ed25519PublicKeyBytes} bytes, got ${raw.length}`);
  const der = new Uint8Array(ed25519SpkiPrefix.length + raw.length);
  der.set(ed25519SpkiPrefix, 0);
  der.set(raw, ed25519SpkiPrefix.length);
  return createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" });
}

/** The exact bytes each homeserver signs for a certificate (deterministic protobuf-es binary encoding). */
export function signedStatementBytes(statement: ExpectedCommit & { readonly logIndex: bigint }): Uint8Array {
  return toBinary(
    SignedCommitStatementSchema,
    create(SignedCommitStatementSchema, {
      clusterId: statement.clusterId,
      channelId: statement.channelId,
      epoch: statement.epoch,
      commitHash: statement.commitHash,
      logIndex: statement.logIndex,
    }),
  );
}

/** The quorum size of `voterCount` voters: a strict majority. */
export function majorityOf(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function fail(reason: string): CertificateVerdict {
  return { ok: false, reason };
}

/** The sorted, duplicate-free form of a homeserver list, for set comparison. */
export function normalizeVoters(voters: Iterable<string>): string[] {
  return [...new Set(voters)].sort();
}

function checkStatement(cert: Certificate, expected: ExpectedCommit): CertificateVerdict {
  if (cert.clusterId !== expected.clusterId) return fail(`certificate is for cluster ${JSON.stringify(cert.clusterId)}, the directory's is ${JSON.stringify(expected.clusterId)}`);
  if (cert.channelId !== expected.channelId) return fail(`certificate is for channel ${JSON.stringify(cert.channelId)}, expected ${JSON.stringify(expected.channelId)}`);
  if (cert.epoch !== expected.epoch) return fail(`certificate is for epoch ${cert.epoch}, expected ${expected.epoch}`);
  if (expected.commitHash.length !== commitHashBytes) return fail(`expected commit hash must be ${commitHashBytes} bytes`);
  if (!bytesEqual(cert.commitHash, expected.commitHash)) return fail("certificate names another commit (commit hash differs)");
  return { ok: true };
}

function checkVoters(cert: Certificate, voters: readonly string[]): CertificateVerdict {
  const claimed = normalizeVoters(cert.voters);
  const known = normalizeVoters(voters);
  if (claimed.length !== cert.voters.length) return fail("certificate lists a voter twice");
  if (known.length === 0) return fail("the client knows no voters for this channel");
  if (claimed.length !== known.length || claimed.some((v, i) => v !== known[i])) {
    return fail(`certificate voters [${claimed.join(", ")}] differ from the channel's homeservers [${known.join(", ")}]`);
  }
  return { ok: true };
}

/**
 * Verifies `cert` for the commit the client is about to apply. Valid iff: the cluster id is the
 * directory's (`expected.clusterId`); channel, epoch and commit hash are `expected`'s; `cert.voters` is exactly the set `voters`
 * (the homeservers of the client's own tree before the commit); and at least a majority of those voters
 * each contributed one signature that verifies under the directory's key for it. A signature by a
 * non-voter, a second signature by the same homeserver, or a bad signature makes the certificate invalid
 * (a well-behaved cluster never sends one, so its presence means something is wrong).
 */
export function verifyCertificate(
  cert: Certificate,
  expected: ExpectedCommit,
  voters: readonly string[],
  directory: HomeserverKeys,
): CertificateVerdict {
  const statementCheck = checkStatement(cert, expected);
  if (!statementCheck.ok) return statementCheck;
  const votersCheck = checkVoters(cert, voters);
  if (!votersCheck.ok) return votersCheck;
  const voterSet = new Set(voters);
  const statement = signedStatementBytes({ ...expected, logIndex: cert.logIndex });
  const signers = new Set<string>();
  for (const signature of cert.signatures) {
    const signer = signature.homeserverId;
    if (!voterSet.has(signer)) return fail(`signature by ${JSON.stringify(signer)}, which is not a homeserver of the channel`);
    if (signers.has(signer)) return fail(`two signatures by ${JSON.stringify(signer)}`);
    const key = directory.get(signer);
    if (key === undefined) return { ok: false, reason: `no directory key for homeserver ${JSON.stringify(signer)}`, keyFault: true };
    if (signature.signature.length !== ed25519SignatureBytes) return fail(`signature by ${JSON.stringify(signer)} is not ${ed25519SignatureBytes} bytes`);
    const root = signedRoot(statement, signature);
    if (root === undefined) return fail(`signature by ${JSON.stringify(signer)} has a Merkle proof that does not fit its position`);
    if (!verify(null, batchSigningMessage(root), key, signature.signature)) return { ok: false, reason: `signature by ${JSON.stringify(signer)} does not verify`, keyFault: true };
    signers.add(signer);
  }
  const needed = majorityOf(voterSet.size);
  if (signers.size < needed) return { ok: false, reason: `certificate has ${signers.size} valid signatures, needs ${needed} of ${voterSet.size} voters`, incomplete: true };
  return { ok: true };
}

/** A client's cluster directory: its cached copy, or (`refresh`) one fetched again. */
export type DirectorySource = (refresh: boolean) => Promise<{ readonly clusterId: string; readonly keys: HomeserverKeys }>;

/**
 * verifyCertificate under the directory `source` holds, and once more under
 * a directory fetched again when a voter had no key in it or a signature did
 * not verify under the listed key (`keyFault`): a homeserver that lost its
 * data directory signs with a new key, which a directory fetched before does
 * not list. (Without the second look a client that fetched the directory
 * before refused every later commit of a channel on that homeserver.) A
 * certificate still refused under the fresh directory is refused.
 */
export async function verifyUnderDirectory(cert: Certificate, expected: Omit<ExpectedCommit, "clusterId">, voters: readonly string[], source: DirectorySource): Promise<CertificateVerdict> {
  const cached = await source(false);
  const verdict = verifyCertificate(cert, { ...expected, clusterId: cached.clusterId }, voters, cached.keys);
  if (verdict.ok || verdict.keyFault !== true) return verdict;
  const fresh = await source(true);
  return verifyCertificate(cert, { ...expected, clusterId: fresh.clusterId }, voters, fresh.keys);
}
