/**
 * Client authentication over real gRPC on 127.0.0.1: a real ts-mls device logs in through the SDK's
 * DeviceSession, and the homeserver's TokenAuthenticator accepts its metadata; forged, expired, foreign
 * and replayed credentials are refused with UNAUTHENTICATED.
 */
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addAuthService } from "../../src/api/auth-service.ts";
import { ApiError } from "../../src/api/errors.ts";
import { ChallengeStore } from "../../src/auth/challenges.ts";
import { TokenAuthenticator, type AuthenticatedDevice, type DeviceLookup } from "../../src/auth/client-authenticator.ts";
import { loginStatementBytes } from "../../src/auth/login-statement.ts";
import { TokenIssuer, tokenLifetimeMs } from "../../src/auth/token.ts";
import { callUnary } from "../../src/client/authed-call.ts";
import { Device } from "../../src/client/device.ts";
import { DeviceSession } from "../../src/client/session.ts";
import { AuthService } from "../../src/gen/epochd/auth/v1/auth_pb.ts";
import { freeLocalPort } from "../../src/transport/local-ports.ts";

const secret = new Uint8Array(32).fill(7);

/** The devices the test homeserver knows; `current` is what the identity index would answer. */
class Devices implements DeviceLookup {
  readonly known = new Map<string, AuthenticatedDevice>();
  add(device: Device): void {
    this.known.set(device.id, { deviceId: device.id, userName: device.id.replace(/^[^.@]*\.?[^@]*@/, "u@"), homeserverId: device.homeserver, devicePublicKey: device.signatureKeyPair.publicKey });
  }
  currentDevice(deviceId: string): AuthenticatedDevice | undefined {
    return this.known.get(deviceId);
  }
}

function statusOf(error: unknown): number | undefined {
  return error instanceof ApiError ? error.code : (error as Partial<grpc.ServiceError>).code;
}

