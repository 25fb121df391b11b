/**
 * Authenticated raw gRPC calls for tests that drive ChannelService with fixture devices
 * (test/fixtures/mls-group.ts) instead of the SDK: publishes each device's identity record at its own
 * homeserver and logs it in, one DeviceSession per homeserver (a token is valid only where it was issued).
 */
import * as grpc from "@grpc/grpc-js";
import { callUnary } from "../../src/client/authed-call.ts";
import { generateInboxKeyPair, signIdentityRecord, type DeviceSigner } from "../../src/client/identity-record.ts";
import { DeviceSession } from "../../src/client/session.ts";
import { IdentityService } from "../../src/gen/epochd/identity/v1/identity_pb.ts";
import { parseDeviceId, deviceIdentityBytes } from "../../src/mls/identity.ts";
import { clientSuiteImpl, type TestDevice } from "../fixtures/mls-group.ts";
import type { ProcessCluster } from "./process-cluster.ts";

const channelOptions = { "grpc.ssl_target_name_override": "localhost" };

/** A fixture device as the SDK's DeviceSigner (its MLS signature key is its DIR key). */
export async function signerOf(device: TestDevice): Promise<DeviceSigner> {
  const impl = await clientSuiteImpl();
  const homeserver = parseDeviceId(deviceIdentityBytes(device.deviceId))?.homeserver;
  if (homeserver === undefined) throw new Error(`${device.deviceId} is not a device id`);
  return {
    id: device.deviceId,
    homeserver,
    signatureKeyPair: { publicKey: device.signatureKeys.publicKey },
    sign: (message) => impl.signature.sign(device.signatureKeys.signKey, message),
  };
}

/** Devices of a test, each published once and logged in wherever it calls. */
export class DeviceLogins {
  private readonly sessions = new Map<string, DeviceSession>();
  private readonly signers = new Map<string, DeviceSigner>();

  constructor(
    private readonly cluster: ProcessCluster,
    private readonly clusterId: string,
  ) {}

  /** Publishes `device`'s first identity record at its homeserver (its own user, named like the device). */
  async publish(device: TestDevice): Promise<void> {
    const signer = await signerOf(device);
    const record = await signIdentityRecord(signer, { clusterId: this.clusterId, userName: device.deviceId, inboxPublicKey: generateInboxKeyPair().publicKeyRaw, sequence: 1n, createdAtMs: Date.now() });
    const channel = new grpc.Client(this.cluster.get(signer.homeserver).clientAddress, this.cluster.clientCredentials(), channelOptions);
    try {
      await callUnary(channel, IdentityService.method.publishIdentity, { records: [record] }, new grpc.Metadata(), 15_000);
    } finally {
      channel.close();
    }
    this.signers.set(device.deviceId, signer);
  }

  /** Call metadata authenticating published device `deviceId` at homeserver `homeserverId` (logs in on first use). */
  async metadata(deviceId: string, homeserverId: string): Promise<grpc.Metadata> {
    const key = `${deviceId}|${homeserverId}`;
    let session = this.sessions.get(key);
    if (session === undefined) {
      const signer = this.signers.get(deviceId);
      if (signer === undefined) throw new Error(`${deviceId} was not published`);
      const address = this.cluster.get(homeserverId).clientAddress;
      session = new DeviceSession({ deviceId, sign: (m) => signer.sign(m), address, credentials: this.cluster.clientCredentials(), channelOptions });
      this.sessions.set(key, session);
    }
    return session.metadata();
  }

  close(): void {
    for (const session of this.sessions.values()) session.close();
    this.sessions.clear();
  }
}
