/**
 * Identity commands as cluster log entry payloads: version u8 (1), op u8 (4),
 * then an encoded IdentityCommand (proto/epochd/identity/v1/identity_command.proto).
 */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { IdentityCommandSchema } from "../gen/epochd/identity/v1/identity_command_pb.ts";
import { entryPayload } from "../multiraft/entry-payload.ts";

/** The op byte of an identity entry in the cluster group's log. */
export const identityOp = 4;

/** The entry payload carrying `command`. */
export function encodeIdentityCommand(command: MessageInitShape<typeof IdentityCommandSchema>): Uint8Array {
  return entryPayload(identityOp, toBinary(IdentityCommandSchema, create(IdentityCommandSchema, command)));
}
