/**
 * Everything the server-side MLS checks must refuse, each with a reason, built from real ts-mls traffic
 * (and forgeries re-signed with real keys, so "validly signed by the wrong party" is covered too).
 */
import { beforeAll, describe, expect, test } from "vitest";
import type { ClientState, FramedContent, KeyPackage, Proposal } from "ts-mls";
import {
  inspectApplicationMessage,
  inspectMessage,
  inspectPrivateCommit,
  inspectWelcome,
  maxGroupInfoBytes,
  maxMessageBytes,
  maxWelcomeBytes,
  verifyInitialGroupInfo,
  verifyNextGroupInfo,
  verifyPublicCommit,
  verifyPublicProposal,
  type PublicGroupView,
  type Rejection,
  type VerifiedCommit,
} from "../../src/mls/index.ts";
import {
  buildGroup,
  frame,
  groupInfoMessage,
  keyPackageMessage,
  makeApplicationMessage,
  makeCommit,
  makeDevice,
  makeProposal,
  memberOf,
  processHandshake,
  unframe,
  type PendingCommit,
  type TestDevice,
  type TestGroup,
} from "../fixtures/mls-group.ts";
import { flipByte, resignGroupInfo, resignPublicMessage, rewriteGroupInfo, rewritePublicMessage } from "../fixtures/mls-tamper.ts";

function expectRejected(result: { ok: boolean } | Rejection, pattern: RegExp): void {
  expect(result.ok).toBe(false);
  if (!result.ok && "reason" in result) expect(result.reason).toMatch(pattern);
}

/** A content rewrite replacing a commit's proposals with `proposals`, all by value. */
function withProposals(proposals: Proposal[]): (c: FramedContent) => FramedContent {
  return (c) =>
    c.contentType === "commit" ? { ...c, commit: { ...c.commit, proposals: proposals.map((proposal) => ({ proposalOrRefType: "proposal" as const, proposal })) } } : c;
}

