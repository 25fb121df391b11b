/**
 * The KeyPackage directory through the real apply path of the cluster state machine on RocksDB: every
 * KeyPackage is checked with ts-mls on publish, claims need consent, hand out one KeyPackage per current
 * device, consume it, and fall back to the last resort only when the queue is empty.
 */
import { defaultCapabilities, generateKeyPackageWithKey, type KeyPackage } from "ts-mls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Device } from "../../src/client/device.ts";
import { encodeKeyPackageMessage } from "../../src/client/mls-codec.ts";
import { encodeKeyPackageCommand } from "../../src/keypackages/keypackage-command.ts";
import type { KeyPackageResult } from "../../src/keypackages/keypackage-state.ts";
import { registerUser } from "../identity/dir-fixtures.ts";
import { MachineHarness, testHomeserver } from "../identity/machine-harness.ts";

const hs1 = testHomeserver("hs1");
const hs2 = testHomeserver("hs2");
const now = Date.now();

async function keyPackageWithLifetime(device: Device, notAfterSeconds: bigint): Promise<Uint8Array> {
  const made = await generateKeyPackageWithKey(device.credential, defaultCapabilities(), { notBefore: 0n, notAfter: notAfterSeconds }, [], { ...device.signatureKeyPair }, device.impl);
  return encodeKeyPackageMessage(made.publicPackage as KeyPackage);
}

