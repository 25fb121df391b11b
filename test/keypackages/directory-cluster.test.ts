/**
 * End to end on 3 real homeserver processes (mutual TLS, RocksDB): devices publish their DIRs at their own
 * homeserver (leader or not), log in, publish and claim KeyPackages; unauthenticated and cross-device
 * requests are refused and change nothing; 64 concurrent claims never get the same KeyPackage; an
 * operator block logs a homeserver's devices out.
 */
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unaryClient } from "../../src/api/grpc-service.ts";
import { callUnary } from "../../src/client/authed-call.ts";
import { Device } from "../../src/client/device.ts";
import { DirectoryClient } from "../../src/client/directory-client.ts";
import { generateInboxKeyPair, signIdentityRecord } from "../../src/client/identity-record.ts";
import { ChannelService } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { IdentityService } from "../../src/gen/epochd/identity/v1/identity_pb.ts";
import { KeyPackageService } from "../../src/gen/epochd/keypackage/v1/keypackage_pb.ts";
import { ProcessCluster } from "../integration/process-cluster.ts";

const tlsOptions = { "grpc.ssl_target_name_override": "localhost" };
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("identity and KeyPackages on a real 3-homeserver cluster", () => {
  let cluster: ProcessCluster;
  let clusterId: string;
  let keys: Map<string, Uint8Array>;
  const clients: DirectoryClient[] = [];

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3);
    cluster.startAll();
    const leader = await cluster.waitForLeader();
    const channels = unaryClient(ChannelService, cluster.get(leader).clientAddress, cluster.clientCredentials(), tlsOptions);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const directory = await channels.listHomeservers({});
      keys = new Map(directory.homeservers.filter((h) => h.signingKey.byteLength === 32).map((h) => [h.homeserverId, h.signingKey]));
      clusterId = directory.clusterId;
      if (keys.size === 3 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    channels.close();
    expect(keys.size).toBe(3);
  }, 60_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    await cluster?.close();
  });

  /** A device with a published DIR and a DirectoryClient at its own homeserver. */
  async function enroll(deviceId: string): Promise<{ device: Device; client: DirectoryClient }> {
    const device = await Device.create(deviceId);
    const client = new DirectoryClient({ deviceId, sign: (m) => device.sign(m), address: cluster.get(device.homeserver).clientAddress, credentials: cluster.clientCredentials(), channelOptions: tlsOptions });
    clients.push(client);
    const record = await signIdentityRecord(device, { clusterId, userName: deviceId, inboxPublicKey: generateInboxKeyPair().publicKeyRaw, sequence: 1n, createdAtMs: Date.now() });
    const [sponsored] = await client.publishIdentity([record]);
    expect(sponsored!.sponsorSignature.byteLength).toBe(64);
    return { device, client };
  }

  it("refuses unauthenticated and cross-device requests, hands out each KeyPackage once under 64 concurrent claims, and blocks", async () => {
    const alice = await enroll("alice@hs1");
    const bob = await enroll("bob@hs2");
    // Any device of the cluster verifies alice's record with the directory keys.
    const [aliceBody] = await bob.client.userDevices("alice@hs1", clusterId, keys);
    expect(Buffer.from(aliceBody!.devicePublicKey)).toEqual(Buffer.from(alice.device.signatureKeyPair.publicKey));
    // A second record claiming alice@hs1 with another key: refused at its homeserver.
    const squatter = await Device.create("alice@hs1");
    const squat = await signIdentityRecord(squatter, { clusterId, userName: "alice@hs1", inboxPublicKey: generateInboxKeyPair().publicKeyRaw, sequence: 2n, createdAtMs: Number(aliceBody!.createdAtMs) });
    await expect(alice.client.publishIdentity([squat])).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });

    // No token: UNAUTHENTICATED, nothing stored.
    const raw = new grpc.Client(cluster.get("hs1").clientAddress, cluster.clientCredentials(), tlsOptions);
    const aliceKp = await alice.device.publishKeyPackage();
    await expect(callUnary(raw, KeyPackageService.method.publishKeyPackages, { keyPackages: [aliceKp] }, new grpc.Metadata(), 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(callUnary(raw, IdentityService.method.listUserDevices, { userName: "alice@hs1" }, new grpc.Metadata(), 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    raw.close();
    // bob publishing alice's KeyPackage: PERMISSION_DENIED, and neither stock changes.
    await expect(bob.client.publishKeyPackages([aliceKp])).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await bob.client.countKeyPackages()).toMatchObject({ available: 0, hasLastResort: false });
    expect(await alice.client.countKeyPackages()).toMatchObject({ available: 0, hasLastResort: false });

    const published = await Promise.all(Array.from({ length: 40 }, () => alice.device.publishKeyPackage()));
    const lastResort = await alice.device.publishKeyPackage();
    expect(await alice.client.publishKeyPackages(published, lastResort)).toMatchObject({ available: 40, hasLastResort: true });
    // No consent yet: PERMISSION_DENIED, nothing consumed.
    await expect(bob.client.claimKeyPackages("alice@hs1")).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await alice.client.countKeyPackages()).toMatchObject({ available: 40 });

    const claimers = await Promise.all(Array.from({ length: 8 }, (_, i) => enroll(`c${i}@hs${(i % 3) + 1}`)));
    await alice.client.setClaimAllowList(["bob@hs2", ...claimers.map((_, i) => `c${i}@hs${(i % 3) + 1}`)]);
    const claims = await Promise.all(claimers.flatMap((c) => Array.from({ length: 8 }, () => c.client.claimKeyPackages("alice@hs1"))));
    const handed = claims.map((c) => c.keyPackages[0]!);
    const oneTime = handed.filter((k) => !k.lastResort).map((k) => hex(k.keyPackage));
    expect(oneTime.length).toBe(40);
    expect(new Set(oneTime).size).toBe(40);
    expect(new Set(oneTime)).toEqual(new Set(published.map(hex)));
    expect(handed.filter((k) => k.lastResort).every((k) => hex(k.keyPackage) === hex(lastResort))).toBe(true);
    expect(await alice.client.countKeyPackages()).toMatchObject({ available: 0, hasLastResort: true });

    // The operator blocks hs2: bob's token stops working, his homeserver's records are refused.
    expect(await bob.client.countKeyPackages()).toBeDefined();
    const admin = cluster.admin(await cluster.waitForLeader());
    await admin.setHomeserverBlocked({ homeserverId: "hs2", blocked: true });
    admin.close();
    const deadline = Date.now() + 5000;
    let status: number | undefined;
    while (Date.now() < deadline) {
      status = await bob.client.countKeyPackages().then(() => undefined, (e: { code?: number }) => e.code);
      if (status !== undefined) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(status).toBe(grpc.status.UNAUTHENTICATED);
    const bob2 = await Device.create("bob.tablet@hs2");
    const bobTablet = await signIdentityRecord(bob2, { clusterId, userName: "bobby@hs2", inboxPublicKey: generateInboxKeyPair().publicKeyRaw, sequence: 1n, createdAtMs: Date.now() });
    await expect(bob.client.publishIdentity([bobTablet])).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
  }, 90_000);
});
