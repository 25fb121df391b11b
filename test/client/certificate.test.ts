import { createHash, sign, type KeyObject } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { importEd25519PublicKey, majorityOf, signedStatementBytes, verifyCertificate, verifyUnderDirectory, type ExpectedCommit } from "../../src/client/certificate.ts";
import { SignatureSchema, type Certificate } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { directoryOf, makeHomeservers, signCertificate, type TestHomeserver } from "./homeserver-keys.ts";

const homeservers = makeHomeservers(["hs1", "hs2", "hs3", "hs4", "hs5"]);
const directory = directoryOf(homeservers);
const hs = (id: string): TestHomeserver => homeservers.get(id)!;
const commitHash = new Uint8Array(createHash("sha256").update("commit bytes").digest());
const expected: ExpectedCommit = { clusterId: "cluster-a", channelId: "room-1", epoch: 7n, commitHash };
const statement = { ...expected, logIndex: 42n };
const voters3 = ["hs1", "hs2", "hs3"];

function reasonOf(cert: Certificate, voters: readonly string[] = voters3, exp: ExpectedCommit = expected): string {
  const verdict = verifyCertificate(cert, exp, voters, directory);
  return verdict.ok ? "ok" : verdict.reason;
}

describe("verifyCertificate", () => {
  it("accepts a majority of the channel's homeservers, in any order, and all of them", () => {
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs3"), hs("hs1")]))).toBe("ok");
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs1"), hs("hs2"), hs("hs3")]))).toBe("ok");
    expect(reasonOf(signCertificate(statement, ["hs1"], [hs("hs1")]), ["hs1"])).toBe("ok");
    // Voter order in the certificate does not matter; it is a set.
    expect(reasonOf(signCertificate(statement, ["hs3", "hs1", "hs2"], [hs("hs2"), hs("hs3")]))).toBe("ok");
  });

  it("refuses too few signatures, marking the certificate incomplete (and only then)", () => {
    expect(verifyCertificate(signCertificate(statement, voters3, [hs("hs2")]), expected, voters3, directory)).toEqual({ ok: false, reason: "certificate has 1 valid signatures, needs 2 of 3 voters", incomplete: true });
    const nonVoter = verifyCertificate(signCertificate(statement, voters3, [hs("hs4")]), expected, voters3, directory);
    expect(nonVoter.ok === false && nonVoter.incomplete).toBeFalsy();
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs1")]))).toMatch(/1 valid signatures, needs 2 of 3/);
    expect(reasonOf(signCertificate(statement, voters3, []))).toMatch(/0 valid signatures/);
    const five = ["hs1", "hs2", "hs3", "hs4", "hs5"];
    expect(reasonOf(signCertificate(statement, five, [hs("hs1"), hs("hs2")]), five)).toMatch(/needs 3 of 5/);
    expect(reasonOf(signCertificate(statement, ["hs1", "hs2"], [hs("hs1")]), ["hs1", "hs2"])).toMatch(/needs 2 of 2/);
  });

  it("computes the majority as floor(n/2)+1", () => {
    expect([1, 2, 3, 4, 5, 6].map(majorityOf)).toEqual([1, 2, 2, 3, 3, 4]);
  });

  it("refuses a signature from a homeserver outside the channel, even with a quorum besides", () => {
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs1"), hs("hs4")]))).toMatch(/hs4.*not a homeserver of the channel/);
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs1"), hs("hs2"), hs("hs4")]))).toMatch(/hs4.*not a homeserver of the channel/);
  });

  it("refuses a duplicated signer (the same homeserver counted twice)", () => {
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs1"), hs("hs1")]))).toMatch(/two signatures by "hs1"/);
  });

  it("refuses signatures over another epoch, hash, channel, cluster or log index", () => {
    const otherHash = new Uint8Array(createHash("sha256").update("another commit").digest());
    const signers = [hs("hs1"), hs("hs2")];
    // The certificate honestly names what was signed, which is not what the client applies.
    expect(reasonOf(signCertificate({ ...statement, epoch: 8n }, voters3, signers))).toMatch(/epoch 8, expected 7/);
    expect(reasonOf(signCertificate({ ...statement, commitHash: otherHash }, voters3, signers))).toMatch(/commit hash differs/);
    expect(reasonOf(signCertificate({ ...statement, channelId: "room-2" }, voters3, signers))).toMatch(/channel "room-2"/);
    expect(reasonOf(signCertificate({ ...statement, clusterId: "cluster-b" }, voters3, signers))).toMatch(/cluster "cluster-b"/);
    // The certificate claims the expected fields, but the signatures cover another epoch / hash / log index.
    for (const signedInstead of [{ epoch: 6n }, { commitHash: otherHash }, { logIndex: 43n }, { channelId: "room-2" }]) {
      const forged = signCertificate({ ...statement, ...signedInstead }, voters3, signers);
      const relabelled = { ...forged, epoch: statement.epoch, commitHash: statement.commitHash, logIndex: statement.logIndex, channelId: statement.channelId };
      expect(reasonOf(relabelled)).toMatch(/does not verify/);
    }
  });

  it("refuses a bad signature: flipped bit, wrong key, wrong length", () => {
    const good = signCertificate(statement, voters3, [hs("hs1"), hs("hs2")]);
    const flipped = good.signatures[1]!.signature.slice();
    flipped[10]! ^= 0x01;
    expect(reasonOf({ ...good, signatures: [good.signatures[0]!, { ...good.signatures[1]!, signature: flipped }] })).toMatch(/"hs2" does not verify/);
    // hs3's key signs but the signature is labelled hs2.
    const byHs3 = signCertificate(statement, voters3, [hs("hs3")]).signatures[0]!;
    const mislabelled = create(SignatureSchema, { ...byHs3, homeserverId: "hs2" });
    expect(reasonOf({ ...good, signatures: [good.signatures[0]!, mislabelled] })).toMatch(/"hs2" does not verify/);
    // A signature over the bare statement (no batch root, no domain prefix) is not a certificate signature.
    const bare = new Uint8Array(sign(null, signedStatementBytes(statement), hs("hs2").privateKey));
    expect(reasonOf({ ...good, signatures: [good.signatures[0]!, create(SignatureSchema, { homeserverId: "hs2", signature: bare, leafIndex: 0, leafCount: 1 })] })).toMatch(/"hs2" does not verify/);
    // The right signature with a proof for another position, or a cut proof.
    expect(reasonOf({ ...good, signatures: [good.signatures[0]!, { ...good.signatures[1]!, leafIndex: 0 }] })).toMatch(/"hs2" does not verify/);
    expect(reasonOf({ ...good, signatures: [good.signatures[0]!, { ...good.signatures[1]!, proof: good.signatures[1]!.proof.slice(1) }] })).toMatch(/"hs2" has a Merkle proof that does not fit/);
    expect(reasonOf({ ...good, signatures: [good.signatures[0]!, { ...good.signatures[1]!, signature: flipped.subarray(0, 63) }] })).toMatch(/not 64 bytes/);
  });

  it("refuses voters that differ from the homeservers of the client's own tree", () => {
    // The certificate claims a 1-voter channel that only hs1 signed; the client knows 3 homeservers.
    expect(reasonOf(signCertificate(statement, ["hs1"], [hs("hs1")]))).toMatch(/voters \[hs1\] differ/);
    // A superset: 5 voters with 3 signatures would be a majority of 5 but the client knows 3.
    expect(reasonOf(signCertificate(statement, ["hs1", "hs2", "hs3", "hs4", "hs5"], [hs("hs1"), hs("hs4"), hs("hs5")]))).toMatch(/differ/);
    expect(reasonOf(signCertificate(statement, ["hs1", "hs2", "hs4"], [hs("hs1"), hs("hs2")]))).toMatch(/differ/);
    expect(reasonOf(signCertificate(statement, ["hs1", "hs2", "hs2"], [hs("hs1"), hs("hs2")]))).toMatch(/voter twice/);
    expect(reasonOf(signCertificate(statement, voters3, [hs("hs1"), hs("hs2")]), [])).toMatch(/knows no voters/);
  });

  it("refuses a voter with no directory key", () => {
    const partial = new Map([...directory].filter(([id]) => id !== "hs2"));
    const verdict = verifyCertificate(signCertificate(statement, voters3, [hs("hs1"), hs("hs2")]), expected, voters3, partial);
    expect(verdict).toEqual({ ok: false, reason: 'no directory key for homeserver "hs2"', keyFault: true });
  });

  it("looks at the directory once more when a key is missing or a signature fails under the listed key, and refuses what still fails", async () => {
    // hs2 lost its data directory and signs with a new key; the client fetched the directory before.
    const renewed = makeHomeservers(["hs2"]).get("hs2")!;
    const fresh = new Map([...directory, ["hs2", importEd25519PublicKey(renewed.rawPublicKey)]]);
    const fetches: boolean[] = [];
    const source = (stale: ReadonlyMap<string, KeyObject>) => async (refresh: boolean) => {
      fetches.push(refresh);
      return { clusterId: expected.clusterId, keys: refresh ? fresh : stale };
    };
    const byRenewed = signCertificate(statement, voters3, [hs("hs1"), renewed]);
    const { clusterId: _, ...commit } = expected;
    expect(verifyCertificate(byRenewed, expected, voters3, directory)).toMatchObject({ ok: false, keyFault: true });
    expect(await verifyUnderDirectory(byRenewed, commit, voters3, source(directory))).toEqual({ ok: true });
    expect(fetches).toEqual([false, true]);
    // A voter the cached directory does not list yet.
    fetches.length = 0;
    expect(await verifyUnderDirectory(byRenewed, commit, voters3, source(new Map([...directory].filter(([id]) => id !== "hs2"))))).toEqual({ ok: true });
    expect(fetches).toEqual([false, true]);
    // Valid under the cached directory: no second fetch.
    fetches.length = 0;
    expect(await verifyUnderDirectory(signCertificate(statement, voters3, [hs("hs1"), hs("hs3")]), commit, voters3, source(directory))).toEqual({ ok: true });
    expect(fetches).toEqual([false]);
    // A signature under neither key, and faults a fresh directory cannot mend, are refused.
    fetches.length = 0;
    const forged = signCertificate(statement, voters3, [hs("hs1"), { ...hs("hs4"), id: "hs2" }]);
    expect(await verifyUnderDirectory(forged, commit, voters3, source(directory))).toMatchObject({ ok: false, reason: expect.stringMatching(/"hs2" does not verify/) });
    expect(fetches).toEqual([false, true]);
    fetches.length = 0;
    expect(await verifyUnderDirectory(signCertificate(statement, voters3, [hs("hs1")]), commit, voters3, source(directory))).toMatchObject({ ok: false, incomplete: true });
    expect(await verifyUnderDirectory(signCertificate({ ...statement, epoch: 8n }, voters3, [hs("hs1"), hs("hs2")]), commit, voters3, source(directory))).toMatchObject({ ok: false, reason: expect.stringMatching(/epoch 8/) });
    expect(fetches).toEqual([false, false]);
  });

  it("imports only 32-byte raw keys", () => {
    expect(() => importEd25519PublicKey(new Uint8Array(31))).toThrow(/32 bytes/);
    expect(importEd25519PublicKey(hs("hs1").rawPublicKey).asymmetricKeyType).toBe("ed25519");
  });
});
