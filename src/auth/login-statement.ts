/**
 * The bytes a device signs to log in: a domain string, then cluster id,
 * homeserver id, device id and nonce, each as a big-endian u16 length and its
 * bytes. Binding the cluster and homeserver means a signature collected by one
 * homeserver cannot be replayed at another; the nonce makes it single use.
 */

/** Domain separation: no other epochd signature starts with these bytes. */
export const loginDomain = "epochd-login-v1";

/** What a login statement names. */
export interface LoginStatement {
  readonly clusterId: string;
  readonly homeserverId: string;
  readonly deviceId: string;
  readonly nonce: Uint8Array;
}

/** Concatenates `parts`, each prefixed by its u16 big-endian byte length. Throws on a part over 65535 bytes. */
export function lengthPrefixed(domain: string, parts: readonly Uint8Array[]): Uint8Array {
  const head = new TextEncoder().encode(domain);
  let total = head.byteLength;
  for (const part of parts) {
    if (part.byteLength > 0xffff) throw new Error(`statement field of ${part.byteLength} bytes is too long`);
    total += 2 + part.byteLength;
  }
  const out = new Uint8Array(total);
  out.set(head, 0);
  let offset = head.byteLength;
  for (const part of parts) {
    out[offset] = part.byteLength >> 8;
    out[offset + 1] = part.byteLength & 0xff;
    out.set(part, offset + 2);
    offset += 2 + part.byteLength;
  }
  return out;
}

/** The exact bytes a device signs with its DIR key to answer a challenge. */
export function loginStatementBytes(statement: LoginStatement): Uint8Array {
  const text = new TextEncoder();
  return lengthPrefixed(loginDomain, [text.encode(statement.clusterId), text.encode(statement.homeserverId), text.encode(statement.deviceId), statement.nonce]);
}
