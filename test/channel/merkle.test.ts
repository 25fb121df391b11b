import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { buildMerkleTree, merkleLeafHash, merkleRootFromProof } from "../../src/channel/merkle.ts";

/** RFC 9162's recursive definition, written independently as the reference. */
function referenceRoot(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 1) return leaves[0]!;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  const h = createHash("sha256").update(Uint8Array.of(1)).update(referenceRoot(leaves.slice(0, k))).update(referenceRoot(leaves.slice(k)));
  return new Uint8Array(h.digest());
}

const leavesOf = (n: number) => Array.from({ length: n }, (_, i) => merkleLeafHash(new TextEncoder().encode(`statement ${i}`)));
const seed = process.env.FC_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.FC_SEED);

describe("Merkle batch tree", () => {
  it("has RFC 9162's root and a verifying proof for every leaf, for 1 to 70 leaves", () => {
    for (let n = 1; n <= 70; n++) {
      const leaves = leavesOf(n);
      const tree = buildMerkleTree(leaves);
      expect(Buffer.from(tree.root).toString("hex")).toBe(Buffer.from(referenceRoot(leaves)).toString("hex"));
      for (let i = 0; i < n; i++) expect(merkleRootFromProof(leaves[i]!, i, n, tree.proof(i))).toEqual(tree.root);
    }
  });

  it("separates leaves from inner nodes: a single leaf's root is its leaf hash, not the raw statement", () => {
    const statement = new Uint8Array(32).fill(7);
    expect(buildMerkleTree([merkleLeafHash(statement)]).root).not.toEqual(statement);
  });

  it("refuses a proof used at another index, for a leaf not in the tree, or changed in any byte", () => {
    console.log(`merkle property: FC_SEED=${seed}`);
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 40 }), fc.nat(), fc.nat(), fc.nat(), (n, a, b, flip) => {
        const leaves = leavesOf(n);
        const tree = buildMerkleTree(leaves);
        const i = a % n;
        const proof = tree.proof(i);
        const other = b % n;
        if (other !== i) expect(merkleRootFromProof(leaves[i]!, other, n, proof) ?? new Uint8Array(32)).not.toEqual(tree.root);
        const outsider = merkleLeafHash(new TextEncoder().encode(`not in the tree ${b}`));
        expect(merkleRootFromProof(outsider, i, n, proof) ?? new Uint8Array(32)).not.toEqual(tree.root);
        if (proof.length > 0) {
          const changed = proof.map((h) => new Uint8Array(h));
          const at = flip % changed.length;
          const hash = changed[at]!;
          hash[flip % 32] = hash[flip % 32]! ^ 1;
          expect(merkleRootFromProof(leaves[i]!, i, n, changed)).not.toEqual(tree.root);
        }
      }),
      { seed, numRuns: 300 },
    );
  });

  it("is total on malformed proofs", () => {
    const leaf = merkleLeafHash(Uint8Array.of(1));
    expect(merkleRootFromProof(leaf, 0, 0, [])).toBeUndefined();
    expect(merkleRootFromProof(leaf, 3, 2, [leaf])).toBeUndefined();
    expect(merkleRootFromProof(leaf, 0, 2, [])).toBeUndefined();
    expect(merkleRootFromProof(leaf, 0, 2, [leaf, leaf])).toBeUndefined();
    expect(merkleRootFromProof(leaf, 0, 2, [new Uint8Array(31)])).toBeUndefined();
    expect(merkleRootFromProof(leaf, 0.5, 2, [leaf])).toBeUndefined();
  });
});

describe("statementBytes", () => {
  it("is exactly protobuf-es's deterministic encoding of SignedCommitStatement (property)", async () => {
    const { create, toBinary } = await import("@bufbuild/protobuf");
    const { SignedCommitStatementSchema } = await import("../../src/gen/epochd/channel/v1/channel_pb.ts");
    const { statementBytes } = await import("../../src/channel/certificate.ts");
    const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    fc.assert(
      fc.property(fc.string(), fc.string({ unit: "grapheme" }), u64, fc.uint8Array({ maxLength: 200 }), u64, (clusterId, channelId, epoch, commitHash, logIndex) => {
        const ours = statementBytes(clusterId, channelId, epoch, commitHash, logIndex);
        const theirs = toBinary(SignedCommitStatementSchema, create(SignedCommitStatementSchema, { clusterId, channelId, epoch, commitHash, logIndex }));
        expect(Buffer.from(ours).toString("hex")).toBe(Buffer.from(theirs).toString("hex"));
      }),
      { seed, numRuns: 500 },
    );
  });
});
