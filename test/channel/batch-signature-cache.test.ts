/**
 * verifyBatchSignature remembers verified (key, root, signature) triples so a
 * homeserver checks each peer batch once, not again for every certificate the
 * log records. The cache may only save work: whatever was remembered, a
 * signature over another root, by another key, or a forged one is refused.
 */
import { generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { batchSigningMessage, rememberOwnBatchSignature, rememberVerifiedCommitSignature, statementBytes, verifyBatchSignature, verifyCommitSignature } from "../../src/channel/certificate.ts";
import { buildMerkleTree, merkleLeafHash } from "../../src/channel/merkle.ts";

function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKey, raw: new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url")) };
}

const statements = [1n, 2n, 3n].map((epoch) => statementBytes("cluster", "chan", epoch, new Uint8Array(32).fill(Number(epoch)), 10n + epoch));
const tree = buildMerkleTree(statements.map(merkleLeafHash));

describe("verifyBatchSignature", () => {
  it("accepts a valid batch signature again and each commit of the batch through its proof", () => {
    const hs1 = keyPair();
    const signature = new Uint8Array(sign(null, batchSigningMessage(tree.root), hs1.privateKey));
    expect(verifyBatchSignature(hs1.raw, tree.root, signature)).toBe(true);
    expect(verifyBatchSignature(hs1.raw, tree.root, signature)).toBe(true);
    statements.forEach((statement, i) => {
      const s = { $typeName: "epochd.channel.v1.Signature" as const, homeserverId: "hs1", signature, leafIndex: i, leafCount: statements.length, proof: tree.proof(i) };
      expect(verifyCommitSignature(hs1.raw, statement, s)).toBe(true);
    });
  });

  it("refuses, after a verified or remembered triple, the same signature over another root or under another key, and a forged one", () => {
    const hs1 = keyPair();
    const hs2 = keyPair();
    const signature = new Uint8Array(sign(null, batchSigningMessage(tree.root), hs1.privateKey));
    expect(verifyBatchSignature(hs1.raw, tree.root, signature)).toBe(true);
    const otherRoot = buildMerkleTree(statements.slice(1).map(merkleLeafHash)).root;
    expect(verifyBatchSignature(hs1.raw, otherRoot, signature)).toBe(false);
    expect(verifyBatchSignature(hs2.raw, tree.root, signature)).toBe(false);
    const forged = signature.slice();
    forged[5] = forged[5]! ^ 1;
    expect(verifyBatchSignature(hs1.raw, tree.root, forged)).toBe(false);
    // A statement outside the batch, with a proof taken from it, does not reach the signed root.
    const outsider = statementBytes("cluster", "chan", 9n, new Uint8Array(32), 19n);
    const s = { $typeName: "epochd.channel.v1.Signature" as const, homeserverId: "hs1", signature, leafIndex: 0, leafCount: statements.length, proof: tree.proof(0) };
    expect(verifyCommitSignature(hs1.raw, outsider, s)).toBe(false);
  });

  it("takes an own signature as verified without checking it, for that key and root only", () => {
    const own = keyPair();
    const signature = new Uint8Array(sign(null, batchSigningMessage(tree.root), own.privateKey));
    rememberOwnBatchSignature(own.raw, tree.root, signature);
    expect(verifyBatchSignature(own.raw, tree.root, signature)).toBe(true);
    const otherRoot = buildMerkleTree(statements.slice(2).map(merkleLeafHash)).root;
    expect(verifyBatchSignature(own.raw, otherRoot, signature)).toBe(false);
    expect(verifyBatchSignature(keyPair().raw, tree.root, signature)).toBe(false);
  });

  it("after a commit signature is remembered as verified, a copy differing in any byte is checked in full and refused", () => {
    const hs1 = keyPair();
    const signature = new Uint8Array(sign(null, batchSigningMessage(tree.root), hs1.privateKey));
    const valid = { $typeName: "epochd.channel.v1.Signature" as const, homeserverId: "hs1", signature, leafIndex: 1, leafCount: statements.length, proof: tree.proof(1) };
    rememberVerifiedCommitSignature(hs1.raw, statements[1]!, valid);
    expect(verifyCommitSignature(hs1.raw, statements[1]!, { ...valid, proof: valid.proof.map((hash) => hash.slice()) })).toBe(true);
    const forged = signature.slice();
    forged[7] = forged[7]! ^ 1;
    const flipped = valid.proof.map((hash, i) => (i === 0 ? hash.map((b, j) => (j === 0 ? b ^ 1 : b)) : hash));
    expect(verifyCommitSignature(hs1.raw, statements[1]!, { ...valid, signature: forged })).toBe(false);
    expect(verifyCommitSignature(hs1.raw, statements[1]!, { ...valid, leafIndex: 2 })).toBe(false);
    expect(verifyCommitSignature(hs1.raw, statements[1]!, { ...valid, leafCount: 2 })).toBe(false);
    expect(verifyCommitSignature(hs1.raw, statements[1]!, { ...valid, proof: flipped })).toBe(false);
    expect(verifyCommitSignature(hs1.raw, statements[1]!, { ...valid, proof: valid.proof.slice(1) })).toBe(false);
    expect(verifyCommitSignature(hs1.raw, statements[2]!, valid)).toBe(false);
    expect(verifyCommitSignature(keyPair().raw, statements[1]!, valid)).toBe(false);
  });
});
