/**
 * Valid MLS traffic from real ts-mls clients is accepted by the server-side checks, with the right
 * sender, adds, removes and members, and the view the checks produce keeps tracking the clients' epochs.
 */
import { beforeAll, describe, expect, test } from "vitest";
import {
  inspectApplicationMessage,
  inspectMessage,
  inspectPrivateCommit,
  inspectWelcome,
  verifyInitialGroupInfo,
  verifyNextGroupInfo,
  verifyPublicCommit,
  verifyPublicProposal,
  type PublicGroupView,
  type Rejection,
  type VerifiedCommit,
  type VerifiedGroupInfo,
} from "../../src/mls/index.ts";
import {
  applyAcceptedCommit,
  commitAccepted,
  createTestGroup,
  epochAuthenticator,
  joinFromWelcome,
  keyPackageMessage,
  makeApplicationMessage,
  makeCommit,
  makeDevice,
  makeProposal,
  memberOf,
  processHandshake,
  readApplicationMessage,
  type PendingCommit,
  type TestGroup,
} from "../fixtures/mls-group.ts";

function expectOk<T extends { ok: true }>(result: T | Rejection): T {
  if (!result.ok) throw new Error(`expected ok, got rejection: ${result.reason}`);
  return result;
}

async function verifyBoth(view: PublicGroupView, pending: PendingCommit, accepted: readonly Uint8Array[] = []): Promise<[VerifiedCommit, VerifiedGroupInfo]> {
  const commit = expectOk(await verifyPublicCommit(view, pending.commit, accepted));
  const next = expectOk(await verifyNextGroupInfo(view, commit, pending.nextGroupInfo));
  return [commit, next];
}

function deviceIds(result: { members: readonly { deviceId: string }[] }): string[] {
  return result.members.map((m) => m.deviceId);
}

function expectSameAuthenticator(group: TestGroup): void {
  const authenticators = [...group.members.values()].map((m) => Buffer.from(epochAuthenticator(m.state)).toString("hex"));
  expect(new Set(authenticators).size).toBe(1);
  for (const m of group.members.values()) expect(m.state.groupContext.epoch).toBe(group.view.epoch);
}

