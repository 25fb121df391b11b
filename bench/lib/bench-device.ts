/**
 * The load generator's device for benchmarks that drive ChannelService with raw calls: every benchmark
 * channel is created by, and has as a member, `alice@hs1`, so the load generator publishes one identity
 * record for that device id (its own Ed25519 key) and logs in wherever it calls. Auth then costs each call
 * one metadata copy on the client and one HMAC on the server: the token is fetched once per homeserver
 * and refreshed in the background, never per call.
 */
import { generateKeyPairSync, sign } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { callUnary } from "../../src/client/authed-call.ts";
import { generateInboxKeyPair, signIdentityRecord, type DeviceSigner } from "../../src/client/identity-record.ts";
import { DeviceSession } from "../../src/client/session.ts";
import { ChannelService } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { IdentityService } from "../../src/gen/epochd/identity/v1/identity_pb.ts";
import type { EpochdCluster } from "./epochd-cluster.ts";

/** How often a kept token is renewed (a token lives 10 minutes; DeviceSession logs in again near expiry). */
const refreshEveryMs = 60_000;

/** Returns the current call metadata (a copy), cheap enough to call per request. */
export type AuthMetadata = () => grpc.Metadata;

/** See the module comment. */
export class BenchDevice {
  private readonly sessions = new Map<string, { session: DeviceSession; current: grpc.Metadata; timer: NodeJS.Timeout }>();

  private constructor(
    private readonly cluster: EpochdCluster,
    private readonly signer: DeviceSigner,
  ) {}

  /** Publishes `deviceId`'s identity record (a fresh key) at its homeserver in `cluster`. */
  static async register(cluster: EpochdCluster, deviceId = "alice@hs1"): Promise<BenchDevice> {
    const homeserver = deviceId.slice(deviceId.lastIndexOf("@") + 1);
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const spki = publicKey.export({ format: "der", type: "spki" });
    const signer: DeviceSigner = {
      id: deviceId,
      homeserver,
      signatureKeyPair: { publicKey: new Uint8Array(spki.subarray(spki.length - 32)) },
      sign: (message) => Promise.resolve(new Uint8Array(sign(null, message, privateKey))),
    };
    const address = cluster.homeservers.find((h) => h.id === homeserver)?.clientAddress;
    if (address === undefined) throw new Error(`no homeserver ${homeserver} in the cluster`);
    const channel = new grpc.Client(address, cluster.credentials, cluster.channelOptions);
    try {
      const { clusterId } = await callUnary(channel, ChannelService.method.listHomeservers, {}, new grpc.Metadata(), 15_000);
      const record = await signIdentityRecord(signer, { clusterId, userName: deviceId, inboxPublicKey: generateInboxKeyPair().publicKeyRaw, sequence: 1n, createdAtMs: Date.now() });
      // Right after start-up a homeserver may not have published its own key into the cluster
      // directory yet (FAILED_PRECONDITION): retry for a bounded while.
      for (let attempt = 1; ; attempt++) {
        try {
          await callUnary(channel, IdentityService.method.publishIdentity, { records: [record] }, new grpc.Metadata(), 30_000);
          break;
        } catch (error) {
          if ((error as { code?: number }).code !== grpc.status.FAILED_PRECONDITION || attempt >= 100) throw error;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
    } finally {
      channel.close();
    }
    return new BenchDevice(cluster, signer);
  }

  /** Call metadata authenticating the device at the homeserver with client address `address`. */
  async at(address: string): Promise<AuthMetadata> {
    let kept = this.sessions.get(address);
    if (kept === undefined) {
      const signer = this.signer;
      const session = new DeviceSession({ deviceId: signer.id, sign: (m) => signer.sign(m), address, credentials: this.cluster.credentials, channelOptions: this.cluster.channelOptions, callDeadlineMs: 30_000 });
      const entry = { session, current: await session.metadata(), timer: setInterval(() => void session.metadata().then((m) => (entry.current = m), () => undefined), refreshEveryMs) };
      entry.timer.unref();
      kept = entry;
      this.sessions.set(address, kept);
    }
    const entry = kept;
    return () => entry.current.clone();
  }

  close(): void {
    for (const { session, timer } of this.sessions.values()) {
      clearInterval(timer);
      session.close();
    }
    this.sessions.clear();
  }
}
