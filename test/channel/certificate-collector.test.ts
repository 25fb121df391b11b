/**
 * The in-memory certificate collector decides when a client's SubmitCommit is answered, so it must count
 * exactly what the log would: one signature per voter, verified, over the statement this homeserver
 * applied itself. Real Ed25519 keys; batches built the way CertificateExchange builds them.
 */
import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { batchSigningMessage, statementBytes, verifyCommitSignature } from "../../src/channel/certificate.ts";
import { buildMerkleTree, merkleLeafHash } from "../../src/channel/merkle.ts";
import type { Certificate } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { SignatureBatchSchema, type SignatureBatch } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";
import { CertificateCollector, refusedBatchesPerSignerMax, type AppliedCommit } from "../../src/node/certificate-collector.ts";

const clusterId = "test-cluster";
const ids = ["hs1", "hs2", "hs3", "hs4"];
const keys = new Map(
  ids.map((id) => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    return [id, { privateKey, raw: new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url")) }] as const;
  }),
);

function commit(channelId: string, epoch: bigint, logIndex: bigint, voters = ["hs1", "hs2", "hs3"]): AppliedCommit {
  return { channelId, epoch, commitHash: new Uint8Array(32).fill(Number(epoch)), logIndex, voters };
}

function batchBy(signer: string, commits: readonly AppliedCommit[], privateKey: KeyObject = keys.get(signer)!.privateKey): SignatureBatch {
  const statements = commits.map((c) => statementBytes(clusterId, c.channelId, c.epoch, c.commitHash, c.logIndex));
  const root = buildMerkleTree(statements.map(merkleLeafHash)).root;
  return create(SignatureBatchSchema, {
    homeserverId: signer,
    signature: new Uint8Array(sign(null, batchSigningMessage(root), privateKey)),
    statements: commits.map((c) => ({ clusterId, channelId: c.channelId, epoch: c.epoch, commitHash: c.commitHash, logIndex: c.logIndex })),
  });
}

function collector(): { collector: CertificateCollector; completed: Certificate[] } {
  const completed: Certificate[] = [];
  return { collector: new CertificateCollector(clusterId, (id) => keys.get(id)?.raw, (c) => completed.push(c)), completed };
}

describe("CertificateCollector", () => {
  it("completes a certificate at a majority of voters, once, with signatures anyone can verify", () => {
    const { collector: c, completed } = collector();
    const commits = [commit("a", 1n, 10n), commit("b", 4n, 11n), commit("c", 2n, 12n)];
    for (const x of commits) c.applied(x);
    expect(c.addBatch(batchBy("hs1", commits))).toBeUndefined();
    expect(completed).toEqual([]);
    expect(c.addBatch(batchBy("hs3", commits.slice(1)))).toBeUndefined();
    expect(completed.map((x) => x.channelId)).toEqual(["b", "c"]);
    c.addBatch(batchBy("hs2", commits));
    expect(completed.map((x) => x.channelId)).toEqual(["b", "c", "a"]);
    const certificate = c.certificate("b", 4n)!;
    expect(certificate.signatures.map((s) => s.homeserverId)).toEqual(["hs1", "hs3"]);
    const statement = statementBytes(clusterId, "b", 4n, certificate.commitHash, 11n);
    for (const s of certificate.signatures) expect(verifyCommitSignature(keys.get(s.homeserverId)!.raw, statement, s)).toBe(true);
  });

  it("leaves a peer's batch unverified while two others signed the commits before the apply, and checks it at the apply only if they are no quorum", () => {
    const { collector: c, completed } = collector();
    const three = commit("a", 1n, 10n);
    c.addBatch(batchBy("hs1", [three]));
    c.addBatch(batchBy("hs2", [three]));
    // A forged batch (hs3's name, hs4's key) is left unverified: it adds nothing a quorum needs.
    expect(c.addBatch(batchBy("hs3", [three], keys.get("hs4")!.privateKey))).toBeUndefined();
    c.applied(three);
    expect(completed.map((x) => x.signatures.map((s) => s.homeserverId))).toEqual([["hs1", "hs2"]]);
    expect(c.refusedCount()).toBe(0);
    // Of four voters (a quorum of three), the deferred batches are checked at the apply: the genuine one counts,
    // the forged one is refused.
    const four = commit("b", 2n, 11n, ["hs1", "hs2", "hs3", "hs4"]);
    c.addBatch(batchBy("hs1", [four]));
    c.addBatch(batchBy("hs2", [four]));
    c.addBatch(batchBy("hs4", [four], keys.get("hs1")!.privateKey));
    c.addBatch(batchBy("hs3", [four]));
    expect(c.refusedCount()).toBe(0);
    c.applied(four);
    expect(completed.map((x) => x.signatures.map((s) => s.homeserverId))).toEqual([["hs1", "hs2"], ["hs1", "hs2", "hs3"]]);
    expect(c.refusedCount()).toBe(1);
  });

  it("does not verify a batch that adds nothing: every certificate in it is complete already", () => {
    const { collector: c, completed } = collector();
    const commits = [commit("a", 1n, 10n), commit("b", 2n, 11n)];
    for (const x of commits) c.applied(x);
    c.addBatch(batchBy("hs1", commits));
    c.addBatch(batchBy("hs2", commits));
    expect(completed.length).toBe(2);
    // A third voter's batch, even a forged one, is dropped unchecked and changes nothing.
    const forged = batchBy("hs3", commits, keys.get("hs4")!.privateKey);
    expect(c.addBatch(forged)).toBeUndefined();
    expect(c.certificate("a", 1n)!.signatures.map((s) => s.homeserverId)).toEqual(["hs1", "hs2"]);
    // One statement still open: the whole batch is verified, and refused when forged.
    c.applied(commit("c", 3n, 12n));
    expect(c.addBatch(batchBy("hs3", [...commits, commit("c", 3n, 12n)], keys.get("hs4")!.privateKey))).toBe("bad-signature");
    expect(completed.length).toBe(2);
  });

  it("once the log recorded a certificate, a late signature for it does not start collecting it again", () => {
    const { collector: c } = collector();
    const mine = commit("a", 1n, 10n);
    c.applied(mine);
    c.addBatch(batchBy("hs1", [mine]));
    c.addBatch(batchBy("hs2", [mine]));
    c.forget("a", 1n);
    expect(c.isCollecting("a/1")).toBe(false);
    // The third voter's batch arrives after the log recorded the certificate.
    expect(c.addBatch(batchBy("hs3", [mine]))).toBeUndefined();
    c.applied(mine);
    expect(c.isCollecting("a/1")).toBe(false);
    expect(c.size()).toBe(0);
  });

  it("counts early signatures only once the same statement is applied here", () => {
    const { collector: c, completed } = collector();
    const mine = commit("a", 1n, 10n);
    c.addBatch(batchBy("hs2", [mine]));
    c.addBatch(batchBy("hs3", [{ ...mine, logIndex: 99n }])); // another log index: another statement
    expect(completed).toEqual([]);
    c.applied(mine);
    expect(completed).toEqual([]);
    c.addBatch(batchBy("hs1", [mine]));
    expect(completed.map((x) => x.signatures.map((s) => s.homeserverId))).toEqual([["hs1", "hs2"]]);
  });

  it("ignores a signature over another commit hash, a non-voter, and a second signature by the same voter", () => {
    const { collector: c, completed } = collector();
    const mine = commit("a", 1n, 10n);
    c.applied(mine);
    c.addBatch(batchBy("hs2", [{ ...mine, commitHash: new Uint8Array(32).fill(9) }]));
    c.addBatch(batchBy("hs4", [mine]));
    c.addBatch(batchBy("hs1", [mine]));
    c.addBatch(batchBy("hs1", [mine, commit("z", 3n, 11n)]));
    expect(completed).toEqual([]);
    expect(c.certificate("a", 1n)).toBeUndefined();
  });

  it("refuses a batch signed with another key, from an unknown signer, or empty, and counts none of it", () => {
    const { collector: c, completed } = collector();
    const mine = commit("a", 1n, 10n);
    c.applied(mine);
    c.addBatch(batchBy("hs1", [mine]));
    expect(c.addBatch(batchBy("hs2", [mine], keys.get("hs4")!.privateKey))).toBe("bad-signature");
    expect(c.addBatch(create(SignatureBatchSchema, { ...batchBy("hs2", [mine]), homeserverId: "hs9" }))).toBe("unknown-signer");
    expect(c.addBatch(create(SignatureBatchSchema, { homeserverId: "hs2", signature: new Uint8Array(64) }))).toBe("empty");
    const tampered = batchBy("hs2", [mine]);
    tampered.statements[0]!.epoch = 2n;
    expect(c.addBatch(tampered)).toBe("bad-signature");
    expect(completed).toEqual([]);
  });

  it("counts a batch refused for want of its signer's new key once the directory lists that key, and keeps a bounded number", () => {
    // hs2 lost its data directory and signs with a new key; this homeserver has not applied its new record yet.
    const fresh = generateKeyPairSync("ed25519");
    const freshRaw = new Uint8Array(Buffer.from(fresh.publicKey.export({ format: "jwk" }).x!, "base64url"));
    const directory = new Map([...keys].map(([id, k]) => [id, k.raw]));
    directory.delete("hs3");
    const completed: Certificate[] = [];
    const c = new CertificateCollector(clusterId, (id) => directory.get(id), (x) => completed.push(x));
    const pair = commit("pair", 5n, 20n, ["hs1", "hs2"]);
    const trio = commit("trio", 7n, 21n, ["hs1", "hs2", "hs3"]);
    c.applied(pair);
    c.applied(trio);
    c.addBatch(batchBy("hs1", [pair]));
    expect(c.addBatch(batchBy("hs2", [pair], fresh.privateKey))).toBe("bad-signature");
    // hs3, a homeserver whose record this one has not applied at all yet.
    expect(c.addBatch(batchBy("hs3", [trio]))).toBe("unknown-signer");
    expect(c.refusedCount()).toBe(2);
    // Nothing changed in the directory: nothing counts, nothing is verified again.
    c.recheckRefused();
    expect(completed).toEqual([]);
    directory.set("hs2", freshRaw);
    directory.set("hs3", keys.get("hs3")!.raw);
    c.recheckRefused();
    expect(completed.map((x) => x.channelId)).toEqual(["pair"]);
    expect(c.certificate("pair", 5n)!.signatures.map((s) => s.homeserverId)).toEqual(["hs1", "hs2"]);
    c.addBatch(batchBy("hs1", [trio]));
    expect(completed.map((x) => x.channelId)).toEqual(["pair", "trio"]);
    expect(c.refusedCount()).toBe(0);
    // Forged batches are kept only up to the bound, and count under no key.
    for (let i = 0; i < 3 * refusedBatchesPerSignerMax; i++) c.addBatch(batchBy("hs2", [commit("x", BigInt(i + 1), 30n)], keys.get("hs4")!.privateKey));
    expect(c.refusedCount()).toBe(refusedBatchesPerSignerMax);
    directory.set("hs2", keys.get("hs2")!.raw);
    c.recheckRefused();
    expect(c.refusedCount()).toBe(refusedBatchesPerSignerMax);
    expect(completed.length).toBe(2);
  });

  it("forgets recorded commits and stays within its bound", () => {
    const completed: Certificate[] = [];
    const c = new CertificateCollector(clusterId, (id) => keys.get(id)?.raw, (x) => completed.push(x), 10);
    for (let i = 0; i < 25; i++) c.applied(commit(`ch${i}`, 1n, BigInt(i)));
    expect(c.size()).toBe(10);
    expect(c.isCollecting("ch24/1")).toBe(true);
    c.forget("ch24", 1n);
    expect(c.isCollecting("ch24/1")).toBe(false);
  });
});
