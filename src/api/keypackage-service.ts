/**
 * epochd.keypackage.v1.KeyPackageService: the KeyPackage directory over the
 * cluster group. Every call is authenticated as a device; a device publishes
 * only its own KeyPackages (checked here with ts-mls, and again at apply),
 * claims are rate limited per claiming device and consumed at apply.
 */
import * as grpc from "@grpc/grpc-js";
import type { ClientAuthenticator } from "../auth/client-authenticator.ts";
import { KeyPackageService } from "../gen/epochd/keypackage/v1/keypackage_pb.ts";
import { parseUserName } from "../identity/device-record.ts";
import { checkKeyPackage } from "../keypackages/check-key-package.ts";
import { encodeKeyPackageCommand } from "../keypackages/keypackage-command.ts";
import { keyPackagesPerPublishMax, type KeyPackageResult } from "../keypackages/keypackage-state.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { ClusterStateMachine } from "../node/cluster-state-machine.ts";
import type { HostedChannels } from "../node/channel-groups.ts";
import { isChannelMember } from "../auth/channel-membership.ts";
import type { GroupId } from "../raft/types.ts";
import { retryAfterMetadataKey } from "./channel-service.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";
import { refusalError } from "./identity-status.ts";
import { RateLimiter } from "./rate-limiter.ts";

/** Claims one device may make: a burst, then a steady rate. */
export const claimLimit = { burst: 20, perSecond: 2 };
/** Publishes one device may make. */
export const keyPackagePublishLimit = { burst: 10, perSecond: 1 };

/** What the KeyPackage service needs from the homeserver. */
export interface KeyPackageContext {
  readonly driver: RaftDriver;
  readonly groupId: GroupId;
  readonly machine: ClusterStateMachine;
  readonly authenticator: ClientAuthenticator;
  /** The channels hosted here, for consent through a shared channel. */
  readonly channels: HostedChannels;
}

function throttle(limiter: RateLimiter, key: string, what: string): void {
  const waitMs = limiter.take(key);
  if (waitMs === 0) return;
  const metadata = new grpc.Metadata();
  metadata.set(retryAfterMetadataKey, String(waitMs));
  throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `${what}: rate limit reached, retry in ${waitMs} ms`, metadata);
}

/** Registers KeyPackageService on `server` (the client server). */
export function addKeyPackageService(server: grpc.Server, context: KeyPackageContext): void {
  const { driver, groupId, machine } = context;
  const claims = new RateLimiter(claimLimit);
  const publishes = new RateLimiter(keyPackagePublishLimit);
  const run = async (command: Parameters<typeof encodeKeyPackageCommand>[0], call: grpc.ServerUnaryCall<Buffer, Buffer>): Promise<Extract<KeyPackageResult, { ok: true }>> => {
    const applied = await withDeadline(driver.propose(groupId, encodeKeyPackageCommand(command)), remainingMs(call.getDeadline()), "waiting for the KeyPackage command to commit");
    const result = applied.result as KeyPackageResult;
    if (!result.ok) throw refusalError(result);
    return result;
  };
  /**
   * Whether `channelId` (hosted here: the claimer's homeserver hosts every
   * channel the claimer is in) has the claimer and a current device of
   * `userName` among its members, as of a read index on the channel's
   * group (and on the cluster group, whose identity index lists the user's
   * devices, before saying no).
   */
  const sharesChannel = async (claimerDeviceId: string, userName: string, channelId: string, call: grpc.ServerUnaryCall<Buffer, Buffer>): Promise<boolean> => {
    if (channelId === "" || !context.channels.hosts(channelId)) return false;
    await withDeadline(context.channels.readIndex(channelId), remainingMs(call.getDeadline()), "confirming the channel's read index");
    if (!isChannelMember(context.channels, channelId, claimerDeviceId)) return false;
    const targetIsMember = () => machine.identity.index.userDevices(userName).some((d) => isChannelMember(context.channels, channelId, d.body.deviceId));
    if (targetIsMember()) return true;
    // The user's devices come from the cluster group, which may lag here: a device published a
    // moment ago at another homeserver counts once this homeserver has caught up.
    await withDeadline(driver.readIndex(groupId), remainingMs(call.getDeadline()), "confirming the directory's read index");
    return targetIsMember();
  };
  server.addService(serviceDefinition(KeyPackageService), {
    publishKeyPackages: unaryHandler(KeyPackageService.method.publishKeyPackages, async (request, call) => {
      const device = await context.authenticator.authenticate(call.metadata);
      if (request.keyPackages.length > keyPackagesPerPublishMax) throw new ApiError(grpc.status.INVALID_ARGUMENT, `at most ${keyPackagesPerPublishMax} KeyPackages per publish`);
      const nowMs = Date.now();
      const all = request.lastResort.byteLength > 0 ? [...request.keyPackages, request.lastResort] : request.keyPackages;
      for (const bytes of all) {
        const verdict = await checkKeyPackage(bytes, device, nowMs);
        if (!verdict.ok) throw new ApiError(verdict.foreign ? grpc.status.PERMISSION_DENIED : grpc.status.INVALID_ARGUMENT, verdict.reason);
      }
      throttle(publishes, device.deviceId, `KeyPackage publishes of ${device.deviceId}`);
      const result = await run({ command: { case: "publish", value: { deviceId: device.deviceId, keyPackages: request.keyPackages, lastResort: request.lastResort, nowMs: BigInt(nowMs) } } }, call);
      return result.kind === "published" ? { available: result.available, hasLastResort: result.hasLastResort } : {};
    }),
    countKeyPackages: unaryHandler(KeyPackageService.method.countKeyPackages, async (_request, call) => {
      const device = await context.authenticator.authenticate(call.metadata);
      await withDeadline(driver.readIndex(groupId), remainingMs(call.getDeadline()), "confirming the read index");
      return machine.keyPackages.stock(device.deviceId, (key) => machine.keyPackageGet(key));
    }),
    claimKeyPackages: unaryHandler(KeyPackageService.method.claimKeyPackages, async (request, call) => {
      const device = await context.authenticator.authenticate(call.metadata);
      if (parseUserName(request.userName) === undefined) throw new ApiError(grpc.status.INVALID_ARGUMENT, "user_name must be user@homeserver");
      throttle(claims, device.deviceId, `KeyPackage claims of ${device.deviceId}`);
      const viaChannelId = await sharesChannel(device.deviceId, request.userName, request.viaChannelId, call) ? request.viaChannelId : "";
      const result = await run({ command: { case: "claim", value: { claimerDeviceId: device.deviceId, userName: request.userName, viaChannelId, nowMs: BigInt(Date.now()) } } }, call);
      return result.kind === "claimed" ? { keyPackages: [...result.keyPackages], missingDeviceIds: [...result.missingDeviceIds] } : {};
    }),
    setClaimAllowList: unaryHandler(KeyPackageService.method.setClaimAllowList, async (request, call) => {
      const device = await context.authenticator.authenticate(call.metadata);
      await run({ command: { case: "setAllowList", value: { deviceId: device.deviceId, allowedUserNames: request.allowedUserNames } } }, call);
      return {};
    }),
  } satisfies grpc.UntypedServiceImplementation);
}
