/**
 * What the two signatures of a device identity record cover: a domain string
 * and the body's exact bytes (length-prefixed), so a DIR signature can never be
 * mistaken for a login, certificate or MLS signature.
 */
import { lengthPrefixed } from "../auth/login-statement.ts";

/** Domain of the device's own signature over its record body. */
export const dirDeviceDomain = "epochd-dir-device-v1";
/** Domain of the sponsoring homeserver's signature over the record body. */
export const dirSponsorDomain = "epochd-dir-sponsor-v1";

/** The bytes the device signs with its Ed25519 key. */
export function deviceSignedBytes(body: Uint8Array): Uint8Array {
  return lengthPrefixed(dirDeviceDomain, [body]);
}

/** The bytes the sponsoring homeserver signs with its directory key. */
export function sponsorSignedBytes(body: Uint8Array): Uint8Array {
  return lengthPrefixed(dirSponsorDomain, [body]);
}
