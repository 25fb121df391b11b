/**
 * Authorization helpers for channel calls: a device may act on a channel only
 * while its device id is a member leaf of the channel's current epoch.
 */
import { status } from "@grpc/grpc-js";
import { ApiError } from "../api/errors.ts";
import type { ChannelRecord } from "../gen/epochd/state/v1/channel_state_pb.ts";
import type { AuthenticatedDevice } from "./client-authenticator.ts";

/** Read access to the channels' current records (ChannelStateMachine implements it). */
export interface ChannelMembers {
  channel(channelId: string): ChannelRecord | undefined;
}

/** Whether `deviceId` is a member of `channelId` in its current epoch. */
export function isChannelMember(channels: ChannelMembers, channelId: string, deviceId: string): boolean {
  return channels.channel(channelId)?.members.some((m) => m.deviceId === deviceId) ?? false;
}

/**
 * Throws PERMISSION_DENIED unless `device` is a member of `channelId`. A missing channel gets the same
 * answer, so a non-member cannot probe which channels exist.
 */
export function requireChannelMember(channels: ChannelMembers, channelId: string, device: AuthenticatedDevice): void {
  if (!isChannelMember(channels, channelId, device.deviceId)) {
    throw new ApiError(status.PERMISSION_DENIED, `device ${device.deviceId} is not a member of channel ${JSON.stringify(channelId)}`);
  }
}
