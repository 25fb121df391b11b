/**
 * A homeserver's Ed25519 key for signing commit certificates, kept in its data
 * directory (created at first start, mode 0600).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A loaded signing key. */
export interface SigningKey {
  /** Raw 32-byte public key, as published in the cluster directory. */
  readonly publicKeyRaw: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

/** Loads `dataDir/signing-key.pem`, creating it if absent. */
export function loadOrCreateSigningKey(dataDir: string): SigningKey {
  const path = join(dataDir, "signing-key.pem");
  let privateKey: KeyObject;
  if (existsSync(path)) {
    privateKey = createPrivateKey(readFileSync(path));
  } else {
    mkdirSync(dataDir, { recursive: true });
    privateKey = generateKeyPairSync("ed25519").privateKey;
    writeFileSync(path, privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
  }
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return {
    publicKeyRaw: new Uint8Array(spki.subarray(spki.length - 32)),
    sign: (message) => new Uint8Array(sign(null, message, privateKey)),
  };
}