describe("a channel's life, checked by the server at every step", () => {
  const group = {} as TestGroup;

  beforeAll(async () => {
    // Epoch 0: alice@hs1 creates the group; the server checks the initial GroupInfo.
    const alice = await makeDevice("alice@hs1");
    const created = await createTestGroup(alice.keyPackage);
    const initial = expectOk(await verifyInitialGroupInfo(created.state.groupContext.groupId, created.groupInfo));
    expect(deviceIds(initial)).toEqual(["alice@hs1"]);
    Object.assign(group, {
      groupId: created.state.groupContext.groupId,
      members: new Map([["alice@hs1", { device: alice.device, state: created.state }]]),
      view: initial.view,
      initialGroupInfo: created.groupInfo,
    });
  });

  test("alice adds her phone, bob@hs2 and carol@hs3 in one commit; the Welcome routes to them", async () => {
    const joiners = await Promise.all(["alice.phone@hs1", "bob@hs2", "carol@hs3"].map((id) => makeDevice(id)));
    const pending = await makeCommit(memberOf(group, "alice@hs1").state, { add: joiners.map((j) => j.keyPackage.publicPackage) });
    const [commit, next] = await verifyBoth(group.view, pending);
    expect(commit.sender).toEqual({ leafIndex: 0, deviceId: "alice@hs1", homeserver: "hs1" });
    expect(commit.adds).toEqual(["alice.phone@hs1", "bob@hs2", "carol@hs3"]);
    expect(commit.added.map((a) => a.homeserver)).toEqual(["hs1", "hs2", "hs3"]);
    expect(commit.removes).toEqual([]);
    expect(commit.epoch).toBe(0n);
    expect(next.epoch).toBe(1n);
    expect(next.members.map((m) => [m.leafIndex, m.deviceId])).toEqual([[0, "alice@hs1"], [1, "alice.phone@hs1"], [2, "bob@hs2"], [3, "carol@hs3"]]);
    const welcome = expectOk(inspectWelcome(pending.welcome ?? new Uint8Array(), commit.added.map((a) => a.keyPackageRef)));
    expect(welcome.recipients).toHaveLength(3);
    expect(welcome.byteSize).toBe(pending.welcome?.length);
    group.members.set("alice@hs1", { ...memberOf(group, "alice@hs1"), state: commitAccepted(pending) });
    for (const j of joiners) group.members.set(j.device.deviceId, { device: j.device, state: await joinFromWelcome(j.keyPackage, pending.welcome ?? new Uint8Array()) });
    group.view = next.view;
    expectSameAuthenticator(group);
  });

  test("bob's empty commit (key update) carries a path and changes no membership", async () => {
    const pending = await makeCommit(memberOf(group, "bob@hs2").state);
    const [commit, next] = await verifyBoth(group.view, pending);
    expect(commit.sender.deviceId).toBe("bob@hs2");
    expect(commit.hasPath).toBe(true);
    expect([commit.adds, commit.removes, commit.proposalRefs]).toEqual([[], [], []]);
    expect(deviceIds(next)).toEqual(["alice@hs1", "alice.phone@hs1", "bob@hs2", "carol@hs3"]);
    await applyAcceptedCommit(group, "bob@hs2", pending);
    expect(next.view).toEqual(group.view);
    expectSameAuthenticator(group);
  });

  test("carol's standalone Remove proposal is verified, and alice's commit includes it by reference", async () => {
    const proposed = await makeProposal(memberOf(group, "carol@hs3").state, { proposalType: "remove", remove: { removed: 1 } });
    const proposal = expectOk(await verifyPublicProposal(group.view, proposed.bytes));
    expect(proposal.kind).toBe("remove");
    expect(proposal.sender.deviceId).toBe("carol@hs3");
    expect(proposal.remove?.deviceId).toBe("alice.phone@hs1");
    memberOf(group, "carol@hs3").state = proposed.newState;
    for (const id of ["alice@hs1", "alice.phone@hs1", "bob@hs2"]) memberOf(group, id).state = await processHandshake(memberOf(group, id).state, proposed.bytes);
    const pending = await makeCommit(memberOf(group, "alice@hs1").state);
    const unresolved = await verifyPublicCommit(group.view, pending.commit);
    expect(unresolved.ok).toBe(false);
    const [commit, next] = await verifyBoth(group.view, pending, [proposed.bytes]);
    expect(commit.proposalRefs).toEqual([proposal.ref]);
    expect(commit.removes.map((r) => [r.leafIndex, r.deviceId])).toEqual([[1, "alice.phone@hs1"]]);
    expect(deviceIds(next)).toEqual(["alice@hs1", "bob@hs2", "carol@hs3"]);
    await applyAcceptedCommit(group, "alice@hs1", pending);
    expect([...group.members.keys()].sort()).toEqual(["alice@hs1", "bob@hs2", "carol@hs3"]);
    expectSameAuthenticator(group);
  });

  test("a standalone Add proposal names the device it adds", async () => {
    const dave = await makeDevice("dave@hs2");
    const proposed = await makeProposal(memberOf(group, "bob@hs2").state, { proposalType: "add", add: { keyPackage: dave.keyPackage.publicPackage } });
    const proposal = expectOk(await verifyPublicProposal(group.view, proposed.bytes));
    expect(proposal.kind).toBe("add");
    expect(proposal.add?.deviceId).toBe("dave@hs2");
    expect(proposal.ref).toHaveLength(32);
  });

  test("bob removes carol by value; members and epoch authenticators agree", async () => {
    // Leaves now: 0 alice, 1 blank (alice.phone was removed), 2 bob, 3 carol.
    const pending = await makeCommit(memberOf(group, "bob@hs2").state, { remove: [3] });
    const [commit, next] = await verifyBoth(group.view, pending);
    expect(commit.removes).toEqual([{ leafIndex: 3, deviceId: "carol@hs3", homeserver: "hs3" }]);
    expect(deviceIds(next)).toEqual(["alice@hs1", "bob@hs2"]);
    await applyAcceptedCommit(group, "bob@hs2", pending);
    expect([...group.members.keys()].sort()).toEqual(["alice@hs1", "bob@hs2"]);
    expectSameAuthenticator(group);
  });

  test("framing is reported for every wire format", async () => {
    const alice = memberOf(group, "alice@hs1");
    const app = await makeApplicationMessage(alice.state, "hello bob");
    alice.state = app.newState;
    const read = await readApplicationMessage(memberOf(group, "bob@hs2").state, app.bytes);
    expect(read.text).toBe("hello bob");
    memberOf(group, "bob@hs2").state = read.newState;
    expect(expectOk(inspectApplicationMessage(group.groupId, app.bytes)).epoch).toBe(group.view.epoch);
    expect(expectOk(inspectMessage(app.bytes))).toMatchObject({ wireformat: "private", contentType: "application", epoch: group.view.epoch });
    expect(expectOk(inspectMessage(group.view.groupInfo))).toMatchObject({ wireformat: "group_info", epoch: group.view.epoch });
    const kp = (await makeDevice("erin@hs3")).keyPackage.publicPackage;
    expect(expectOk(inspectMessage(keyPackageMessage(kp))).wireformat).toBe("key_package");
    const pending = await makeCommit(alice.state);
    expect(expectOk(inspectMessage(pending.commit))).toMatchObject({ wireformat: "public", contentType: "commit", senderLeafIndex: 0 });
  });

  test("encrypted handshakes: a PrivateMessage commit passes the framing check and is processable", async () => {
    const pending = await makeCommit(memberOf(group, "alice@hs1").state, { publicMessage: false });
    const framed = expectOk(inspectPrivateCommit(group.view, pending.commit));
    expect(framed.epoch).toBe(group.view.epoch);
    expect(framed.commitHash).toHaveLength(32);
    const next = await processHandshake(memberOf(group, "bob@hs2").state, pending.commit);
    expect(next.groupContext.epoch).toBe(group.view.epoch + 1n);
    expect(epochAuthenticator(next)).toEqual(epochAuthenticator(pending.newState));
  });
});
