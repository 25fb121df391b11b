/**
 * Commit certificates: what a homeserver signs for an accepted commit, and
 * when enough of the channel's homeservers have signed.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { createPublicKey, verify } from "node:crypto";
import { SignedCommitStatementSchema, type Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";

/** The bytes every signature of a certificate covers: a deterministic protobuf encoding. */
export function statementBytes(clusterId: string, channelId: string, epoch: bigint, commitHash: Uint8Array, logIndex: bigint): Uint8Array {
  return toBinary(SignedCommitStatementSchema, create(SignedCommitStatementSchema, { clusterId, channelId, epoch, commitHash, logIndex }));
}

/** Signatures needed from `voters` homeservers: a majority. */
export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** Whether the certificate holds a quorum of its voters' signatures (counted, not verified). */
export function isCertified(certificate: Certificate): boolean {
  return certificate.signatures.length >= quorumSize(certificate.voters.length);
}

const ed25519SpkiPrefix = Buffer.from("302a300506032b6570032100", "hex");

/** Verifies a raw Ed25519 signature with a raw 32-byte public key; false on any malformed input. */
export function verifyEd25519(publicKeyRaw: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKeyRaw.byteLength !== 32 || signature.byteLength !== 64) return false;
  try {
    const key = createPublicKey({ key: Buffer.concat([ed25519SpkiPrefix, publicKeyRaw]), format: "der", type: "spki" });
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}
