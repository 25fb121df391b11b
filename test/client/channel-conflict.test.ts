/**
 * The SDK's conflict/retry logic with real ts-mls devices, against InMemoryOrderingStandIn (the ordering
 * rule only; no server). Rival commits built from the same state: the loser processes the winner from its
 * kept base state, rebuilds its intent on the new epoch and resubmits; everybody converges.
 */
import { describe, expect, it } from "vitest";
import { CertificatePendingError, Channel, type ChannelOptions } from "../../src/client/channel.ts";
import { Device } from "../../src/client/device.ts";
import { toHex } from "../../src/client/mls-codec.ts";
import { CertificateError, NotAMemberError } from "../../src/client/transport.ts";
import { InMemoryOrderingStandIn } from "./in-memory-ordering-stand-in.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const decode = (b: Uint8Array): string => new TextDecoder().decode(b);

async function messagesOf(channel: Channel): Promise<string[]> {
  return (await channel.sync()).flatMap((r) => (r.kind === "message" ? [decode(r.data)] : []));
}

/** Alice (hs1) creates a channel and adds Bob (hs2) and Carol (hs3); everybody joined. */
async function threeMembers(cluster: InMemoryOrderingStandIn, channelId: string, options: ChannelOptions = {}) {
  const [aliceDevice, bobDevice, carolDevice] = await Promise.all(["alice@hs1", "bob@hs2", "carol@hs3"].map((id) => Device.create(id)));
  const alice = await Channel.create(aliceDevice!, cluster, channelId, options);
  const added = await alice.addMembers([await bobDevice!.publishKeyPackage(), await carolDevice!.publishKeyPackage()]);
  expect(added.attempts).toBe(1);
  expect(added.certificate?.voters).toEqual(["hs1"]);
  const bob = await Channel.join(bobDevice!, cluster, channelId, added.welcome!, options);
  const carol = await Channel.join(carolDevice!, cluster, channelId, added.welcome!, options);
  return { alice, bob, carol };
}

function expectConverged(channels: Channel[]): void {
  const epochs = new Set(channels.map((c) => c.epoch()));
  const authenticators = new Set(channels.map((c) => toHex(c.epochAuthenticator())));
  expect(epochs.size).toBe(1);
  expect(authenticators.size).toBe(1);
}

