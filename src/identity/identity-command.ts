/**
 * Identity commands as cluster log entry payloads: version u8 (1), op u8 (4),
 * then an encoded IdentityCommand (proto/epochd/identity/v1/identity_command.proto).
 */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { IdentityCommandSchema } from "../gen/epochd/identity/v1/identity_command_pb.ts";

/** The op byte of an identity entry in the cluster group's log. */
export const identityOp = 4;

/** The entry payload carrying `command`. */
export function encodeIdentityCommand(command: MessageInitShape<typeof IdentityCommandSchema>): Uint8Array {
  const bytes = toBinary(IdentityCommandSchema, create(IdentityCommandSchema, command));
  const out = new Uint8Array(2 + bytes.byteLength);
  out[0] = 1;
  out[1] = identityOp;
  out.set(bytes, 2);
  return out;
}