describe("rejections", () => {
  let group: TestGroup;
  let view1: PublicGroupView;
  let alice: { device: TestDevice; state: ClientState };
  let bob: { device: TestDevice; state: ClientState };
  let carol: { device: TestDevice; state: ClientState };
  let byAlice: PendingCommit; // empty commit at epoch 1
  let byBob: PendingCommit; // bob removes carol at epoch 1 (a rival of byAlice)
  let byAlice2: PendingCommit; // alice's next commit, at epoch 2 after byAlice
  let view2: PublicGroupView;
  let commitA: VerifiedCommit;

  beforeAll(async () => {
    group = await buildGroup(["alice@hs1", "bob@hs2", "carol@hs3"]);
    view1 = group.view;
    alice = memberOf(group, "alice@hs1");
    bob = memberOf(group, "bob@hs2");
    carol = memberOf(group, "carol@hs3");
    byAlice = await makeCommit(alice.state);
    byBob = await makeCommit(bob.state, { remove: [2] });
    byAlice2 = await makeCommit(byAlice.newState);
    view2 = { groupId: group.groupId, epoch: 2n, groupInfo: byAlice.nextGroupInfo };
    const verified = await verifyPublicCommit(view1, byAlice.commit);
    if (!verified.ok) throw new Error(verified.reason);
    commitA = verified;
  });

  test("a commit for another group", async () => {
    const other = await buildGroup(["xavier@hs1"]);
    expectRejected(await verifyPublicCommit(other.view, byAlice.commit), /another group/);
    expectRejected(inspectPrivateCommit(other.view, (await makeCommit(alice.state, { publicMessage: false })).commit), /another group/);
  });

  test("old and future epochs, told apart", async () => {
    expectRejected(await verifyPublicCommit(view2, byBob.commit), /epoch 1, an old epoch; the channel is at epoch 2/);
    expectRejected(await verifyPublicCommit(view1, byAlice2.commit), /epoch 2, a future epoch; the channel is at epoch 1/);
    const privateOld = await makeCommit(bob.state, { publicMessage: false });
    expectRejected(inspectPrivateCommit(view2, privateOld.commit), /old epoch/);
  });

  test("a tampered signature or tampered content", async () => {
    const badSignature = rewritePublicMessage(byAlice.commit, (m) => ({ ...m, auth: { ...m.auth, signature: flipByte(m.auth.signature, 5) } }));
    expectRejected(await verifyPublicCommit(view1, badSignature), /signature does not verify/);
    const badData = rewritePublicMessage(byAlice.commit, (m) => ({ ...m, content: { ...m.content, authenticatedData: new Uint8Array([1, 2, 3]) } }));
    expectRejected(await verifyPublicCommit(view1, badData), /signature does not verify/);
    const retargeted = rewritePublicMessage(byBob.commit, (m) => (m.content.contentType === "commit" ? { ...m, content: { ...m.content, commit: { ...m.content.commit, proposals: [{ proposalOrRefType: "proposal", proposal: { proposalType: "remove", remove: { removed: 0 } } }] } } } : m));
    expectRejected(await verifyPublicCommit(view1, retargeted), /signature does not verify/);
  });

  test("a commit signed by a key not in the tree, or from a leaf that is not a member", async () => {
    const mallory = await makeDevice("mallory@hs9");
    const forged = await resignPublicMessage(byAlice.commit, mallory.device.signatureKeys.signKey, alice.state.groupContext);
    expectRejected(await verifyPublicCommit(view1, forged), /signature does not verify with the key of leaf 0/);
    const ghost = await resignPublicMessage(byAlice.commit, mallory.device.signatureKeys.signKey, alice.state.groupContext, (c) => ({ ...c, sender: { senderType: "member", leafIndex: 7 } }));
    expectRejected(await verifyPublicCommit(view1, ghost), /sender leaf 7 is not a member/);
  });

  test("a removed member cannot commit, even with its old key", async () => {
    const verified = await verifyPublicCommit(view1, byBob.commit);
    if (!verified.ok) throw new Error(verified.reason);
    const next = await verifyNextGroupInfo(view1, verified, byBob.nextGroupInfo);
    if (!next.ok) throw new Error(next.reason);
    expect(next.members.map((m) => m.deviceId)).toEqual(["alice@hs1", "bob@hs2"]);
    const stale = await makeCommit(carol.state);
    expectRejected(await verifyPublicCommit(next.view, stale.commit), /old epoch/);
    const aliceAtEpoch2 = await processHandshake(alice.state, byBob.commit);
    const forged = await resignPublicMessage(stale.commit, carol.device.signatureKeys.signKey, aliceAtEpoch2.groupContext, (c) => ({ ...c, epoch: 2n }));
    expectRejected(await verifyPublicCommit(next.view, forged), /sender leaf 2 is not a member/);
  });

  test("commits breaking MLS rules, validly signed by a member", async () => {
    const ctx = alice.state.groupContext;
    const signKey = alice.device.signatureKeys.signKey;
    const selfRemove = await resignPublicMessage(byAlice.commit, signKey, ctx, withProposals([{ proposalType: "remove", remove: { removed: 0 } }]));
    expectRejected(await verifyPublicCommit(view1, selfRemove), /committer's own leaf/);
    const twice = await resignPublicMessage(byAlice.commit, signKey, ctx, withProposals([{ proposalType: "remove", remove: { removed: 1 } }, { proposalType: "remove", remove: { removed: 1 } }]));
    expectRejected(await verifyPublicCommit(view1, twice), /removed twice/);
    const blank = await resignPublicMessage(byAlice.commit, signKey, ctx, withProposals([{ proposalType: "remove", remove: { removed: 9 } }]));
    expectRejected(await verifyPublicCommit(view1, blank), /leaf 9 is not a member/);
    const noPath = await resignPublicMessage(byAlice.commit, signKey, ctx, (c) => (c.contentType === "commit" ? { ...c, commit: { ...c.commit, path: undefined } } : c));
    expectRejected(await verifyPublicCommit(view1, noPath), /UpdatePath is required/);
    const renamed = await resignPublicMessage(byAlice.commit, signKey, ctx, (c) =>
      c.contentType === "commit" && c.commit.path !== undefined
        ? { ...c, commit: { ...c.commit, path: { ...c.commit.path, leafNode: { ...c.commit.path.leafNode, credential: { credentialType: "basic", identity: new TextEncoder().encode("admin@hs1") } } } } }
        : c,
    );
    expectRejected(await verifyPublicCommit(view1, renamed), /may not change its device identity/);
  });

  test("an Add whose KeyPackage is not a device, is forged, or uses another suite", async () => {
    const ctx = alice.state.groupContext;
    const signKey = alice.device.signatureKeys.signKey;
    const addOf = (keyPackage: KeyPackage) => withProposals([{ proposalType: "add", add: { keyPackage } }]);
    const nameless = (await makeDevice("mallory")).keyPackage.publicPackage;
    expectRejected(await verifyPublicCommit(view1, await resignPublicMessage(byAlice.commit, signKey, ctx, addOf(nameless))), /not a device id/);
    const dave = (await makeDevice("dave@hs2")).keyPackage.publicPackage;
    const forgedKp = { ...dave, leafNode: { ...dave.leafNode, credential: { credentialType: "basic" as const, identity: new TextEncoder().encode("dave@hs1") } } };
    expectRejected(await verifyPublicCommit(view1, await resignPublicMessage(byAlice.commit, signKey, ctx, addOf(forgedKp))), /signature of dave@hs1 is invalid/);
    const otherSuite = { ...dave, cipherSuite: "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519" as const };
    expectRejected(await verifyPublicCommit(view1, await resignPublicMessage(byAlice.commit, signKey, ctx, addOf(otherSuite))), /another cipher suite/);
  });

  test("a next GroupInfo for the wrong epoch, not by the committer, or not matching the commit", async () => {
    expectRejected(await verifyNextGroupInfo(view1, commitA, view1.groupInfo), /is for epoch 1, expected 2/);
    const bobsView = await groupInfoMessage(await processHandshake(bob.state, byAlice.commit));
    expectRejected(await verifyNextGroupInfo(view1, commitA, bobsView), /signed by leaf 1, not by the committer \(leaf 0\)/);
    const bobForgesAlice = await resignGroupInfo(byAlice.nextGroupInfo, bob.device.signatureKeys.signKey);
    expectRejected(await verifyNextGroupInfo(view1, commitA, bobForgesAlice), /signature does not verify/);
    expectRejected(await verifyNextGroupInfo(view1, commitA, byBob.nextGroupInfo), /not by the committer|confirmation tag/);
    const aliceKey = alice.device.signatureKeys.signKey;
    const otherTag = await resignGroupInfo(byAlice.nextGroupInfo, aliceKey, (g) => ({ ...g, confirmationTag: flipByte(g.confirmationTag, 0) }));
    expectRejected(await verifyNextGroupInfo(view1, commitA, otherTag), /confirmation tag differs/);
    const oldTree = unframe(view1.groupInfo);
    if (oldTree.wireformat !== "mls_group_info") throw new Error("unreachable");
    const treeExt = oldTree.groupInfo.extensions.filter((e) => e.extensionType === "ratchet_tree");
    const staleTree = await resignGroupInfo(byAlice.nextGroupInfo, aliceKey, (g) => ({ ...g, extensions: [...g.extensions.filter((e) => e.extensionType !== "ratchet_tree"), ...treeExt] }));
    expectRejected(await verifyNextGroupInfo(view1, commitA, staleTree), /ratchet tree is not the tree this commit produces/);
    const otherTranscript = await resignGroupInfo(byAlice.nextGroupInfo, aliceKey, (g) => ({ ...g, groupContext: { ...g.groupContext, confirmedTranscriptHash: flipByte(g.groupContext.confirmedTranscriptHash, 3) } }));
    expectRejected(await verifyNextGroupInfo(view1, commitA, otherTranscript), /group context/);
    expectRejected(await verifyNextGroupInfo(view2, commitA, byAlice2.nextGroupInfo), /verified against another view/);
  });

  test("initial GroupInfos: wrong group, not epoch 0, more than the creator, another suite", async () => {
    const solo = await buildGroup(["olga@hs2"]);
    expect((await verifyInitialGroupInfo(solo.groupId, solo.initialGroupInfo)).ok).toBe(true);
    expectRejected(await verifyInitialGroupInfo(group.groupId, solo.initialGroupInfo), /another group/);
    expectRejected(await verifyInitialGroupInfo(group.groupId, view1.groupInfo), /epoch 1, a new channel starts at epoch 0/);
    const olga = memberOf(solo, "olga@hs2").device.signatureKeys.signKey;
    const suite3 = await resignGroupInfo(solo.initialGroupInfo, olga, (g) => ({ ...g, groupContext: { ...g.groupContext, cipherSuite: "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519" } }));
    expectRejected(await verifyInitialGroupInfo(solo.groupId, suite3), /cipher suite/);
    const wrongTreeHash = await resignGroupInfo(solo.initialGroupInfo, olga, (g) => ({ ...g, groupContext: { ...g.groupContext, treeHash: flipByte(g.groupContext.treeHash, 1) } }));
    expectRejected(await verifyInitialGroupInfo(solo.groupId, wrongTreeHash), /ratchet tree is invalid/);
    const unsigned = rewriteGroupInfo(solo.initialGroupInfo, (g) => ({ ...g, signature: flipByte(g.signature, 2) }));
    expectRejected(await verifyInitialGroupInfo(solo.groupId, unsigned), /signature does not verify/);
  });

  test("oversized, empty, truncated and trailing-byte inputs", async () => {
    const big = (n: number) => new Uint8Array(n + 1);
    expectRejected(await verifyPublicCommit(view1, big(maxMessageBytes)), /exceeds the limit/);
    expectRejected(await verifyPublicProposal(view1, big(maxMessageBytes)), /exceeds the limit/);
    expectRejected(await verifyNextGroupInfo(view1, commitA, big(maxGroupInfoBytes)), /exceeds the limit/);
    expectRejected(await verifyInitialGroupInfo(group.groupId, big(maxGroupInfoBytes)), /exceeds the limit/);
    expectRejected(inspectWelcome(big(maxWelcomeBytes)), /exceeds the limit/);
    expectRejected(inspectApplicationMessage(group.groupId, big(maxMessageBytes)), /exceeds the limit/);
    expectRejected(inspectMessage(big(maxGroupInfoBytes)), /exceeds the limit/);
    expectRejected(await verifyPublicCommit(view1, new Uint8Array()), /empty/);
    expectRejected(await verifyPublicCommit(view1, byAlice.commit.subarray(0, byAlice.commit.length - 1)), /not a decodable/);
    const trailing = new Uint8Array([...byAlice.commit, 0]);
    expectRejected(await verifyPublicCommit(view1, trailing), /1 trailing bytes/);
  });

  test("a PrivateMessage where a PublicMessage is required, and vice versa; wrong content types", async () => {
    const privateCommit = await makeCommit(alice.state, { publicMessage: false });
    expectRejected(await verifyPublicCommit(view1, privateCommit.commit), /PrivateMessage where this channel requires a PublicMessage/);
    const app = await makeApplicationMessage(alice.state, "hi");
    expectRejected(await verifyPublicProposal(view1, app.bytes), /PrivateMessage/);
    expectRejected(inspectPrivateCommit(view1, byAlice.commit), /PublicMessage where a PrivateMessage is required/);
    expectRejected(inspectApplicationMessage(group.groupId, byAlice.commit), /PublicMessage/);
    expectRejected(inspectApplicationMessage(group.groupId, privateCommit.commit), /content type is commit/);
    expectRejected(inspectPrivateCommit(view1, app.bytes), /content type is application/);
    const proposal = await makeProposal(alice.state, { proposalType: "remove", remove: { removed: 2 } });
    expectRejected(await verifyPublicCommit(view1, proposal.bytes), /content type is proposal/);
    expectRejected(await verifyPublicProposal(view1, byAlice.commit), /content type is commit/);
    expectRejected(await verifyPublicCommit(view1, view1.groupInfo), /mls_group_info is not a PublicMessage/);
  });

  test("Welcomes: another suite, recipients not the commit's adds", async () => {
    const erin = await makeDevice("erin@hs3");
    const adding = await makeCommit(alice.state, { add: [erin.keyPackage.publicPackage] });
    const welcomeBytes = adding.welcome ?? new Uint8Array();
    const message = unframe(welcomeBytes);
    if (message.wireformat !== "mls_welcome") throw new Error("unreachable");
    const suite3 = frame({ wireformat: "mls_welcome", welcome: { ...message.welcome, cipherSuite: "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519" } });
    expectRejected(inspectWelcome(suite3), /cipher suite/);
    expectRejected(inspectWelcome(welcomeBytes, [new Uint8Array(32)]), /not the devices the commit adds/);
    expectRejected(inspectWelcome(keyPackageMessage(erin.keyPackage.publicPackage)), /not a Welcome/);
  });
});
