/**
 * A homeserver's token secret, kept in its data directory (created at first
 * start, mode 0600). Tokens survive a restart; deleting the file logs every
 * device out of this homeserver.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Bytes of a token secret. */
export const authSecretBytes = 32;

/** Loads `dataDir/auth-secret.key`, creating it if absent. Throws if the file is damaged. */
export function loadOrCreateAuthSecret(dataDir: string): Uint8Array {
  const path = join(dataDir, "auth-secret.key");
  if (existsSync(path)) {
    const secret = new Uint8Array(readFileSync(path));
    if (secret.byteLength !== authSecretBytes) throw new Error(`${path} holds ${secret.byteLength} bytes, expected ${authSecretBytes}`);
    return secret;
  }
  mkdirSync(dataDir, { recursive: true });
  const secret = new Uint8Array(randomBytes(authSecretBytes));
  writeFileSync(path, secret, { mode: 0o600 });
  return secret;
}
