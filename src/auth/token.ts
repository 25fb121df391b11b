/**
 * Bearer tokens: opaque to clients, checked by the issuing homeserver alone
 * with an HMAC-SHA256 under its secret, so authenticating a call costs one HMAC
 * and no Raft round trip. Layout before base64url: version u8 (1), expiry
 * (Unix ms, u64 BE), device id length u8, device id (UTF-8), then the 32-byte
 * tag over a domain string, cluster id, homeserver id and everything before it.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { lengthPrefixed } from "./login-statement.ts";

/** How long a token is accepted after login. */
export const tokenLifetimeMs = 10 * 60_000;
const tagBytes = 32;
const tokenVersion = 1;
/** Longest token string accepted (a device id is at most 255 bytes here). */
export const tokenCharsMax = 512;

/** What a valid token says. */
export interface TokenClaims {
  readonly deviceId: string;
  readonly expiresAtMs: number;
}

/**
 * Tokens already checked, with their claims: a SubmitCommitStream presents
 * the same token with every item, and its HMAC was a fiftieth of a busy
 * leader's time. Expiry is still checked by the caller at every use.
 */
const openedTokensMax = 4096;

/** Mints and checks the tokens of one homeserver in one cluster. */
export class TokenIssuer {
  /** See {@link openedTokensMax}; the oldest go first. */
  private readonly opened = new Map<string, TokenClaims>();

  constructor(
    private readonly secret: Uint8Array,
    private readonly clusterId: string,
    private readonly homeserverId: string,
  ) {
    if (secret.byteLength < 32) throw new Error("token secret must be at least 32 bytes");
  }

  private tag(payload: Uint8Array): Buffer {
    const text = new TextEncoder();
    const bound = lengthPrefixed("epochd-token-v1", [text.encode(this.clusterId), text.encode(this.homeserverId), payload]);
    return createHmac("sha256", this.secret).update(bound).digest();
  }

  /** A token for `deviceId` expiring at `expiresAtMs`. */
  mint(deviceId: string, expiresAtMs: number): string {
    const id = new TextEncoder().encode(deviceId);
    if (id.byteLength === 0 || id.byteLength > 255) throw new Error("device id must be 1-255 bytes");
    const payload = new Uint8Array(1 + 8 + 1 + id.byteLength);
    const view = new DataView(payload.buffer);
    payload[0] = tokenVersion;
    view.setBigUint64(1, BigInt(Math.trunc(expiresAtMs)));
    payload[9] = id.byteLength;
    payload.set(id, 10);
    return Buffer.concat([payload, this.tag(payload)]).toString("base64url");
  }

  /** The claims of a token this issuer minted, or undefined if it is malformed or forged (expiry NOT checked). */
  open(token: string): TokenClaims | undefined {
    const known = this.opened.get(token);
    if (known !== undefined) return known;
    const claims = this.check(token);
    if (claims === undefined) return undefined;
    if (this.opened.size >= openedTokensMax) this.opened.delete(this.opened.keys().next().value!);
    this.opened.set(token, claims);
    return claims;
  }

  private check(token: string): TokenClaims | undefined {
    if (token.length === 0 || token.length > tokenCharsMax) return undefined;
    const bytes = new Uint8Array(Buffer.from(token, "base64url"));
    if (bytes.byteLength < 10 + tagBytes || bytes[0] !== tokenVersion) return undefined;
    const idLength = bytes[9]!;
    if (bytes.byteLength !== 10 + idLength + tagBytes) return undefined;
    const payload = bytes.subarray(0, 10 + idLength);
    const tag = bytes.subarray(10 + idLength);
    if (!timingSafeEqual(this.tag(payload), tag)) return undefined;
    try {
      const deviceId = new TextDecoder("utf-8", { fatal: true }).decode(payload.subarray(10));
      const expiresAtMs = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(1));
      return { deviceId, expiresAtMs };
    } catch {
      return undefined;
    }
  }
}
