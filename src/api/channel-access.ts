/**
 * Who may call ChannelService: every call but ListHomeservers is made by an
 * authenticated device (a token from this homeserver's AuthService, see
 * src/auth), and a call about a channel only by a device that is a member of
 * the channel's current epoch. CreateChannel only by the device that is the
 * new channel's sole member (its leaf's credential names the caller), so
 * nobody opens a channel in another device's name. The leaf's signature key
 * is not compared with the caller's DIR key: it concerns the creator alone,
 * and devices added later are bound to their DIRs by the KeyPackage
 * directory. Refusals happen before anything is proposed: they change nothing.
 *
 * Membership is read from this homeserver's applied state of the channel's
 * own group. When it says "not a member", the homeserver first catches up
 * with the group's leader (a read index) and asks again, so a device added a
 * moment ago is not refused by a homeserver that has not applied its addition
 * yet; members pay nothing. A channel's group is hosted by the homeservers of
 * its members: a device asking another homeserver than its own about a
 * channel it is not a member of there is sent to its own (a leader hint); a
 * device of this homeserver asking about a channel not hosted here is not a
 * member (after a short wait, in case the group is just arriving here).
 * The check and the apply are not atomic: a device removed between the two
 * can still have one command ordered, which apply then judges on its own
 * (a removed leaf's commit fails the MLS checks there).
 */
import * as grpc from "@grpc/grpc-js";
import type { AuthenticatedDevice, ClientAuthenticator } from "../auth/client-authenticator.ts";
import { isChannelMember, requireChannelMember } from "../auth/channel-membership.ts";
import type { HostedChannels } from "../node/channel-groups.ts";
import { decodeGroupInfoMessage } from "../mls/index.ts";
import { withDeadline } from "./deadline.ts";
import { ApiError, leaderAddressMetadataKey, leaderIdMetadataKey } from "./errors.ts";

/** How long a device of this homeserver waits for a channel's group to arrive here before it is refused. */
export const hostingWaitMsMax = 1500;

/** Where ChannelService finds the channels and the homeservers' client addresses. */
export interface ChannelAccessContext {
  readonly selfId: string;
  readonly authenticator: ClientAuthenticator;
  readonly channels: HostedChannels;
  readonly clientAddressOf: (homeserverId: string) => string | undefined;
  /** Whether the cluster directory here lists `homeserverId` (a new channel's witnesses must be homeservers of the cluster). */
  readonly isHomeserver: (homeserverId: string) => boolean;
}

/** The checks ChannelService runs on every call; see the module comment. */
export interface ChannelAccess {
  /** The calling device, or UNAUTHENTICATED. */
  device(metadata: grpc.Metadata): Promise<AuthenticatedDevice>;
  /** The calling device if it is a member of `channelId`; UNAUTHENTICATED or PERMISSION_DENIED otherwise. */
  member(metadata: grpc.Metadata, channelId: string, waitMs: number): Promise<AuthenticatedDevice>;
  /** The calling device if it is the sole member of the initial `groupInfo`, whose witnesses are all homeservers of the cluster. */
  creator(metadata: grpc.Metadata, groupInfo: Uint8Array): Promise<AuthenticatedDevice>;
}

/** Builds the ChannelService checks over an authenticator and the channels hosted here. */
export function channelAccess(context: ChannelAccessContext): ChannelAccess {
  const { authenticator, channels } = context;
  /**
   * Resolves once the channel is hosted here; refuses the device otherwise.
   * A device of another homeserver that is not a member here is sent to its
   * own, whether or not the channel is hosted here, so the answer tells it
   * nothing about channels it is not in.
   */
  const hosted = async (device: AuthenticatedDevice, channelId: string, waitMs: number): Promise<void> => {
    if (device.homeserverId !== context.selfId) throw toOwnHomeserver(device, `${device.deviceId} is not a member of channel ${JSON.stringify(channelId)} here`);
    if (channels.hosts(channelId)) return;
    const until = Date.now() + Math.min(waitMs, hostingWaitMsMax);
    while (!channels.hosts(channelId) && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    if (!channels.hosts(channelId)) requireChannelMember(channels, channelId, device);
  };
  /** A leader hint sending the device to its own homeserver (clients follow it). */
  const toOwnHomeserver = (device: AuthenticatedDevice, why: string): ApiError => {
    const metadata = new grpc.Metadata();
    metadata.set(leaderIdMetadataKey, device.homeserverId);
    const address = context.clientAddressOf(device.homeserverId);
    if (address !== undefined && address !== "") metadata.set(leaderAddressMetadataKey, address);
    return new ApiError(grpc.status.FAILED_PRECONDITION, `${why}: ask ${device.homeserverId}, the homeserver of ${device.deviceId}`, metadata);
  };
  return {
    device: (metadata) => authenticator.authenticate(metadata),
    async member(metadata, channelId, waitMs) {
      const device = await authenticator.authenticate(metadata);
      if (isChannelMember(channels, channelId, device.deviceId)) return device;
      await hosted(device, channelId, waitMs);
      await withDeadline(channels.readIndex(channelId), waitMs, "catching up before refusing a non-member");
      requireChannelMember(channels, channelId, device);
      return device;
    },
    async creator(metadata, groupInfo) {
      const device = await authenticator.authenticate(metadata);
      const decoded = decodeGroupInfoMessage(groupInfo);
      if ("reason" in decoded) throw new ApiError(grpc.status.INVALID_ARGUMENT, `group_info: ${decoded.reason}`);
      const sole = decoded.members.length === 1 ? decoded.members[0] : undefined;
      if (sole === undefined || sole.deviceId !== device.deviceId) {
        throw new ApiError(grpc.status.PERMISSION_DENIED, `a new channel's only member must be its creator ${device.deviceId}`);
      }
      // A channel's group starts on its creator's homeserver.
      if (device.homeserverId !== context.selfId) throw toOwnHomeserver(device, "a channel is created on its creator's homeserver");
      // Checked here, on the only homeserver that proposes the creation, not at apply: apply reads
      // nothing outside the channel's group, and another homeserver's directory may lag when it
      // replays the creation.
      const unknown = decoded.witnesses.filter((id) => !context.isHomeserver(id));
      if (unknown.length > 0) throw new ApiError(grpc.status.INVALID_ARGUMENT, `witnesses ${unknown.join(", ")} are not homeservers of this cluster`);
      return device;
    },
  };
}
