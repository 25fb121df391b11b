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
 * Membership is read from this homeserver's applied state. When it says "not
 * a member", the homeserver first catches up with the leader (a read index)
 * and asks again, so a device added a moment ago is not refused by a
 * homeserver that has not applied its addition yet; members pay nothing.
 * The check and the apply are not atomic: a device removed between the two
 * can still have one command ordered, which apply then judges on its own
 * (a removed leaf's commit fails the MLS checks there).
 */
import * as grpc from "@grpc/grpc-js";
import type { AuthenticatedDevice, ClientAuthenticator } from "../auth/client-authenticator.ts";
import { isChannelMember, requireChannelMember, type ChannelMembers } from "../auth/channel-membership.ts";
import { decodeGroupInfoMessage } from "../mls/index.ts";
import { withDeadline } from "./deadline.ts";
import { ApiError } from "./errors.ts";

/** The checks ChannelService runs on every call; see the module comment. */
export interface ChannelAccess {
  /** The calling device, or UNAUTHENTICATED. */
  device(metadata: grpc.Metadata): Promise<AuthenticatedDevice>;
  /** The calling device if it is a member of `channelId`; UNAUTHENTICATED or PERMISSION_DENIED otherwise. */
  member(metadata: grpc.Metadata, channelId: string, waitMs: number): Promise<AuthenticatedDevice>;
  /** The calling device if it is the sole member of the initial `groupInfo`. */
  creator(metadata: grpc.Metadata, groupInfo: Uint8Array): Promise<AuthenticatedDevice>;
}

/** Builds the ChannelService checks over an authenticator and the applied channel state. */
export function channelAccess(authenticator: ClientAuthenticator, channels: ChannelMembers, catchUp: () => Promise<unknown>): ChannelAccess {
  return {
    device: (metadata) => authenticator.authenticate(metadata),
    async member(metadata, channelId, waitMs) {
      const device = await authenticator.authenticate(metadata);
      if (isChannelMember(channels, channelId, device.deviceId)) return device;
      await withDeadline(catchUp(), waitMs, "catching up before refusing a non-member");
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
      return device;
    },
  };
}
