/**
 * A Merkle tree over the commit statements one homeserver signs at once.
 *
 * A homeserver signs every batch of commits it applies with ONE Ed25519
 * signature over the root of this tree; each commit's certificate carries
 * that signature plus the commit's inclusion proof. Checking a certificate
 * then costs a few SHA-256 hashes more than checking a signature over the
 * statement itself, and the work of signing and verifying is divided by the
 * batch size. The shape follows RFC 9162 section 2.1 (Certificate
 * Transparency): leaves and inner nodes are hashed with distinct prefixes, so
 * a leaf can never pass for an inner node, and a tree of n leaves splits at
 * the largest power of two below n.
 */
import { hash } from "node:crypto";

/** Bytes of a SHA-256 hash: every leaf hash, inner hash and root. */
export const merkleHashBytes = 32;
/** Most leaves one batch may hold; bounds the proof length (at most 16 hashes) for anyone checking it. */
export const maxMerkleLeaves = 1 << 16;

function sha256(...parts: Uint8Array[]): Uint8Array {
  // One-shot over the parts joined: for inputs this small, about twice as fast as a Hash object.
  return new Uint8Array(hash("sha256", Buffer.concat(parts), "buffer"));
}

const leafPrefix = Uint8Array.of(0);
const nodePrefix = Uint8Array.of(1);

/** The hash of a leaf's content. */
export function merkleLeafHash(content: Uint8Array): Uint8Array {
  return sha256(leafPrefix, content);
}

function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(nodePrefix, left, right);
}

/**
 * All levels of the tree, leaves first, root last. An unpaired last node moves
 * up a level unchanged, which gives the same tree as RFC 9162's recursive
 * split at the largest power of two below n.
 */
function levelsOf(leafHashes: readonly Uint8Array[]): Uint8Array[][] {
  if (leafHashes.length === 0) throw new RangeError("a Merkle tree needs at least one leaf");
  const levels: Uint8Array[][] = [[...leafHashes]];
  while (levels[levels.length - 1]!.length > 1) {
    const below = levels[levels.length - 1]!;
    const level: Uint8Array[] = [];
    for (let i = 0; i < below.length; i += 2) level.push(i + 1 < below.length ? nodeHash(below[i]!, below[i + 1]!) : below[i]!);
    levels.push(level);
  }
  return levels;
}

/** A built tree: its root and every leaf's inclusion proof. */
export interface MerkleTree {
  readonly root: Uint8Array;
  /** The sibling hashes from leaf `index` up to the root, lowest first. */
  proof(index: number): Uint8Array[];
}

/** Builds the tree over `leafHashes` (at least one) in O(n) hashes. */
export function buildMerkleTree(leafHashes: readonly Uint8Array[]): MerkleTree {
  const levels = levelsOf(leafHashes);
  return {
    root: levels[levels.length - 1]![0]!,
    proof(index: number): Uint8Array[] {
      if (!Number.isInteger(index) || index < 0 || index >= leafHashes.length) throw new RangeError(`leaf ${index} is outside a tree of ${leafHashes.length}`);
      const path: Uint8Array[] = [];
      let at = index;
      for (const level of levels.slice(0, -1)) {
        const sibling = at ^ 1;
        if (sibling < level.length) path.push(level[sibling]!);
        at >>= 1;
      }
      return path;
    },
  };
}

/**
 * Recomputes the root from a leaf hash, its index among `leafCount` leaves and
 * its proof; undefined when the proof's shape does not fit that position
 * (wrong length, index out of range, a hash of the wrong size). Total: never throws.
 */
export function merkleRootFromProof(leafHash: Uint8Array, index: number, leafCount: number, proof: readonly Uint8Array[]): Uint8Array | undefined {
  if (!Number.isInteger(index) || !Number.isInteger(leafCount) || leafCount < 1 || leafCount > maxMerkleLeaves || index < 0 || index >= leafCount) return undefined;
  if (leafHash.byteLength !== merkleHashBytes || proof.some((hash) => hash.byteLength !== merkleHashBytes)) return undefined;
  let hash = leafHash;
  let at = index;
  let size = leafCount;
  let used = 0;
  while (size > 1) {
    const sibling = at ^ 1;
    if (sibling < size) {
      const next = proof[used++];
      if (next === undefined) return undefined;
      hash = (at & 1) === 0 ? nodeHash(hash, next) : nodeHash(next, hash);
    }
    at >>= 1;
    size = (size + 1) >> 1;
  }
  return used === proof.length ? hash : undefined;
}