describe("Channel against the in-memory ordering stand-in", () => {
  it("rival key updates from the same epoch: one wins, the loser processes the winner from its kept state and retries", async () => {
    const cluster = new InMemoryOrderingStandIn();
    const { alice, bob, carol } = await threeMembers(cluster, "race");
    await alice.send(text("hello from alice"));
    expect(await messagesOf(bob)).toEqual(["hello from alice"]);
    expect(await messagesOf(carol)).toEqual(["hello from alice"]);
    expect(bob.epoch()).toBe(1n);

    cluster.holdNextCommits(2);
    const [bobOutcome, carolOutcome] = await Promise.all([bob.updateKeys(), carol.updateKeys()]);
    expect([bobOutcome.attempts, carolOutcome.attempts].sort()).toEqual([1, 2]);
    // Both commits of the loser are accepted in the end: epoch 1 -> 2 (winner) -> 3 (loser's rebuilt commit).
    expect(bobOutcome.epoch === 3n || carolOutcome.epoch === 3n).toBe(true);
    expect(cluster.submissions.filter((s) => !s.accepted)).toHaveLength(1);
    const acceptedEpochs = cluster.submissions.filter((s) => s.accepted).map((s) => s.epoch);
    expect(new Set(acceptedEpochs).size).toBe(acceptedEpochs.length);
    for (const c of [alice, bob, carol]) await c.sync();
    expect(alice.epoch()).toBe(3n);
    expectConverged([alice, bob, carol]);

    // Messages still flow both ways after the race.
    await carol.send(text("carol after the race"));
    await bob.send(text("bob after the race"));
    expect(await messagesOf(alice)).toEqual(["carol after the race", "bob after the race"]);
    expect(await messagesOf(bob)).toEqual(["carol after the race"]);
  });

  it("rival adds of the same device: the loser finds its intent already achieved and commits nothing", async () => {
    const cluster = new InMemoryOrderingStandIn();
    const { alice, bob, carol } = await threeMembers(cluster, "rival-adds");
    const dave = await Device.create("dave@hs2");
    const daveKeyPackage = await dave.publishKeyPackage();
    cluster.holdNextCommits(2);
    const outcomes = await Promise.all([bob.addMembers([daveKeyPackage]), carol.addMembers([daveKeyPackage])]);
    const winner = outcomes.find((o) => o.certificate !== undefined)!;
    const loser = outcomes.find((o) => o.certificate === undefined)!;
    expect(winner.attempts).toBe(1);
    expect(loser.attempts).toBe(1);
    expect(loser.welcome).toBeUndefined();
    const daveChannel = await Channel.join(dave, cluster, "rival-adds", winner.welcome!);
    await alice.sync();
    expectConverged([alice, bob, carol, daveChannel]);
    expect(daveChannel.members().map((m) => m.deviceId).sort()).toEqual(["alice@hs1", "bob@hs2", "carol@hs3", "dave@hs2"]);
  });

  it("remove racing a key update: both outcomes converge, and a removed device cannot commit", async () => {
    const cluster = new InMemoryOrderingStandIn();
    const { alice, bob, carol } = await threeMembers(cluster, "remove-race");
    cluster.holdNextCommits(2);
    const [removal, update] = await Promise.allSettled([bob.removeMembers(["carol@hs3"]), carol.updateKeys()]);
    expect(removal.status).toBe("fulfilled");
    if (update.status === "rejected") expect(update.reason).toBeInstanceOf(NotAMemberError);
    await alice.sync();
    await carol.sync();
    expect(carol.isMember()).toBe(false);
    expect(alice.members().map((m) => m.deviceId)).toEqual(["alice@hs1", "bob@hs2"]);
    expectConverged([alice, bob]);
    await expect(carol.updateKeys()).rejects.toBeInstanceOf(NotAMemberError);
    // Carol's homeserver no longer votes: the next certificate is over hs1 and hs2 only.
    const next = await alice.updateKeys();
    expect(next.certificate?.voters).toEqual(["hs1", "hs2"]);
  });

  it("a device several epochs behind catches up through the event log before it commits, messages included", async () => {
    const cluster = new InMemoryOrderingStandIn();
    const { alice, bob, carol } = await threeMembers(cluster, "behind");
    await alice.updateKeys();
    await alice.send(text("in epoch 2"));
    await alice.updateKeys();
    expect(cluster.epochOf("behind")).toBe(3n);
    // Bob reads the log (two commits and a message) before committing: no wasted attempt.
    const outcome = await bob.updateKeys();
    expect(outcome.attempts).toBe(1);
    expect(outcome.epoch).toBe(4n);
    expect(await messagesOf(bob)).toEqual(["in epoch 2"]);
    await alice.sync();
    await carol.sync();
    expectConverged([alice, bob, carol]);
  });

  it("an own commit whose answer was lost is recognized later, from the event log or as a conflict's winner", async () => {
    const cluster = new InMemoryOrderingStandIn();
    const { alice, bob, carol } = await threeMembers(cluster, "lost-answer");
    cluster.loseNextAnswer = true;
    await expect(alice.updateKeys()).rejects.toThrow(/answer was lost/);
    expect(alice.epoch()).toBe(1n);
    expect(cluster.epochOf("lost-answer")).toBe(2n);
    await alice.sync();
    expect(alice.epoch()).toBe(2n);
    await bob.sync();
    expectConverged([alice, bob]);

    cluster.loseNextAnswer = true;
    await expect(bob.updateKeys()).rejects.toThrow(/answer was lost/);
    // Bob tries again: the log shows his own earlier commit, which he adopts before committing anew.
    const retried = await bob.updateKeys();
    expect(retried.attempts).toBe(1);
    expect(retried.epoch).toBe(4n);
    for (const c of [alice, carol]) await c.sync();
    expectConverged([alice, bob, carol]);
  });

  it("never applies a commit without a valid certificate (too few signers, forged voters)", async () => {
    const cluster = new InMemoryOrderingStandIn();
    const quick = { certificateWaitMs: 60 };
    const { alice, bob } = await threeMembers(cluster, "refuse", quick);
    const before = toHex(bob.epochAuthenticator());
    cluster.signerPolicy = (voters, all) => ({ voters: [...voters], signers: [all.get(voters[0]!)!] });
    // Alice's own accepted commit has 1 of 3 signatures and never gets more: she does not adopt it.
    await expect(alice.updateKeys()).rejects.toBeInstanceOf(CertificatePendingError);
    expect(alice.epoch()).toBe(1n);
    // Bob stops before the under-signed commit (it may still be gathering signatures) and applies nothing.
    const received = await bob.sync();
    expect(received.map((r) => r.kind)).toEqual(["pending"]);
    expect(received[0]!.kind === "pending" && received[0]!.reason).toMatch(/1 valid signatures, needs 2 of 3/);
    expect(bob.epoch()).toBe(1n);
    expect(toHex(bob.epochAuthenticator())).toBe(before);

    // Voters claimed as just [hs1] (a one-homeserver channel) with hs1's signature: refused outright.
    const cluster2 = new InMemoryOrderingStandIn();
    const three = await threeMembers(cluster2, "refuse-2", quick);
    cluster2.signerPolicy = (_voters, all) => ({ voters: ["hs1"], signers: [all.get("hs1")!] });
    await expect(three.alice.updateKeys()).rejects.toThrow(/voters \[hs1\] differ/);
    await expect(three.carol.sync()).rejects.toBeInstanceOf(CertificateError);
    expect(three.carol.epoch()).toBe(1n);

    // A signature by a homeserver outside the channel: refused outright.
    const cluster3 = new InMemoryOrderingStandIn();
    const pair = await threeMembers(cluster3, "refuse-3", quick);
    await pair.alice.removeMembers(["carol@hs3"]);
    await pair.bob.sync();
    cluster3.signerPolicy = (voters, all) => ({ voters: [...voters], signers: [all.get("hs1")!, all.get("hs3")!] });
    await expect(pair.alice.updateKeys()).rejects.toThrow(/"hs3", which is not a homeserver of the channel/);
    await expect(pair.bob.sync()).rejects.toThrow(/not a homeserver of the channel/);
    expect(pair.bob.epoch()).toBe(2n);
  });
});
