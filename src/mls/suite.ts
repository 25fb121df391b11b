/**
 * The ciphersuite implementation the checks use. Only its verification and hash functions are called,
 * which are deterministic; no key is generated and no randomness is drawn on the server side.
 */
import type { CiphersuiteImpl } from "ts-mls";
// Subpath imports only: ts-mls 1.6.4's root entry loads its noble provider, which needs @noble/hashes,
// a package ts-mls does not declare as a dependency (absent here). The default provider does not.
import { getCiphersuiteFromName } from "ts-mls/crypto/ciphersuite.js";
import { getCiphersuiteImpl } from "ts-mls/crypto/getCiphersuiteImpl.js";
import { channelCipherSuite } from "./identity.ts";

let cached: Promise<CiphersuiteImpl> | undefined;

/** The (cached) implementation of {@link channelCipherSuite}. */
export function channelSuiteImpl(): Promise<CiphersuiteImpl> {
  cached ??= getCiphersuiteImpl(getCiphersuiteFromName(channelCipherSuite));
  return cached;
}
