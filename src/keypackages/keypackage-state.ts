/**
 * The replicated KeyPackage directory: applies publish, claim and allow-list
 * commands deterministically. A claim consumes one KeyPackage per current
 * device of the target user inside apply, so concurrent claims, ordered by the
 * log, can never receive the same one; the last-resort KeyPackage is handed
 * out only when a device's queue is empty. Layout: keypackage-keys.ts.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { AuthenticatedDevice, DeviceLookup } from "../auth/client-authenticator.ts";
import {
  AllowListSchema,
  KeyPackageCommandSchema,
  StoredKeyPackageSchema,
  type ClaimCommand,
  type KeyPackageCommand,
  type PublishCommand,
  type SetAllowListCommand,
} from "../gen/epochd/keypackage/v1/keypackage_command_pb.ts";
import { parseUserName } from "../identity/device-record.ts";
import { checkKeyPackage } from "./check-key-package.ts";
import { allowListKey, decodeQueueBounds, encodeQueueBounds, lastResortKey, queueBoundsKey, queueSlotKey } from "./keypackage-keys.ts";
import type { ApplyBatch } from "../multiraft/apply-batch.ts";

/** Most one-time KeyPackages stored per device. */
export const keyPackagesStoredMax = 100;
/** Most KeyPackages in one publish. */
export const keyPackagesPerPublishMax = 64;
/** Most users on one allow list. */
export const allowListUsersMax = 256;

/** One handed-out KeyPackage. */
export interface ClaimedKeyPackage {
  readonly deviceId: string;
  readonly keyPackage: Uint8Array;
  readonly lastResort: boolean;
}

/** What applying a KeyPackage command decided; replicated, identical on every homeserver. */
export type KeyPackageResult =
  | { readonly ok: true; readonly kind: "published"; readonly available: number; readonly hasLastResort: boolean }
  | { readonly ok: true; readonly kind: "claimed"; readonly keyPackages: readonly ClaimedKeyPackage[]; readonly missingDeviceIds: readonly string[] }
  | { readonly ok: true; readonly kind: "allow-list-set" }
  | { readonly ok: false; readonly code: "invalid" | "unauthenticated" | "permission-denied" | "not-found" | "precondition"; readonly reason: string };

type Refusal = Extract<KeyPackageResult, { ok: false }>;
const refuse = (code: Refusal["code"], reason: string): Refusal => ({ ok: false, code, reason });

/** The replicated state the directory reads: who is a current device, of which user. */
export interface KeyPackageContext {
  readonly devices: DeviceLookup & { userDevices(userName: string): ReadonlyArray<{ readonly body: { readonly deviceId: string } }> };
}

/** The KeyPackage part of the cluster state machine. */
export class KeyPackageState {
  constructor(private readonly context: KeyPackageContext) {}

  /** Applies one command (the entry body after version and op bytes). Never throws on any content. */
  async apply(body: Uint8Array, batch: ApplyBatch): Promise<KeyPackageResult> {
    let command: KeyPackageCommand;
    try {
      command = fromBinary(KeyPackageCommandSchema, body);
    } catch {
      return refuse("invalid", "malformed KeyPackage command");
    }
    switch (command.command.case) {
      case "publish":
        return this.publish(command.command.value, batch);
      case "claim":
        return this.claim(command.command.value, batch);
      case "setAllowList":
        return this.setAllowList(command.command.value, batch);
      default:
        return refuse("invalid", "empty KeyPackage command");
    }
  }

  /** The number of one-time KeyPackages a device has and whether it has a last resort. */
  async stock(deviceId: string, read: (key: Uint8Array) => Promise<Uint8Array | undefined>): Promise<{ available: number; hasLastResort: boolean }> {
    const bounds = decodeQueueBounds(await read(queueBoundsKey(deviceId)));
    return { available: Number(bounds.tail - bounds.head), hasLastResort: (await read(lastResortKey(deviceId))) !== undefined };
  }

  private async publish(command: PublishCommand, batch: ApplyBatch): Promise<KeyPackageResult> {
    const device = this.context.devices.currentDevice(command.deviceId);
    if (device === undefined) return refuse("unauthenticated", `device ${command.deviceId} is not current`);
    const count = command.keyPackages.length;
    if (count > keyPackagesPerPublishMax) return refuse("invalid", `at most ${keyPackagesPerPublishMax} KeyPackages per publish`);
    if (count === 0 && command.lastResort.byteLength === 0) return refuse("invalid", "nothing to publish");
    const bounds = decodeQueueBounds(await batch.get(queueBoundsKey(device.deviceId)));
    if (Number(bounds.tail - bounds.head) + count > keyPackagesStoredMax) return refuse("precondition", `a device stores at most ${keyPackagesStoredMax} KeyPackages`);
    const all = command.lastResort.byteLength > 0 ? [...command.keyPackages, command.lastResort] : command.keyPackages;
    const stored: Uint8Array[] = [];
    for (const bytes of all) {
      const verdict = await checkKeyPackage(bytes, device, Number(command.nowMs));
      if (!verdict.ok) return refuse(verdict.foreign ? "permission-denied" : "invalid", verdict.reason);
      stored.push(toBinary(StoredKeyPackageSchema, create(StoredKeyPackageSchema, { keyPackage: bytes, notAfterS: verdict.notAfterSeconds })));
    }
    let tail = bounds.tail;
    for (const value of stored.slice(0, count)) batch.put(queueSlotKey(device.deviceId, tail++), value);
    batch.put(queueBoundsKey(device.deviceId), encodeQueueBounds({ head: bounds.head, tail }));
    if (stored.length > count) batch.put(lastResortKey(device.deviceId), stored[count]!);
    return { ok: true, kind: "published", ...(await this.stock(device.deviceId, (k) => batch.get(k))) };
  }

