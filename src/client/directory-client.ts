/**
 * DirectoryClient: the SDK's access to device identity records and the
 * KeyPackage directory. It publishes the device's DIR at its own homeserver,
 * logs in (one DeviceSession per homeserver it talks to, since a token is
 * valid only where it was issued), and follows leader hints for writes.
 */
import { fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { DeviceIdentityBodySchema, IdentityService, type DeviceIdentityBody, type DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { KeyPackageService, type ClaimKeyPackagesResponse } from "../gen/epochd/keypackage/v1/keypackage_pb.ts";
import { checkRecord, isRejection } from "../identity/device-record.ts";
import { callUnary, hasStatus, type UnaryMethod } from "./authed-call.ts";
import { DeviceSession } from "./session.ts";

/** How to reach the device's homeserver and prove to be the device. */
export interface DirectoryClientOptions {
  readonly deviceId: string;
  readonly sign: (message: Uint8Array) => Promise<Uint8Array>;
  /** host:port of the device's own homeserver's client API. */
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  readonly callDeadlineMs?: number;
  /** Leader hops per call, at most. */
  readonly hopsMax?: number;
}

/** Trailing metadata key with the leader's client address on a follower's answer. */
const leaderAddressKey = "epochd-leader-address";

function leaderAddress(error: unknown): string | undefined {
  if (!hasStatus(error, grpc.status.FAILED_PRECONDITION)) return undefined;
  const value = (error as grpc.ServiceError).metadata?.get(leaderAddressKey)[0];
  return value === undefined ? undefined : value.toString();
}

/** A device's client of IdentityService and KeyPackageService. */
export class DirectoryClient {
  private readonly sessions = new Map<string, DeviceSession>();
  private leader: string;
  private readonly callDeadlineMs: number;

  constructor(private readonly options: DirectoryClientOptions) {
    this.leader = options.address;
    this.callDeadlineMs = options.callDeadlineMs ?? 10_000;
  }

  /** The session at `address`, created on first use. */
  session(address: string = this.options.address): DeviceSession {
    let session = this.sessions.get(address);
    if (session === undefined) {
      const { deviceId, sign, credentials, channelOptions } = this.options;
      session = new DeviceSession({ deviceId, sign, address, credentials, ...(channelOptions === undefined ? {} : { channelOptions }), callDeadlineMs: this.callDeadlineMs });
      this.sessions.set(address, session);
    }
    return session;
  }

  /** Calls `method` authenticated, at the known leader, following leader hints. */
  private async write<I extends DescMessage, O extends DescMessage>(method: UnaryMethod<I, O>, request: MessageInitShape<I>): Promise<MessageShape<O>> {
    for (let hop = 0; ; hop++) {
      const address = this.leader;
      const session = this.session(address);
      try {
        return await session.call((metadata) => callUnary(session.channel, method, request, metadata, this.callDeadlineMs));
      } catch (error) {
        const next = leaderAddress(error);
        if (next === undefined || next === address || hop >= (this.options.hopsMax ?? 3)) throw error;
        this.leader = next;
      }
    }
  }

  /** Calls `method` authenticated at the device's own homeserver. */
  private read<I extends DescMessage, O extends DescMessage>(method: UnaryMethod<I, O>, request: MessageInitShape<I>): Promise<MessageShape<O>> {
    const session = this.session();
    return session.call((metadata) => callUnary(session.channel, method, request, metadata, this.callDeadlineMs));
  }

  /** Publishes device-signed records at the own homeserver (no login needed); returns them sponsored. */
  async publishIdentity(records: DeviceIdentityRecord[]): Promise<DeviceIdentityRecord[]> {
    const session = this.session();
    return (await callUnary(session.channel, IdentityService.method.publishIdentity, { records }, new grpc.Metadata(), this.callDeadlineMs)).records;
  }

  /** The current devices of `userName`, each record verified against the cluster's homeserver keys. */
  async userDevices(userName: string, clusterId: string, homeserverKeys: ReadonlyMap<string, Uint8Array>): Promise<DeviceIdentityBody[]> {
    const { records } = await this.read(IdentityService.method.listUserDevices, { userName });
    return records.map((record) => verifyIdentityRecord(record, clusterId, homeserverKeys));
  }

  async publishKeyPackages(keyPackages: Uint8Array[], lastResort: Uint8Array = new Uint8Array(0)): Promise<{ available: number; hasLastResort: boolean }> {
    return this.write(KeyPackageService.method.publishKeyPackages, { keyPackages, lastResort });
  }

  async countKeyPackages(): Promise<{ available: number; hasLastResort: boolean }> {
    return this.read(KeyPackageService.method.countKeyPackages, {});
  }

  /** Claims one KeyPackage per current device of `userName`; `viaChannelId` names a shared channel as consent. */
  async claimKeyPackages(userName: string, viaChannelId = ""): Promise<ClaimKeyPackagesResponse> {
    return this.write(KeyPackageService.method.claimKeyPackages, { userName, viaChannelId });
  }

  /** Lets `userNames` claim this user's KeyPackages without sharing a channel. */
  async setClaimAllowList(userNames: string[]): Promise<void> {
    await this.write(KeyPackageService.method.setClaimAllowList, { allowedUserNames: userNames });
  }

  close(): void {
    for (const session of this.sessions.values()) session.close();
    this.sessions.clear();
  }
}

/** Checks a DIR's device and sponsor signatures and names; returns its body or throws. */
export function verifyIdentityRecord(record: DeviceIdentityRecord, clusterId: string, homeserverKeys: ReadonlyMap<string, Uint8Array>): DeviceIdentityBody {
  const homeserverId = fromBinary(DeviceIdentityBodySchema, record.body).homeserverId;
  const checked = checkRecord(record, clusterId, homeserverKeys.get(homeserverId) ?? new Uint8Array(0));
  if (isRejection(checked)) throw new Error(`identity record refused: ${checked.reason}`);
  return checked.body;
}
