/**
 * KeyPackage directory commands as cluster log entry payloads: version u8 (1),
 * op u8 (5), then an encoded KeyPackageCommand
 * (proto/epochd/keypackage/v1/keypackage_command.proto).
 */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { KeyPackageCommandSchema } from "../gen/epochd/keypackage/v1/keypackage_command_pb.ts";
import { entryPayload } from "../multiraft/entry-payload.ts";

/** The op byte of a KeyPackage entry in the cluster group's log. */
export const keyPackageOp = 5;

/** The entry payload carrying `command`. */
export function encodeKeyPackageCommand(command: MessageInitShape<typeof KeyPackageCommandSchema>): Uint8Array {
  return entryPayload(keyPackageOp, toBinary(KeyPackageCommandSchema, create(KeyPackageCommandSchema, command)));
}
