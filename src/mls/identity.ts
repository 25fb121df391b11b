/**
 * The identity conventions epochd's channel state machine relies on. Clients MUST follow them, and the
 * checks in this folder reject anything else:
 *
 * - Cipher suite: {@link channelCipherSuite} (MLS suite 1, X25519 + AES-128-GCM + SHA-256 + Ed25519) for
 *   every channel, GroupInfo, KeyPackage and Welcome. Other suites are rejected for now.
 * - Every leaf of a channel's ratchet tree (and every KeyPackage added to one) carries a Basic credential
 *   whose identity is the UTF-8 device id `name@homeserver`, where `name` is the user name optionally
 *   followed by device suffixes (`alice.phone@hs1`). The homeserver id is the part after the LAST '@' and
 *   is 1-63 letters, digits, '-' or '_'; it names the homeserver that sponsors the device and therefore
 *   decides which Raft voters a channel needs. The name is 1 or more letters, digits, '.', '-', '_'
 *   (no '@'); the whole id is at most {@link maxDeviceIdBytes} bytes.
 * - Handshake and other client messages use the MLSMessage framing (RFC 9420 section 6): a GroupInfo,
 *   Welcome or KeyPackage is submitted as an MLSMessage with the matching wire format, never bare.
 * - Membership = the non-blank leaves of the ratchet tree, identified by leaf index and device id. A device
 *   id appears in at most one leaf at a time is NOT enforced here (MLS allows it); the channel layer may.
 */
import type { CiphersuiteName } from "ts-mls";
import { maxDeviceIdBytes } from "./limits.ts";

/** The only cipher suite channels may use for now: MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (suite 1). */
export const channelCipherSuite: CiphersuiteName = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

/** A parsed device id. */
export interface DeviceIdentity {
  /** The whole id, e.g. `alice.phone@hs1`. */
  readonly deviceId: string;
  /** The sponsoring homeserver's id, e.g. `hs1`. */
  readonly homeserver: string;
}

const homeserverPattern = /^[A-Za-z0-9_-]{1,63}$/;
const namePattern = /^[A-Za-z0-9._-]+$/;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** True when `id` is a valid homeserver id under the device-id convention (letters, digits, '-', '_'). */
export function isValidDeviceHomeserver(id: string): boolean {
  return homeserverPattern.test(id);
}

/**
 * Parses a Basic credential identity as a device id; undefined when it does not follow the convention
 * (not UTF-8, too long, no '@', bad name or homeserver). Pure and total: never throws.
 */
export function parseDeviceId(identity: Uint8Array): DeviceIdentity | undefined {
  if (identity.length === 0 || identity.length > maxDeviceIdBytes) return undefined;
  let text: string;
  try {
    text = utf8.decode(identity);
  } catch {
    return undefined;
  }
  const at = text.lastIndexOf("@");
  if (at <= 0) return undefined;
  const name = text.slice(0, at);
  const homeserver = text.slice(at + 1);
  if (!namePattern.test(name) || !homeserverPattern.test(homeserver)) return undefined;
  return { deviceId: text, homeserver };
}

/** The Basic credential identity bytes of a device id (for clients and tests building credentials). */
export function deviceIdentityBytes(deviceId: string): Uint8Array {
  return new TextEncoder().encode(deviceId);
}
