/**
 * The in-memory index of device identity records, rebuilt from storage at
 * start and kept by apply: records by device id and by device key, devices by
 * user and by sponsoring homeserver, and the blocked homeservers. It answers
 * the API's lookups and the authenticator's per-call check without a storage
 * read or a Raft round trip.
 */
import type { AuthenticatedDevice, DeviceLookup } from "../auth/client-authenticator.ts";
import type { DeviceRecord } from "./device-record.ts";

const keyId = (key: Uint8Array): string => Buffer.from(key).toString("hex");

function addTo(map: Map<string, Set<string>>, key: string, value: string): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(value);
}

/** The identity index of one homeserver, as of its last applied entry. */
export class IdentityIndex implements DeviceLookup {
  private readonly byDevice = new Map<string, DeviceRecord>();
  /** Invariant: a device key maps to the one device id whose records carry it (ids are first come, first served). */
  private readonly byKey = new Map<string, string>();
  private readonly byUser = new Map<string, Set<string>>();
  private readonly byHomeserver = new Map<string, Set<string>>();
  private readonly blocked = new Set<string>();

  clear(): void {
    this.byDevice.clear();
    this.byKey.clear();
    this.byUser.clear();
    this.byHomeserver.clear();
    this.blocked.clear();
  }

  /** Stores `device` as the latest record of its device id. Its key and user never change. */
  put(device: DeviceRecord): void {
    const body = device.body;
    this.byDevice.set(body.deviceId, device);
    this.byKey.set(keyId(body.devicePublicKey), body.deviceId);
    addTo(this.byUser, body.userName, body.deviceId);
    addTo(this.byHomeserver, body.homeserverId, body.deviceId);
  }

  setBlocked(homeserverId: string, blocked: boolean): void {
    if (blocked) this.blocked.add(homeserverId);
    else this.blocked.delete(homeserverId);
  }

  isBlocked(homeserverId: string): boolean {
    return this.blocked.has(homeserverId);
  }

  /** The blocked homeservers. */
  blockedHomeservers(): string[] {
    return [...this.blocked].sort();
  }

  /** The latest record of `deviceId`, revoked or not. */
  record(deviceId: string): DeviceRecord | undefined {
    return this.byDevice.get(deviceId);
  }

  /** The device id whose records carry `devicePublicKey`. */
  deviceIdByKey(devicePublicKey: Uint8Array): string | undefined {
    return this.byKey.get(keyId(devicePublicKey));
  }

  /** Whether the device may act now: it has a record, not revoked, sponsor not blocked. */
  isCurrent(deviceId: string): boolean {
    const device = this.byDevice.get(deviceId);
    return device !== undefined && !device.body.revoked && !this.blocked.has(device.body.homeserverId);
  }

  /** Every non-revoked device recorded under `userName` (sponsor blocked or not), sorted. */
  liveDevicesOf(userName: string): DeviceRecord[] {
    const ids = [...(this.byUser.get(userName) ?? [])].sort();
    return ids.map((id) => this.byDevice.get(id)!).filter((d) => !d.body.revoked);
  }

  /**
   * The current devices of `userName`, sorted by id: not revoked, sponsor not blocked, and linked both
   * ways with every other one (the apply rules keep all of a user's live devices so; checked again here).
   */
  userDevices(userName: string): DeviceRecord[] {
    const live = this.liveDevicesOf(userName).filter((d) => !this.blocked.has(d.body.homeserverId));
    const links = new Map(live.map((d) => [d.body.deviceId, new Set(d.body.linkedDeviceIds)]));
    return live.filter((d) => live.every((o) => o === d || (links.get(d.body.deviceId)!.has(o.body.deviceId) && links.get(o.body.deviceId)!.has(d.body.deviceId))));
  }

  /** Up to `limit` records sponsored by `homeserverId` with a device id after `afterDeviceId`, sorted. */
  sponsoredBy(homeserverId: string, afterDeviceId: string, limit: number): DeviceRecord[] {
    const ids = [...(this.byHomeserver.get(homeserverId) ?? [])].filter((id) => id > afterDeviceId).sort();
    return ids.slice(0, limit).map((id) => this.byDevice.get(id)!);
  }

  currentDevice(deviceId: string): AuthenticatedDevice | undefined {
    if (!this.isCurrent(deviceId)) return undefined;
    const body = this.byDevice.get(deviceId)!.body;
    return { deviceId, userName: body.userName, homeserverId: body.homeserverId, devicePublicKey: body.devicePublicKey };
  }
}
