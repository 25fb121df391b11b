/**
 * The rules a batch of records of one user must meet against the index, at
 * the API edge (before sponsoring) and again at apply (where a record that
 * passed the edge can still lose to a concurrent update). Deterministic: it
 * reads only its arguments and the index.
 */
import type { DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { checkRecord, isRejection, type DeviceRecord } from "./device-record.ts";
import type { IdentityIndex } from "./identity-index.ts";
import { refuse, type IdentityRejection } from "./identity-rejection.ts";

/** Most records in one publish: a new device plus updates of every other current device of the user. */
export const recordsPerPublishMax = 32;

/** What the rules need besides the index. */
export interface PublishContext {
  readonly clusterId: string;
  /** The sponsor's raw Ed25519 directory key; undefined when unknown. */
  signingKeyOf(homeserverId: string): Uint8Array | undefined;
  /** Check sponsor signatures (apply: yes; the edge, before it signs: no). */
  readonly requireSponsor: boolean;
}

function checkEach(records: readonly DeviceIdentityRecord[], context: PublishContext, index: IdentityIndex): DeviceRecord[] | IdentityRejection {
  const checked: DeviceRecord[] = [];
  for (const record of records) {
    let sponsorKey: Uint8Array | undefined;
    if (context.requireSponsor) {
      const homeserverId = checkRecord(record, context.clusterId, undefined);
      if (isRejection(homeserverId)) return homeserverId;
      sponsorKey = context.signingKeyOf(homeserverId.body.homeserverId);
      if (sponsorKey === undefined) return refuse("precondition", `homeserver ${homeserverId.body.homeserverId} is not in the cluster directory`);
    }
    const device = checkRecord(record, context.clusterId, sponsorKey);
    if (isRejection(device)) return device;
    const bad = checkAgainstLatest(device, index);
    if (bad !== undefined) return bad;
    checked.push(device);
  }
  return checked;
}

function checkAgainstLatest(device: DeviceRecord, index: IdentityIndex): IdentityRejection | undefined {
  const body = device.body;
  if (index.isBlocked(body.homeserverId)) return refuse("precondition", `homeserver ${body.homeserverId} is blocked`);
  const owner = index.deviceIdByKey(body.devicePublicKey);
  if (owner !== undefined && owner !== body.deviceId) return refuse("permission-denied", `this device key belongs to ${owner}`);
  const latest = index.record(body.deviceId)?.body;
  if (latest === undefined) return undefined;
  if (Buffer.compare(latest.devicePublicKey, body.devicePublicKey) !== 0) return refuse("permission-denied", `device id ${body.deviceId} is taken by another key`);
  if (latest.revoked) return refuse("precondition", `device ${body.deviceId} is revoked`);
  if (body.sequence <= latest.sequence) return refuse("precondition", `sequence ${body.sequence} of ${body.deviceId} does not exceed its current ${latest.sequence}`);
  if (body.createdAtMs !== latest.createdAtMs) return refuse("invalid", "created_at_ms may not change");
  if (body.userName !== latest.userName) return refuse("invalid", "a device may not change its user");
  return undefined;
}

/**
 * After the batch, the user's live devices must link each other, all of them: each link names a
 * device of the same user (live or revoked), and no live device leaves out another live one.
 */
function checkLinks(batch: readonly DeviceRecord[], index: IdentityIndex): IdentityRejection | undefined {
  const userName = batch[0]!.body.userName;
  const after = new Map(index.liveDevicesOf(userName).map((d) => [d.body.deviceId, d]));
  for (const device of batch) {
    if (device.body.revoked) after.delete(device.body.deviceId);
    else after.set(device.body.deviceId, device);
  }
  const inBatch = new Set(batch.map((d) => d.body.deviceId));
  for (const device of after.values()) {
    for (const linked of device.body.linkedDeviceIds) {
      const known = inBatch.has(linked) || index.record(linked)?.body.userName === userName;
      if (!known) return refuse("precondition", `${device.body.deviceId} links ${linked}, which is not a device of ${userName}`);
    }
    const links = new Set(device.body.linkedDeviceIds);
    for (const other of after.keys()) {
      if (other !== device.body.deviceId && !links.has(other)) {
        return refuse("precondition", `${device.body.deviceId} does not link ${other}: a user's devices must link each other both ways`);
      }
    }
  }
  return undefined;
}

/** Checks a batch; returns the decoded records to store, or why not. */
export function checkPublish(records: readonly DeviceIdentityRecord[], context: PublishContext, index: IdentityIndex): DeviceRecord[] | IdentityRejection {
  if (records.length === 0 || records.length > recordsPerPublishMax) return refuse("invalid", `publish 1-${recordsPerPublishMax} records`);
  const checked = checkEach(records, context, index);
  if (isRejection(checked)) return checked;
  const userName = checked[0]!.body.userName;
  if (checked.some((d) => d.body.userName !== userName)) return refuse("invalid", "all records of one publish must be of one user");
  if (new Set(checked.map((d) => d.body.deviceId)).size !== checked.length) return refuse("invalid", "a device appears twice in one publish");
  const keys = new Set(checked.map((d) => Buffer.from(d.body.devicePublicKey).toString("hex")));
  if (keys.size !== checked.length) return refuse("permission-denied", "two devices of one publish share a key");
  const links = checkLinks(checked, index);
  return links ?? checked;
}
