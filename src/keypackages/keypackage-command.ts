/**
 * KeyPackage directory commands as cluster log entry payloads: version u8 (1),
 * op u8 (5), then an encoded KeyPackageCommand
 * (proto/epochd/keypackage/v1/keypackage_command.proto).
 */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { KeyPackageCommandSchema } from "../gen/epochd/keypackage/v1/keypackage_command_pb.ts";

/** The op byte of a KeyPackage entry in the cluster group's log. */
export const keyPackageOp = 5;

/** The entry payload carrying `command`. */
export function encodeKeyPackageCommand(command: MessageInitShape<typeof KeyPackageCommandSchema>): Uint8Array {
  const bytes = toBinary(KeyPackageCommandSchema, create(KeyPackageCommandSchema, command));
  const out = new Uint8Array(2 + bytes.byteLength);
  out[0] = 1;
  out[1] = keyPackageOp;
  out.set(bytes, 2);
  return out;
}
