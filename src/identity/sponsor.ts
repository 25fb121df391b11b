/**
 * Sponsorship: the homeserver's signature saying it recognizes a device under
 * its record's names. Added by the device's own homeserver after its name
 * policy passed (src/api/identity-service.ts), checked by every homeserver at apply.
 */
import { create } from "@bufbuild/protobuf";
import { DeviceIdentityRecordSchema, type DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { sponsorSignedBytes } from "./dir-signatures.ts";

/** `record` with the sponsor signature made by `sign` (the homeserver's directory key). */
export function sponsorRecord(record: DeviceIdentityRecord, sign: (message: Uint8Array) => Uint8Array): DeviceIdentityRecord {
  return create(DeviceIdentityRecordSchema, { body: record.body, deviceSignature: record.deviceSignature, sponsorSignature: sign(sponsorSignedBytes(record.body)) });
}
