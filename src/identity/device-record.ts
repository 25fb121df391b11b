/**
 * A decoded device identity record and the checks of one record on its own:
 * well-formed fields, naming rules, the device's signature and, when present,
 * the sponsor's. Pure and total: malformed input gives a rejection, never an
 * exception, so apply can call it on every homeserver.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { verifyEd25519 } from "../channel/certificate.ts";
import { DeviceIdentityBodySchema, type DeviceIdentityBody, type DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { deviceIdentityBytes, parseDeviceId } from "../mls/identity.ts";
import { deviceSignedBytes, sponsorSignedBytes } from "./dir-signatures.ts";
import { refuse, type IdentityRejection } from "./identity-rejection.ts";

/** Largest encoded record body. */
export const dirBodyBytesMax = 8192;
/** Most devices one record may link: a user has at most this many plus one current devices. */
export const linkedDevicesMax = 31;

/** A record with its decoded body. */
export interface DeviceRecord {
  readonly record: DeviceIdentityRecord;
  readonly body: DeviceIdentityBody;
}

const userLocalPattern = /^[A-Za-z0-9._-]{1,64}$/;

/** Whether `userName` is user@homeserver with a valid user part; returns its homeserver. */
export function parseUserName(userName: string): string | undefined {
  const at = userName.lastIndexOf("@");
  if (at <= 0) return undefined;
  const parsed = parseDeviceId(deviceIdentityBytes(userName));
  return parsed !== undefined && userLocalPattern.test(userName.slice(0, at)) ? parsed.homeserver : undefined;
}

function decodeBody(bytes: Uint8Array): DeviceIdentityBody | undefined {
  if (bytes.byteLength === 0 || bytes.byteLength > dirBodyBytesMax) return undefined;
  try {
    return fromBinary(DeviceIdentityBodySchema, bytes);
  } catch {
    return undefined;
  }
}

function checkFields(body: DeviceIdentityBody, clusterId: string): IdentityRejection | undefined {
  const device = parseDeviceId(deviceIdentityBytes(body.deviceId));
  if (device === undefined) return refuse("invalid", `device_id ${JSON.stringify(body.deviceId)} is not name@homeserver`);
  if (device.homeserver !== body.homeserverId) return refuse("invalid", `device ${body.deviceId} is not of homeserver ${body.homeserverId}`);
  if (parseUserName(body.userName) !== body.homeserverId) return refuse("invalid", `user_name ${JSON.stringify(body.userName)} is not user@${body.homeserverId}`);
  if (body.clusterId !== clusterId) return refuse("invalid", `record of cluster ${JSON.stringify(body.clusterId)}, this is ${clusterId}`);
  if (body.devicePublicKey.byteLength !== 32 || body.inboxPublicKey.byteLength !== 32) return refuse("invalid", "device and inbox public keys must be 32 bytes");
  if (body.sequence < 1n) return refuse("invalid", "sequence starts at 1");
  if (body.updatedAtMs < body.createdAtMs) return refuse("invalid", "updated_at_ms is before created_at_ms");
  const links = new Set(body.linkedDeviceIds);
  if (body.linkedDeviceIds.length > linkedDevicesMax) return refuse("invalid", `at most ${linkedDevicesMax} linked devices`);
  if (links.size !== body.linkedDeviceIds.length || links.has(body.deviceId)) return refuse("invalid", "linked devices must be distinct and not the device itself");
  return undefined;
}

/**
 * Decodes and checks one record: fields, the device signature, and (when `sponsorKey` is given) the
 * sponsor signature by that key. Cross-record rules (sequence, links, ownership) are the index's.
 */
export function checkRecord(record: DeviceIdentityRecord, clusterId: string, sponsorKey: Uint8Array | undefined): DeviceRecord | IdentityRejection {
  const body = decodeBody(record.body);
  if (body === undefined) return refuse("invalid", "record body is not a DeviceIdentityBody");
  const bad = checkFields(body, clusterId);
  if (bad !== undefined) return bad;
  if (!verifyEd25519(body.devicePublicKey, deviceSignedBytes(record.body), record.deviceSignature)) {
    return refuse("unauthenticated", `record of ${body.deviceId} is not signed by its device key`);
  }
  if (sponsorKey !== undefined && !verifyEd25519(sponsorKey, sponsorSignedBytes(record.body), record.sponsorSignature)) {
    return refuse("unauthenticated", `record of ${body.deviceId} lacks a valid sponsorship by ${body.homeserverId}`);
  }
  return { record, body };
}

/** Whether `value` is a rejection rather than a checked record. */
export function isRejection<T extends object>(value: T | IdentityRejection): value is IdentityRejection {
  return "ok" in value && value.ok === false;
}
