/**
 * Checks a KeyPackage a device publishes, with ts-mls: MLSMessage framing,
 * cipher suite, Basic credential naming the device, leaf signature key equal
 * to the device's DIR key, both signatures, and a lifetime covering `nowMs`.
 * Deterministic given its arguments (the time is the proposer's, stamped in
 * the entry) and total: any malformed input is a reason, never an exception.
 */
import type { KeyPackage } from "ts-mls";
import { verifyKeyPackage } from "ts-mls/keyPackage.js";
import { verifyLeafNodeSignatureKeyPackage } from "ts-mls/leafNode.js";
import { bytesEqual, decodeFramed } from "../mls/decode.ts";
import { channelCipherSuite, parseDeviceId } from "../mls/identity.ts";
import { maxKeyPackageBytes } from "../mls/limits.ts";
import { channelSuiteImpl } from "../mls/suite.ts";

/** The device a KeyPackage must belong to. */
export interface KeyPackageOwner {
  readonly deviceId: string;
  readonly devicePublicKey: Uint8Array;
}

/** A valid KeyPackage's expiry, in Unix seconds; or why it is not valid. */
export type KeyPackageVerdict =
  | { readonly ok: true; readonly notAfterSeconds: bigint }
  /** `foreign`: it names another device or key (a cross-device publish), not merely malformed. */
  | { readonly ok: false; readonly reason: string; readonly foreign: boolean };

function checkContent(keyPackage: KeyPackage, owner: KeyPackageOwner, nowMs: number): string | undefined {
  if (keyPackage.version !== "mls10") return "unsupported protocol version";
  if (keyPackage.cipherSuite !== channelCipherSuite) return `cipher suite is not ${channelCipherSuite}`;
  const leaf = keyPackage.leafNode;
  if (leaf.leafNodeSource !== "key_package") return "leaf node source is not key_package";
  if (leaf.credential.credentialType !== "basic") return "credential is not Basic";
  if (bytesEqual(keyPackage.initKey, leaf.hpkePublicKey)) return "init key equals the encryption key";
  const nowSeconds = BigInt(Math.floor(nowMs / 1000));
  if (leaf.lifetime.notBefore > nowSeconds || leaf.lifetime.notAfter < nowSeconds) return "lifetime does not cover now";
  return undefined;
}

/** Whether the KeyPackage names `owner` and carries its DIR key. */
function isOwners(keyPackage: KeyPackage, owner: KeyPackageOwner): boolean {
  const leaf = keyPackage.leafNode;
  return leaf.credential.credentialType === "basic" && parseDeviceId(leaf.credential.identity)?.deviceId === owner.deviceId && bytesEqual(leaf.signaturePublicKey, owner.devicePublicKey);
}

/** Checks one MLSMessage-framed KeyPackage of `owner`. */
export async function checkKeyPackage(bytes: Uint8Array, owner: KeyPackageOwner, nowMs: number): Promise<KeyPackageVerdict> {
  const message = decodeFramed(bytes, maxKeyPackageBytes, "KeyPackage");
  if ("reason" in message) return { ok: false, reason: message.reason, foreign: false };
  if (message.wireformat !== "mls_key_package") return { ok: false, reason: "KeyPackage: not an MLS KeyPackage message", foreign: false };
  const keyPackage = message.keyPackage;
  try {
    const bad = checkContent(keyPackage, owner, nowMs);
    if (bad !== undefined) return { ok: false, reason: `KeyPackage: ${bad}`, foreign: false };
    if (!isOwners(keyPackage, owner)) return { ok: false, reason: `KeyPackage: not ${owner.deviceId}'s (another identity or key)`, foreign: true };
    const impl = await channelSuiteImpl();
    if (!(await verifyKeyPackage(keyPackage, impl.signature))) return { ok: false, reason: "KeyPackage: signature is invalid", foreign: false };
    if (!(await verifyLeafNodeSignatureKeyPackage(keyPackage.leafNode, impl.signature))) return { ok: false, reason: "KeyPackage: leaf node signature is invalid", foreign: false };
  } catch {
    return { ok: false, reason: "KeyPackage: malformed content", foreign: false };
  }
  return { ok: true, notAfterSeconds: keyPackage.leafNode.lifetime.notAfter };
}
