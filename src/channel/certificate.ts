/**
 * Commit certificates: what a homeserver signs for an accepted commit, how a
 * batch of commits is signed at once (a Merkle root, see merkle.ts), and
 * when enough of the channel's homeservers have signed.
 */
import { createPublicKey, verify, type KeyObject } from "node:crypto";
import type { Certificate, Signature } from "../gen/epochd/channel/v1/channel_pb.ts";
import { bytesEqual } from "../mls/decode.ts";
import { merkleHashBytes, merkleLeafHash, merkleRootFromProof } from "./merkle.ts";

/**
 * The bytes every signature of a certificate covers: the deterministic
 * protobuf encoding of SignedCommitStatement (fields in number order, proto3
 * defaults left out), written by hand because every homeserver encodes one per
 * commit it signs or checks; a test holds it equal to protobuf-es's toBinary.
 */
export function statementBytes(clusterId: string, channelId: string, epoch: bigint, commitHash: Uint8Array, logIndex: bigint): Uint8Array {
  const cluster = utf8.encode(clusterId);
  const channel = utf8.encode(channelId);
  const out = new Uint8Array(cluster.byteLength + channel.byteLength + commitHash.byteLength + 4 * 10 + 2 * 10);
  let at = 0;
  const varint = (value: bigint): void => {
    let v = BigInt.asUintN(64, value);
    while (v >= 0x80n) {
      out[at++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    out[at++] = Number(v);
  };
  const field = (tag: number, bytes: Uint8Array): void => {
    if (bytes.byteLength === 0) return;
    out[at++] = tag;
    varint(BigInt(bytes.byteLength));
    out.set(bytes, at);
    at += bytes.byteLength;
  };
  field(0x0a, cluster);
  field(0x12, channel);
  if (epoch !== 0n) {
    out[at++] = 0x18;
    varint(epoch);
  }
  field(0x22, commitHash);
  if (logIndex !== 0n) {
    out[at++] = 0x28;
    varint(logIndex);
  }
  return out.slice(0, at);
}

const utf8 = new TextEncoder();

/** The certificate's own statement bytes. */
export function certificateStatement(certificate: Certificate): Uint8Array {
  return statementBytes(certificate.clusterId, certificate.channelId, certificate.epoch, certificate.commitHash, certificate.logIndex);
}

const batchDomain = new TextEncoder().encode("epochd commit batch v1\0");

/** The message a homeserver signs for a batch: a domain-separation prefix, then the Merkle root. */
export function batchSigningMessage(root: Uint8Array): Uint8Array {
  const message = new Uint8Array(batchDomain.byteLength + root.byteLength);
  message.set(batchDomain, 0);
  message.set(root, batchDomain.byteLength);
  return message;
}

/** The Merkle root a signature claims for `statement`: undefined when its proof does not fit. */
export function signedRoot(statement: Uint8Array, signature: Signature): Uint8Array | undefined {
  return merkleRootFromProof(merkleLeafHash(statement), signature.leafIndex, signature.leafCount, signature.proof);
}

/**
 * Whether `signature` is a valid signature by the holder of `publicKeyRaw`
 * over `statement` (through its batch root). Every commit of a batch carries
 * the same batch signature, so a batch of n commits costs one Ed25519
 * verification, not n (see {@link verifyBatchSignature}).
 */
export function verifyCommitSignature(publicKeyRaw: Uint8Array, statement: Uint8Array, signature: Signature): boolean {
  const id = commitSignatureId(publicKeyRaw, statement);
  if (sameSignature(verifiedCommitSignatures.get(id), signature)) return true;
  const root = signedRoot(statement, signature);
  if (root === undefined || root.byteLength !== merkleHashBytes) return false;
  if (!verifyBatchSignature(publicKeyRaw, root, signature.signature)) return false;
  rememberVerifiedCommitSignature(publicKeyRaw, statement, signature);
  return true;
}

/**
 * Records that `signature` (batch signature, leaf and proof) is valid for
 * `statement` under `publicKeyRaw`: the collector checked it, or it is this
 * process's own. When the log records the certificate, every homeserver
 * checks the same signature again, and then a lookup with byte comparisons
 * replaces the proof's hashes. A cache of successes only: a signature that
 * differs in any byte is checked in full, so apply stays deterministic.
 */
export function rememberVerifiedCommitSignature(publicKeyRaw: Uint8Array, statement: Uint8Array, signature: Signature): void {
  const id = commitSignatureId(publicKeyRaw, statement);
  if (verifiedCommitSignatures.has(id)) verifiedCommitSignatures.delete(id);
  else if (verifiedCommitSignatures.size >= verifiedCommitSignaturesMax) verifiedCommitSignatures.delete(verifiedCommitSignatures.keys().next().value!);
  verifiedCommitSignatures.set(id, detachedSignature(signature));
}

/**
 * A copy of `signature` that owns its bytes: decoded bytes are views into the
 * whole peer batch or log entry they came in, which whatever keeps a
 * signature for long must not keep alive.
 */
export function detachedSignature(signature: Signature): Signature {
  return { ...signature, signature: signature.signature.slice(), proof: signature.proof.map((hash) => hash.slice()) };
}

function commitSignatureId(publicKeyRaw: Uint8Array, statement: Uint8Array): string {
  return `${base64(publicKeyRaw)}/${base64(statement)}`;
}

/** Whether `b` is exactly the signature `a` (same batch signature, leaf, leaf count and proof). */
function sameSignature(a: Signature | undefined, b: Signature): boolean {
  return (
    a !== undefined &&
    a.leafIndex === b.leafIndex &&
    a.leafCount === b.leafCount &&
    bytesEqual(a.signature, b.signature) &&
    a.proof.length === b.proof.length &&
    a.proof.every((hash, i) => bytesEqual(hash, b.proof[i]!))
  );
}

/**
 * Whether `signature` is the holder of `publicKeyRaw`'s signature over the
 * batch root `root`. Verified (key, root, signature) triples are remembered
 * for this process: a homeserver checks each peer batch when it arrives and
 * again, commit by commit, when the log records the certificates, and the
 * second check then costs a lookup. A cache of successes only: it saves work
 * and never changes an answer, so apply stays deterministic.
 */
export function verifyBatchSignature(publicKeyRaw: Uint8Array, root: Uint8Array, signature: Uint8Array): boolean {
  const id = batchSignatureId(publicKeyRaw, root, signature);
  if (verifiedBatches.has(id)) return true;
  if (!verifyEd25519(publicKeyRaw, batchSigningMessage(root), signature)) return false;
  rememberVerified(id);
  return true;
}

/**
 * Records a batch signature this process made itself with the key whose
 * public half is `publicKeyRaw`: valid by construction, so checking it when
 * the log records it costs nothing.
 */
export function rememberOwnBatchSignature(publicKeyRaw: Uint8Array, root: Uint8Array, signature: Uint8Array): void {
  rememberVerified(batchSignatureId(publicKeyRaw, root, signature));
}

function batchSignatureId(publicKeyRaw: Uint8Array, root: Uint8Array, signature: Uint8Array): string {
  return `${base64(publicKeyRaw)}/${base64(root)}/${base64(signature)}`;
}

/** Base64 of `bytes` without copying them. */
function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function rememberVerified(id: string): void {
  if (verifiedBatches.has(id)) return;
  if (verifiedBatches.size >= verifiedBatchesMax) verifiedBatches.delete(verifiedBatches.values().next().value!);
  verifiedBatches.add(id);
}

/** Recently verified commit signatures by key and statement, oldest first (see {@link rememberVerifiedCommitSignature}). */
const verifiedCommitSignatures = new Map<string, Signature>();
/**
 * Enough for the signatures of the certificates a homeserver has yet to see
 * recorded: a quorum per commit over the 10 s a certificate may wait for the
 * channel's next command, at a few thousand commits/s.
 */
const verifiedCommitSignaturesMax = 65_536;

/** Recently verified batch signatures, oldest first. */
const verifiedBatches = new Set<string>();
/** Enough for the batches of the certificates a homeserver has yet to see recorded under load. */
const verifiedBatchesMax = 16_384;

/** Signatures needed from `voters` homeservers: a majority. */
export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** Whether the certificate holds a quorum of its voters' signatures (counted, not verified). */
export function isCertified(certificate: Certificate): boolean {
  return certificate.signatures.length >= quorumSize(certificate.voters.length);
}

const ed25519SpkiPrefix = Buffer.from("302a300506032b6570032100", "hex");

/** Imported public keys by their raw bytes: a homeserver's key is used for every commit it signs. */
const importedKeys = new Map<string, KeyObject>();
/** Most keys kept imported (a cluster has a handful of homeservers; the bound only guards memory). */
const importedKeysMax = 1024;

function importKey(publicKeyRaw: Uint8Array): KeyObject {
  const id = Buffer.from(publicKeyRaw).toString("base64");
  let key = importedKeys.get(id);
  if (key === undefined) {
    key = createPublicKey({ key: Buffer.concat([ed25519SpkiPrefix, publicKeyRaw]), format: "der", type: "spki" });
    if (importedKeys.size >= importedKeysMax) importedKeys.clear();
    importedKeys.set(id, key);
  }
  return key;
}

/** Verifies a raw Ed25519 signature with a raw 32-byte public key; false on any malformed input. */
export function verifyEd25519(publicKeyRaw: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKeyRaw.byteLength !== 32 || signature.byteLength !== 64) return false;
  try {
    return verify(null, message, importKey(publicKeyRaw), signature);
  } catch {
    return false;
  }
}