describe("KeyPackage directory", () => {
  let h: MachineHarness;
  let phone: Device;
  let laptop: Device;
  let bob: Device;
  let carol: Device;

  beforeAll(async () => {
    h = await MachineHarness.open([hs1, hs2]);
    [phone, laptop] = (await registerUser(h, "alice@hs1", ["alice.phone@hs1", "alice.laptop@hs1"], hs1)) as [Device, Device];
    [bob] = (await registerUser(h, "bob@hs2", ["bob@hs2"], hs2)) as [Device];
    [carol] = (await registerUser(h, "carol@hs2", ["carol@hs2"], hs2)) as [Device];
  });
  afterAll(async () => {
    await h?.close();
  });

  const run = async (command: Parameters<typeof encodeKeyPackageCommand>[0]): Promise<KeyPackageResult> => (await h.applyAll([encodeKeyPackageCommand(command)]))[0] as KeyPackageResult;
  const publish = (deviceId: string, keyPackages: Uint8Array[], lastResort: Uint8Array = new Uint8Array(0), nowMs = now) =>
    run({ command: { case: "publish", value: { deviceId, keyPackages, lastResort, nowMs: BigInt(nowMs) } } });
  const claim = (claimerDeviceId: string, userName: string, viaChannelId = "") =>
    run({ command: { case: "claim", value: { claimerDeviceId, userName, viaChannelId, nowMs: BigInt(now) } } });
  const stock = (deviceId: string) => h.machine.keyPackages.stock(deviceId, (k) => h.machine.keyPackageGet(k));

  it("refuses KeyPackages that are not the device's own, expired, or not KeyPackages, and stores nothing", async () => {
    const impostor = await Device.create("alice.phone@hs1"); // same id, another key: not the DIR key
    expect(await publish("alice.phone@hs1", [await impostor.publishKeyPackage()])).toMatchObject({ ok: false, code: "permission-denied" });
    expect(await publish("alice.phone@hs1", [await laptop.publishKeyPackage()])).toMatchObject({ ok: false, code: "permission-denied" });
    expect(await publish("alice.phone@hs1", [await keyPackageWithLifetime(phone, BigInt(Math.floor(now / 1000) - 10))])).toMatchObject({ ok: false, code: "invalid" });
    expect(await publish("alice.phone@hs1", [Uint8Array.of(0, 1, 0, 5, 9, 9)])).toMatchObject({ ok: false, code: "invalid" });
    const kp = await phone.publishKeyPackage();
    const tampered = new Uint8Array(kp);
    tampered[tampered.length - 5]! ^= 1;
    expect(await publish("alice.phone@hs1", [await phone.publishKeyPackage(), tampered])).toMatchObject({ ok: false, code: "invalid" });
    expect(await publish("nobody@hs1", [kp])).toMatchObject({ ok: false, code: "unauthenticated" });
    expect(await stock("alice.phone@hs1")).toEqual({ available: 0, hasLastResort: false });
  });

  it("hands out one KeyPackage per device, each once, then the last resort; consent is required", async () => {
    const phoneKps = [await phone.publishKeyPackage(), await phone.publishKeyPackage()];
    const phoneLast = await phone.publishKeyPackage();
    expect(await publish("alice.phone@hs1", phoneKps, phoneLast)).toMatchObject({ ok: true, available: 2, hasLastResort: true });
    expect(await publish("alice.laptop@hs1", [await laptop.publishKeyPackage()])).toMatchObject({ ok: true, available: 1, hasLastResort: false });
    // No shared channel, no allow list: refused and nothing consumed.
    expect(await claim("bob@hs2", "alice@hs1")).toMatchObject({ ok: false, code: "permission-denied" });
    expect((await stock("alice.phone@hs1")).available).toBe(2);
    // alice allows bob (any of her devices may set her list).
    expect(await run({ command: { case: "setAllowList", value: { deviceId: "alice.laptop@hs1", allowedUserNames: ["bob@hs2"] } } })).toMatchObject({ ok: true });
    const first = await claim("bob@hs2", "alice@hs1");
    expect(first).toMatchObject({ ok: true, kind: "claimed", missingDeviceIds: [] });
    if (!first.ok || first.kind !== "claimed") throw new Error("unreachable");
    expect(first.keyPackages.map((k) => [k.deviceId, k.lastResort])).toEqual([["alice.laptop@hs1", false], ["alice.phone@hs1", false]]);
    expect(Buffer.from(first.keyPackages[1]!.keyPackage)).toEqual(Buffer.from(phoneKps[0]!));
    const second = await claim("bob@hs2", "alice@hs1");
    expect(second).toMatchObject({ ok: true, missingDeviceIds: ["alice.laptop@hs1"], keyPackages: [{ deviceId: "alice.phone@hs1", lastResort: false }] });
    // The queue is empty: the last resort, again and again.
    for (let i = 0; i < 2; i++) {
      const later = await claim("bob@hs2", "alice@hs1");
      expect(later).toMatchObject({ ok: true, keyPackages: [{ deviceId: "alice.phone@hs1", lastResort: true }] });
      if (later.ok && later.kind === "claimed") expect(Buffer.from(later.keyPackages[0]!.keyPackage)).toEqual(Buffer.from(phoneLast));
    }
    // carol is not on the list.
    expect(await claim("carol@hs2", "alice@hs1")).toMatchObject({ ok: false, code: "permission-denied" });
    expect(await claim("carol@hs2", "nobody@hs2")).toMatchObject({ ok: false, code: "not-found" });
    // A user's own device claims its siblings' KeyPackages without consent, never its own.
    expect(await publish("alice.laptop@hs1", [await laptop.publishKeyPackage()])).toMatchObject({ ok: true });
    expect(await claim("alice.phone@hs1", "alice@hs1")).toMatchObject({ ok: true, keyPackages: [{ deviceId: "alice.laptop@hs1" }] });
  });

  it("a channel the proposing homeserver names is consent (it checked the shared channel, which only it hosts)", async () => {
    expect(await publish("carol@hs2", [await carol.publishKeyPackage()])).toMatchObject({ ok: true });
    expect(await claim("bob@hs2", "carol@hs2")).toMatchObject({ ok: false, code: "permission-denied" });
    expect(await claim("bob@hs2", "carol@hs2", "room")).toMatchObject({ ok: true, keyPackages: [{ deviceId: "carol@hs2" }] });
    void bob;
  });

  it("drops expired KeyPackages at claim time, by the proposer's stamped clock", async () => {
    const soon = BigInt(Math.floor(now / 1000) + 60);
    expect(await publish("bob@hs2", [await keyPackageWithLifetime(bob, soon), await bob.publishKeyPackage()])).toMatchObject({ ok: true, available: 2 });
    const later = await run({ command: { case: "claim", value: { claimerDeviceId: "carol@hs2", userName: "bob@hs2", viaChannelId: "room", nowMs: BigInt(now + 120_000) } } });
    expect(later).toMatchObject({ ok: true, keyPackages: [{ deviceId: "bob@hs2", lastResort: false }] });
    expect(await stock("bob@hs2")).toEqual({ available: 0, hasLastResort: false });
  });
});
