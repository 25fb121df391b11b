/**
 * The log entry payload of a channel command (ChannelCommand, see
 * channel_state.proto) in its channel group's log.
 */
import { entryPayload } from "../multiraft/entry-payload.ts";

/** The op byte of a channel command entry. */
export const channelCommandOp = 3;

/** Encodes a channel command as a log entry payload. */
export function encodeChannelCommand(commandBytes: Uint8Array): Uint8Array {
  return entryPayload(channelCommandOp, commandBytes);
}
