/**
 * Building a device's identity record (DIR) on the client: the body, signed by
 * the device's Ed25519 key. The device's homeserver adds its sponsorship when
 * it accepts the record (IdentityService.PublishIdentity).
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { DeviceIdentityBodySchema, DeviceIdentityRecordSchema, type DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { deviceSignedBytes } from "../identity/dir-signatures.ts";

/** What a device states in its record besides its id, homeserver and key. */
export interface IdentityRecordFields {
  readonly clusterId: string;
  /** user@homeserver. */
  readonly userName: string;
  /** Raw X25519 public key for direct inbox messages. */
  readonly inboxPublicKey: Uint8Array;
  /** 1 for the first record; higher for every update. */
  readonly sequence: bigint;
  readonly linkedDeviceIds?: readonly string[];
  readonly createdAtMs: number;
  readonly updatedAtMs?: number;
  readonly revoked?: boolean;
}

/** A device's X25519 inbox key pair. Keep `privateKey` secret. */
export interface InboxKeyPair {
  readonly publicKeyRaw: Uint8Array;
  readonly privateKey: KeyObject;
}

/** A fresh X25519 inbox key pair. */
export function generateInboxKeyPair(): InboxKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  const spki = publicKey.export({ format: "der", type: "spki" });
  return { publicKeyRaw: new Uint8Array(spki.subarray(spki.length - 32)), privateKey };
}

/**
 * What signs as a device: its id, homeserver, Ed25519 public key (the DIR key, = its MLS signature key)
 * and a signer with the private half. Device implements it; so can a test's or a load generator's device.
 */
export interface DeviceSigner {
  /** name@homeserver. */
  readonly id: string;
  readonly homeserver: string;
  readonly signatureKeyPair: { readonly publicKey: Uint8Array };
  sign(message: Uint8Array): Promise<Uint8Array>;
}

/** The device's record with `fields`, signed by the device (not yet sponsored). */
export async function signIdentityRecord(device: DeviceSigner, fields: IdentityRecordFields): Promise<DeviceIdentityRecord> {
  const body = toBinary(
    DeviceIdentityBodySchema,
    create(DeviceIdentityBodySchema, {
      clusterId: fields.clusterId,
      deviceId: device.id,
      userName: fields.userName,
      homeserverId: device.homeserver,
      devicePublicKey: device.signatureKeyPair.publicKey,
      inboxPublicKey: fields.inboxPublicKey,
      sequence: fields.sequence,
      linkedDeviceIds: [...(fields.linkedDeviceIds ?? [])],
      createdAtMs: BigInt(fields.createdAtMs),
      updatedAtMs: BigInt(fields.updatedAtMs ?? fields.createdAtMs),
      revoked: fields.revoked ?? false,
    }),
  );
  return create(DeviceIdentityRecordSchema, { body, deviceSignature: await device.sign(deviceSignedBytes(body)) });
}
