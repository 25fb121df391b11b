/**
 * Commit certificates: what a homeserver signs for an accepted commit, and
 * when enough of the channel's homeservers have signed.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { createPublicKey, verify, type KeyObject } from "node:crypto";
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
