/**
 * Device identity records through the real apply path of the cluster state machine on RocksDB: forged,
 * unsponsored, rolled-back and one-way-linked records are refused and change nothing; mutual links,
 * revocation and homeserver blocking behave as the rules in identity.proto say, and survive a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Device } from "../../src/client/device.ts";
import { generateInboxKeyPair, signIdentityRecord, type IdentityRecordFields } from "../../src/client/identity-record.ts";
import { DeviceIdentityRecordSchema, type DeviceIdentityRecord } from "../../src/gen/epochd/identity/v1/identity_pb.ts";
import { clusterId, MachineHarness, sponsored, testHomeserver, type TestHomeserver } from "./machine-harness.ts";

const hs1 = testHomeserver("hs1");
const hs2 = testHomeserver("hs2");
const inbox = generateInboxKeyPair().publicKeyRaw;

function fields(userName: string, sequence: bigint, extra: Partial<IdentityRecordFields> = {}): IdentityRecordFields {
  return { clusterId, userName, inboxPublicKey: inbox, sequence, createdAtMs: 1_700_000_000_000, ...extra };
}

async function dir(device: Device, userName: string, sequence: bigint, extra: Partial<IdentityRecordFields> = {}, sponsor: TestHomeserver = device.homeserver === "hs1" ? hs1 : hs2): Promise<DeviceIdentityRecord> {
  return sponsored(await signIdentityRecord(device, fields(userName, sequence, extra)), sponsor);
}

describe("device identity records", () => {
  let h: MachineHarness;
  let phone: Device;
  let laptop: Device;
  let tablet: Device;
  let bob: Device;

  beforeAll(async () => {
    h = await MachineHarness.open([hs1, hs2]);
    [phone, laptop, tablet, bob] = await Promise.all([Device.create("alice.phone@hs1"), Device.create("alice.laptop@hs1"), Device.create("alice.tablet@hs1"), Device.create("bob@hs2")]);
  });
  afterAll(async () => {
    await h?.close();
  });

  const index = () => h.machine.identity.index;
  const ids = (user: string) => index().userDevices(user).map((d) => d.body.deviceId);

  it("stores a valid first record and answers every index query", async () => {
    expect(await h.publish([await dir(phone, "alice@hs1", 1n)])).toEqual({ ok: true, kind: "published", deviceIds: ["alice.phone@hs1"] });
    expect(ids("alice@hs1")).toEqual(["alice.phone@hs1"]);
    expect(index().deviceIdByKey(phone.signatureKeyPair.publicKey)).toBe("alice.phone@hs1");
    expect(index().sponsoredBy("hs1", "", 10).map((d) => d.body.deviceId)).toEqual(["alice.phone@hs1"]);
    expect(index().currentDevice("alice.phone@hs1")).toMatchObject({ userName: "alice@hs1", homeserverId: "hs1" });
  });

  it("refuses forged and unsponsored records", async () => {
    const good = await signIdentityRecord(bob, fields("bob@hs2", 1n));
    // Signed by another device's key.
    const forgedBody = await signIdentityRecord(phone, fields("bob@hs2", 1n));
    const forged = create(DeviceIdentityRecordSchema, { body: good.body, deviceSignature: forgedBody.deviceSignature });
    expect(await h.publish([sponsored(forged, hs2)])).toMatchObject({ ok: false, code: "unauthenticated" });
    // A body changed after signing.
    const tampered = create(DeviceIdentityRecordSchema, { body: Uint8Array.from(good.body), deviceSignature: good.deviceSignature });
    tampered.body[tampered.body.length - 1]! ^= 1;
    expect(await h.publish([sponsored(tampered, hs2)])).toMatchObject({ ok: false });
    // Not sponsored, or sponsored by a homeserver that is not its own.
    expect(await h.publish([good])).toMatchObject({ ok: false, code: "unauthenticated" });
    expect(await h.publish([sponsored(good, hs1)])).toMatchObject({ ok: false, code: "unauthenticated" });
    // Sponsored by a key the directory does not know for a homeserver it does not know.
    const stranger = await Device.create("eve@hs9");
    expect(await h.publish([sponsored(await signIdentityRecord(stranger, fields("eve@hs9", 1n)), testHomeserver("hs9"))])).toMatchObject({ ok: false, code: "precondition" });
    // Names that do not match the homeserver.
    expect(await h.publish([await dir(bob, "bob@hs1", 1n)])).toMatchObject({ ok: false, code: "invalid" });
    expect(index().record("bob@hs2")).toBeUndefined();
    expect(index().record("eve@hs9")).toBeUndefined();
  });

  it("refuses rolled-back records: a lower or equal sequence", async () => {
    expect(await h.publish([await dir(bob, "bob@hs2", 5n)])).toMatchObject({ ok: true });
    expect(await h.publish([await dir(bob, "bob@hs2", 5n, { updatedAtMs: 1_700_000_000_001 })])).toMatchObject({ ok: false, code: "precondition" });
    expect(await h.publish([await dir(bob, "bob@hs2", 4n)])).toMatchObject({ ok: false, code: "precondition" });
    expect(index().record("bob@hs2")!.body.sequence).toBe(5n);
    // Two updates racing in one apply round: both passed an edge check against sequence 5; one wins.
    const [first, second] = await h.applyAll([
      (await import("../../src/identity/identity-command.ts")).encodeIdentityCommand({ command: { case: "publish", value: { records: [await dir(bob, "bob@hs2", 6n)] } } }),
      (await import("../../src/identity/identity-command.ts")).encodeIdentityCommand({ command: { case: "publish", value: { records: [await dir(bob, "bob@hs2", 6n, { updatedAtMs: 1_700_000_000_002 })] } } }),
    ]);
    expect(first).toMatchObject({ ok: true });
    expect(second).toMatchObject({ ok: false, code: "precondition" });
    expect(index().record("bob@hs2")!.body.updatedAtMs).toBe(1_700_000_000_000n);
  });

  it("keeps device ids and keys first come, first served", async () => {
    const squatter = await Device.create("bob@hs2");
    expect(await h.publish([await dir(squatter, "bob@hs2", 9n)])).toMatchObject({ ok: false, code: "permission-denied" });
    expect(Buffer.from(index().record("bob@hs2")!.body.devicePublicKey)).toEqual(Buffer.from(bob.signatureKeyPair.publicKey));
  });

  it("refuses one-way links and squatting on a user name; accepts a mutually linked pair in one publish", async () => {
    // laptop claims alice and links phone, but phone does not link back.
    expect(await h.publish([await dir(laptop, "alice@hs1", 1n, { linkedDeviceIds: ["alice.phone@hs1"] })])).toMatchObject({ ok: false, code: "precondition" });
    // laptop claims alice without any link: squatting on a user with devices.
    expect(await h.publish([await dir(laptop, "alice@hs1", 1n)])).toMatchObject({ ok: false, code: "precondition" });
    // phone links laptop, which does not exist (yet).
    expect(await h.publish([await dir(phone, "alice@hs1", 2n, { linkedDeviceIds: ["alice.laptop@hs1"] })])).toMatchObject({ ok: false, code: "precondition" });
    // A link to another user's device.
    expect(await h.publish([await dir(phone, "alice@hs1", 2n, { linkedDeviceIds: ["bob@hs2"] })])).toMatchObject({ ok: false, code: "precondition" });
    expect(ids("alice@hs1")).toEqual(["alice.phone@hs1"]);
    expect(index().record("alice.phone@hs1")!.body.sequence).toBe(1n);
    // Both records, each linking the other, in one publish.
    const pair = [await dir(laptop, "alice@hs1", 1n, { linkedDeviceIds: ["alice.phone@hs1"] }), await dir(phone, "alice@hs1", 2n, { linkedDeviceIds: ["alice.laptop@hs1"] })];
    expect(await h.publish(pair)).toMatchObject({ ok: true });
    expect(ids("alice@hs1")).toEqual(["alice.laptop@hs1", "alice.phone@hs1"]);
    // A third device must be linked by BOTH existing devices.
    const withTablet = [
      await dir(tablet, "alice@hs1", 1n, { linkedDeviceIds: ["alice.phone@hs1", "alice.laptop@hs1"] }),
      await dir(phone, "alice@hs1", 3n, { linkedDeviceIds: ["alice.laptop@hs1", "alice.tablet@hs1"] }),
    ];
    expect(await h.publish(withTablet)).toMatchObject({ ok: false, code: "precondition" });
    // Dropping a link to a live device would make it one-way: refused.
    expect(await h.publish([await dir(phone, "alice@hs1", 3n)])).toMatchObject({ ok: false, code: "precondition" });
    expect(ids("alice@hs1")).toEqual(["alice.laptop@hs1", "alice.phone@hs1"]);
  });

  it("revocation is a signed record: the device is no longer current and cannot come back", async () => {
    expect(await h.publish([await dir(laptop, "alice@hs1", 2n, { linkedDeviceIds: ["alice.phone@hs1"], revoked: true })])).toMatchObject({ ok: true });
    expect(ids("alice@hs1")).toEqual(["alice.phone@hs1"]);
    expect(index().currentDevice("alice.laptop@hs1")).toBeUndefined();
    expect(await h.publish([await dir(laptop, "alice@hs1", 3n, { linkedDeviceIds: ["alice.phone@hs1"] })])).toMatchObject({ ok: false, code: "precondition" });
    // phone may keep (or drop) its link to the revoked laptop.
    expect(await h.publish([await dir(phone, "alice@hs1", 3n)])).toMatchObject({ ok: true });
  });

  it("an operator block refuses a homeserver's records and makes its devices not current; state survives a restart", async () => {
    expect(await h.identity({ command: { case: "setBlocked", value: { homeserverId: "hs2", blocked: true } } })).toMatchObject({ ok: true, kind: "blocked" });
    expect(index().currentDevice("bob@hs2")).toBeUndefined();
    expect(ids("bob@hs2")).toEqual([]);
    expect(await h.publish([await dir(bob, "bob@hs2", 7n)])).toMatchObject({ ok: false, code: "precondition" });
    await h.restart();
    expect(index().isBlocked("hs2")).toBe(true);
    expect(ids("alice@hs1")).toEqual(["alice.phone@hs1"]);
    expect(index().record("alice.laptop@hs1")!.body.revoked).toBe(true);
    expect(index().record("bob@hs2")!.body.sequence).toBe(6n);
    expect(await h.identity({ command: { case: "setBlocked", value: { homeserverId: "hs2", blocked: false } } })).toMatchObject({ ok: true });
    expect(index().currentDevice("bob@hs2")).toBeDefined();
    expect(await h.publish([await dir(bob, "bob@hs2", 7n)])).toMatchObject({ ok: true });
  });

  it("refuses malformed commands without throwing", async () => {
    const [result] = await h.applyAll([Uint8Array.of(1, 4, 0xff, 0xff, 0xff)]);
    expect(result).toMatchObject({ ok: false, code: "invalid" });
    expect(await h.publish([])).toMatchObject({ ok: false, code: "invalid" });
    expect(await h.publish([create(DeviceIdentityRecordSchema, { body: Uint8Array.of(1, 2, 3) })])).toMatchObject({ ok: false, code: "invalid" });
  });
});