  private async claim(command: ClaimCommand, batch: ApplyBatch): Promise<KeyPackageResult> {
    const claimer = this.context.devices.currentDevice(command.claimerDeviceId);
    if (claimer === undefined) return refuse("unauthenticated", `device ${command.claimerDeviceId} is not current`);
    const targets = this.context.devices.userDevices(command.userName).map((d) => d.body.deviceId);
    if (targets.length === 0) return refuse("not-found", `user ${command.userName} has no current device`);
    if (!(await this.consents(claimer, command.userName, command.viaChannelId, batch))) {
      return refuse("permission-denied", `${claimer.deviceId} may not claim KeyPackages of ${command.userName}: share a channel or be on its allow list`);
    }
    const nowSeconds = BigInt(Math.floor(Number(command.nowMs) / 1000));
    const keyPackages: ClaimedKeyPackage[] = [];
    const missingDeviceIds: string[] = [];
    for (const deviceId of targets) {
      if (deviceId === claimer.deviceId) continue;
      const taken = await this.take(deviceId, nowSeconds, batch);
      if (taken === undefined) missingDeviceIds.push(deviceId);
      else keyPackages.push(taken);
    }
    return { ok: true, kind: "claimed", keyPackages, missingDeviceIds };
  }

  /**
   * Consent (MIMI): the user's own device, the user's allow list, or a
   * channel both are members of. Channels live in their own groups, which
   * only their homeservers host: the proposing homeserver (the claimer's,
   * which hosts every channel the claimer is in) checked the shared channel
   * before proposing, and names it only then (see keypackage-service.ts).
   */
  private async consents(claimer: AuthenticatedDevice, userName: string, viaChannelId: string, batch: ApplyBatch): Promise<boolean> {
    if (claimer.userName === userName) return true;
    const stored = await batch.get(allowListKey(userName));
    if (stored !== undefined && fromBinary(AllowListSchema, stored).allowedUserNames.includes(claimer.userName)) return true;
    return viaChannelId !== "";
  }

  /** Pops the device's oldest unexpired KeyPackage (dropping expired ones), else its last resort. */
  private async take(deviceId: string, nowSeconds: bigint, batch: ApplyBatch): Promise<ClaimedKeyPackage | undefined> {
    const bounds = decodeQueueBounds(await batch.get(queueBoundsKey(deviceId)));
    let head = bounds.head;
    let found: Uint8Array | undefined;
    // Bounded: a queue holds at most keyPackagesStoredMax slots.
    while (found === undefined && head < bounds.tail) {
      const value = await batch.get(queueSlotKey(deviceId, head));
      batch.delete(queueSlotKey(deviceId, head));
      head++;
      const stored = value === undefined ? undefined : fromBinary(StoredKeyPackageSchema, value);
      if (stored !== undefined && stored.notAfterS >= nowSeconds) found = stored.keyPackage;
    }
    if (head !== bounds.head) batch.put(queueBoundsKey(deviceId), encodeQueueBounds({ head, tail: bounds.tail }));
    if (found !== undefined) return { deviceId, keyPackage: found, lastResort: false };
    const lastResort = await batch.get(lastResortKey(deviceId));
    if (lastResort === undefined) return undefined;
    const stored = fromBinary(StoredKeyPackageSchema, lastResort);
    return stored.notAfterS >= nowSeconds ? { deviceId, keyPackage: stored.keyPackage, lastResort: true } : undefined;
  }

  private async setAllowList(command: SetAllowListCommand, batch: ApplyBatch): Promise<KeyPackageResult> {
    const device = this.context.devices.currentDevice(command.deviceId);
    if (device === undefined) return refuse("unauthenticated", `device ${command.deviceId} is not current`);
    const users = [...new Set(command.allowedUserNames)].sort();
    if (users.length > allowListUsersMax) return refuse("invalid", `at most ${allowListUsersMax} users on an allow list`);
    const bad = users.find((u) => parseUserName(u) === undefined);
    if (bad !== undefined) return refuse("invalid", `${JSON.stringify(bad)} is not user@homeserver`);
    batch.put(allowListKey(device.userName), toBinary(AllowListSchema, create(AllowListSchema, { allowedUserNames: users })));
    return { ok: true, kind: "allow-list-set" };
  }
}
