/**
 * The ciphersuite implementation the checks use. Only verification and hashing are called, which are
 * deterministic; no key is generated and no randomness is drawn on the server side.
 *
 * ts-mls' default provider hashes and verifies through WebCrypto, one thread-pool round trip per call.
 * A tree hash over a 32-member tree is ~60 digests, so on a loaded 2-core machine that dominated the
 * commit check. The server therefore swaps in synchronous node:crypto SHA-256/HMAC and Ed25519
 * verification (same OpenSSL primitives, same results; the tests cross-check them against ts-mls clients).
 */
import { createHash, createHmac, createPublicKey, timingSafeEqual, verify as verifySignature } from "node:crypto";
import type { CiphersuiteImpl, Hash, Signature } from "ts-mls";
// Subpath imports only: ts-mls 1.6.4's root entry loads its noble provider, which needs @noble/hashes,
// a package ts-mls does not declare as a dependency. The default provider (suite 1) does not need it.
import { getCiphersuiteFromName } from "ts-mls/crypto/ciphersuite.js";
import { getCiphersuiteImpl } from "ts-mls/crypto/getCiphersuiteImpl.js";
import { channelCipherSuite } from "./identity.ts";

/** SHA-256 and HMAC-SHA-256 (suite 1's hash), computed synchronously. */
const sha256Hash: Hash = {
  digest: (data) => Promise.resolve(new Uint8Array(createHash("sha256").update(data).digest())),
  mac: (key, data) => Promise.resolve(new Uint8Array(createHmac("sha256", key).update(data).digest())),
  verifyMac: (key, mac, data) => {
    const expected = createHmac("sha256", key).update(data).digest();
    return Promise.resolve(mac.length === expected.length && timingSafeEqual(expected, mac));
  },
};

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte raw key follows it. */
const ed25519SpkiPrefix = Buffer.from("302a300506032b6570032100", "hex");

function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = createPublicKey({ key: Buffer.concat([ed25519SpkiPrefix, publicKey]), format: "der", type: "spki" });
    return verifySignature(null, message, key, signature);
  } catch {
    return false;
  }
}

let cached: Promise<CiphersuiteImpl> | undefined;

/** The (cached) implementation of {@link channelCipherSuite}, with synchronous hash and Ed25519 verify. */
export function channelSuiteImpl(): Promise<CiphersuiteImpl> {
  cached ??= getCiphersuiteImpl(getCiphersuiteFromName(channelCipherSuite)).then((impl) => {
    const signature: Signature = { ...impl.signature, verify: (pk, msg, sig) => Promise.resolve(ed25519Verify(pk, msg, sig)) };
    return { ...impl, hash: sha256Hash, signature };
  });
  return cached;
}