describe("client authentication", () => {
  let server: grpc.Server;
  let address: string;
  const devices = new Devices();
  let clock = Date.now();
  const tokens = new TokenIssuer(secret, "cluster-a", "hs1");
  const authenticator = new TokenAuthenticator(tokens, devices, () => clock);
  let alice: Device;
  let mallory: Device;

  beforeAll(async () => {
    alice = await Device.create("alice@hs1");
    mallory = await Device.create("mallory@hs1");
    devices.add(alice);
    server = new grpc.Server();
    addAuthService(server, { clusterId: "cluster-a", homeserverId: "hs1", challenges: new ChallengeStore(() => clock), tokens, devices, now: () => clock });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });

  afterAll(() => {
    server?.forceShutdown();
  });

  const session = (device: Device, deviceId = device.id) =>
    new DeviceSession({ deviceId, sign: (m) => device.sign(m), address, credentials: grpc.credentials.createInsecure() });

  it("a device logs in and its metadata authenticates as that device", async () => {
    const s = session(alice);
    try {
      const metadata = await s.metadata();
      const device = await authenticator.authenticate(metadata);
      expect(device.deviceId).toBe("alice@hs1");
      expect(Buffer.from(device.devicePublicKey)).toEqual(Buffer.from(alice.signatureKeyPair.publicKey));
      await s.metadata();
      expect(s.logins).toBe(1); // the token is reused while fresh
    } finally {
      s.close();
    }
  });

  it("refuses missing, malformed, forged, foreign and expired tokens", async () => {
    const s = session(alice);
    try {
      const good = await s.metadata();
      const token = String(good.get("authorization")[0]).slice("Bearer ".length);
      const bad = (value: string | undefined) => {
        const m = new grpc.Metadata();
        if (value !== undefined) m.set("authorization", value);
        return authenticator.authenticate(m).then(() => "accepted", (e: unknown) => statusOf(e));
      };
      expect(await bad(undefined)).toBe(grpc.status.UNAUTHENTICATED);
      expect(await bad("Basic abc")).toBe(grpc.status.UNAUTHENTICATED);
      expect(await bad("Bearer not-a-token")).toBe(grpc.status.UNAUTHENTICATED);
      // Accepted, and remembered as checked (a stream presents it with every item): forgeries of it still fail.
      expect(await bad(`Bearer ${token}`)).toBe("accepted");
      expect(await bad(`Bearer ${token}`)).toBe("accepted");
      // One flipped bit in the tag or in the payload.
      const bytes = Buffer.from(token, "base64url");
      for (const at of [3, 12, bytes.length - 1]) {
        const flipped = Buffer.from(bytes);
        flipped[at]! ^= 1;
        expect(await bad(`Bearer ${flipped.toString("base64url")}`)).toBe(grpc.status.UNAUTHENTICATED);
      }
      // Minted by another homeserver or cluster with the same secret: refused here.
      expect(await bad(`Bearer ${new TokenIssuer(secret, "cluster-a", "hs2").mint("alice@hs1", clock + 60_000)}`)).toBe(grpc.status.UNAUTHENTICATED);
      expect(await bad(`Bearer ${new TokenIssuer(secret, "cluster-b", "hs1").mint("alice@hs1", clock + 60_000)}`)).toBe(grpc.status.UNAUTHENTICATED);
      // A valid token for a device the index no longer knows (revoked): refused.
      expect(await bad(`Bearer ${tokens.mint("mallory@hs1", clock + 60_000)}`)).toBe(grpc.status.UNAUTHENTICATED);
      // Expired, though checked before.
      clock += tokenLifetimeMs + 1;
      expect(await bad(`Bearer ${token}`)).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      s.close();
    }
  });

  it("refuses a login signed by another key, a replayed nonce, and an unknown device", async () => {
    const channel = new grpc.Client(address, grpc.credentials.createInsecure());
    const none = new grpc.Metadata();
    try {
      const challenge = await callUnary(channel, AuthService.method.challenge, { deviceId: "alice@hs1" }, none, 5000);
      expect(challenge).toMatchObject({ clusterId: "cluster-a", homeserverId: "hs1" });
      const statement = loginStatementBytes({ clusterId: "cluster-a", homeserverId: "hs1", deviceId: "alice@hs1", nonce: challenge.nonce });
      const forged = await mallory.sign(statement);
      await expect(callUnary(channel, AuthService.method.login, { deviceId: "alice@hs1", nonce: challenge.nonce, signature: forged }, none, 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      // The nonce was consumed by the failed attempt: even the right signature is refused now.
      const right = await alice.sign(statement);
      await expect(callUnary(channel, AuthService.method.login, { deviceId: "alice@hs1", nonce: challenge.nonce, signature: right }, none, 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      // A statement for another homeserver does not verify here.
      const fresh = await callUnary(channel, AuthService.method.challenge, { deviceId: "alice@hs1" }, none, 5000);
      const elsewhere = await alice.sign(loginStatementBytes({ clusterId: "cluster-a", homeserverId: "hs2", deviceId: "alice@hs1", nonce: fresh.nonce }));
      await expect(callUnary(channel, AuthService.method.login, { deviceId: "alice@hs1", nonce: fresh.nonce, signature: elsewhere }, none, 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      await expect(callUnary(channel, AuthService.method.challenge, { deviceId: "mallory@hs1" }, none, 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      await expect(callUnary(channel, AuthService.method.challenge, { deviceId: "" }, none, 5000)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      // A session for a device id whose key it does not hold cannot log in.
      const impostor = session(mallory, "alice@hs1");
      await expect(impostor.metadata()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      impostor.close();
    } finally {
      channel.close();
    }
  });

  it("catches up before refusing a device it does not know: one that published elsewhere a moment ago logs in", async () => {
    // A second homeserver whose identity index applies bob's record only when asked to catch up
    // (as a follower does once its read index confirms the cluster group's commit).
    const bob = await Device.create("bob@hs1");
    const lagging = new Devices();
    let catchUps = 0;
    const second = new grpc.Server();
    addAuthService(second, {
      clusterId: "cluster-a", homeserverId: "hs1", challenges: new ChallengeStore(() => clock), tokens, devices: lagging, now: () => clock,
      catchUp: async () => {
        catchUps++;
        lagging.add(bob);
      },
    });
    const port = await new Promise<number>((resolve, reject) => second.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    const bobSession = new DeviceSession({ deviceId: bob.id, sign: (m) => bob.sign(m), address: `127.0.0.1:${port}`, credentials: grpc.credentials.createInsecure() });
    const channel = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      await bobSession.metadata();
      expect(catchUps).toBe(1);
      // Known now: no more catching up for it; a device still unknown after catching up is refused.
      const again = new DeviceSession({ deviceId: bob.id, sign: (m) => bob.sign(m), address: `127.0.0.1:${port}`, credentials: grpc.credentials.createInsecure() });
      await again.metadata();
      again.close();
      expect(catchUps).toBe(1);
      await expect(callUnary(channel, AuthService.method.challenge, { deviceId: "mallory@hs1" }, new grpc.Metadata(), 5000)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      expect(catchUps).toBe(2);
    } finally {
      bobSession.close();
      channel.close();
      second.forceShutdown();
    }
  });

  it("a session reaches a homeserver that comes up after it tried, within moments (grpc-js alone waits 1 s and more)", async () => {
    const port = await freeLocalPort();
    const later = new grpc.Server();
    addAuthService(later, { clusterId: "cluster-a", homeserverId: "hs1", challenges: new ChallengeStore(() => clock), tokens, devices, now: () => clock });
    const s = new DeviceSession({ deviceId: alice.id, sign: (m) => alice.sign(m), address: `127.0.0.1:${port}`, credentials: grpc.credentials.createInsecure() });
    try {
      await expect(s.metadata()).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      await new Promise<void>((resolve, reject) => later.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
      const upAtMs = Date.now();
      let loggedIn = false;
      for (let attempt = 0; attempt < 250 && !loggedIn; attempt++) {
        loggedIn = await s.metadata().then(() => true, () => false);
        if (!loggedIn) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const waitedMs = Date.now() - upAtMs;
      console.log(`session reached a homeserver that came up after it tried: ${waitedMs} ms`);
      expect(loggedIn).toBe(true);
      expect(waitedMs).toBeLessThan(600);
    } finally {
      s.close();
      later.forceShutdown();
    }
  });

  it("a session logs in again after its token is refused", async () => {
    const s = session(alice);
    try {
      let calls = 0;
      const result = await s.call(async (metadata) => {
        calls += 1;
        if (calls === 1) throw Object.assign(new Error("expired"), { code: grpc.status.UNAUTHENTICATED });
        return (await authenticator.authenticate(metadata)).deviceId;
      });
      expect(result).toBe("alice@hs1");
      expect(s.logins).toBe(2);
    } finally {
      s.close();
    }
  });
});
