/**
 * Real Ed25519 homeserver keys for client tests, and a signer that builds certificates the way a
 * homeserver does: one Ed25519 signature over the Merkle root of a batch of SignedCommitStatements, here a
 * batch of three with the certified statement in the middle, so every test also exercises the proofs.
 */
import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { CertificateSchema, SignatureSchema, type Certificate } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { importEd25519PublicKey, signedStatementBytes, type ExpectedCommit } from "../../src/client/certificate.ts";
import { batchSigningMessage } from "../../src/channel/certificate.ts";
import { buildMerkleTree, merkleLeafHash } from "../../src/channel/merkle.ts";

/** One test homeserver's key pair. */
export interface TestHomeserver {
  readonly id: string;
  readonly privateKey: KeyObject;
  /** Raw 32-byte public key, as ListHomeservers returns it. */
  readonly rawPublicKey: Uint8Array;
}

/** Generates `ids.length` homeservers with fresh Ed25519 keys. */
export function makeHomeservers(ids: readonly string[]): Map<string, TestHomeserver> {
  const result = new Map<string, TestHomeserver>();
  for (const id of ids) {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const jwk = publicKey.export({ format: "jwk" });
    const rawPublicKey = new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"));
    result.set(id, { id, privateKey, rawPublicKey });
  }
  return result;
}

/** The directory view (id -> imported public key) of `homeservers`. */
export function directoryOf(homeservers: ReadonlyMap<string, TestHomeserver>): Map<string, KeyObject> {
  return new Map([...homeservers].map(([id, hs]) => [id, importEd25519PublicKey(hs.rawPublicKey)]));
}

/** A certificate for `statement` signed by `signers` (each signs the statement unless given another). */
export function signCertificate(
  statement: ExpectedCommit & { logIndex: bigint },
  voters: readonly string[],
  signers: readonly TestHomeserver[],
): Certificate {
  const batch = [{ ...statement, channelId: `${statement.channelId}-before` }, statement, { ...statement, epoch: statement.epoch + 1n }];
  const tree = buildMerkleTree(batch.map((s) => merkleLeafHash(signedStatementBytes(s))));
  const message = batchSigningMessage(tree.root);
  return create(CertificateSchema, {
    ...statement,
    voters: [...voters],
    signatures: signers.map((hs) =>
      create(SignatureSchema, { homeserverId: hs.id, signature: new Uint8Array(sign(null, message, hs.privateKey)), leafIndex: 1, leafCount: 3, proof: tree.proof(1) }),
    ),
  });
}
