/**
 * Invite tokens: what an operator hands to the operator of a new homeserver
 * so it can join (`epochd invite` makes one, `epochd join` redeems it).
 *
 * Format: `epochd-invite1.` + base64url(UTF-8 JSON) with the fields below.
 * The token is a bearer secret until it is used. The replicated directory
 * keeps only SHA-256 of its secret, so neither the log nor a snapshot can
 * redeem it. The CA fingerprint lets the joiner check that the homeserver it
 * reaches belongs to the cluster that invited it before sending the secret.
 */
import { createHash, X509Certificate } from "node:crypto";
import { isValidHomeserverId } from "../transport/tls.ts";

/** The prefix naming the token format and its version. */
export const inviteTokenPrefix = "epochd-invite1.";
/** Bytes of an invite's secret. */
export const inviteSecretBytes = 32;
/** Longest token accepted, in characters (a token is about 300). */
export const inviteTokenCharsMax = 2048;

/** What an invite token carries. */
export interface InviteToken {
  readonly clusterId: string;
  /** 32 lowercase hex characters; names the invite in the directory. */
  readonly inviteId: string;
  /** The id the new homeserver must take. */
  readonly homeserverId: string;
  /** {@link inviteSecretBytes} random bytes. */
  readonly secret: Uint8Array;
  /** SHA-256 of the cluster CA certificate (DER), lowercase hex; empty for a plaintext cluster. */
  readonly caFingerprint: string;
  /** Client address (host:port) of a homeserver that can redeem it. */
  readonly joinAddress: string;
  /** Unix ms after which the cluster refuses it. */
  readonly expiresAtMs: number;
}

/** A token that does not parse; the message says why. */
export class InviteTokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InviteTokenError";
  }
}

const inviteIdPattern = /^[0-9a-f]{32}$/;
const fingerprintPattern = /^(?:[0-9a-f]{64})?$/;
const addressPattern = /^[A-Za-z0-9.\-[\]:]{1,200}:\d{1,5}$/;

/** Whether `id` is a well-formed invite id. */
export function isValidInviteId(id: string): boolean {
  return inviteIdPattern.test(id);
}

/** The token text for `token`. */
export function encodeInviteToken(token: InviteToken): string {
  const body = {
    c: token.clusterId,
    i: token.inviteId,
    h: token.homeserverId,
    s: Buffer.from(token.secret).toString("base64url"),
    f: token.caFingerprint,
    a: token.joinAddress,
    e: token.expiresAtMs,
  };
  return inviteTokenPrefix + Buffer.from(JSON.stringify(body), "utf8").toString("base64url");
}

/** Parses and checks a token's shape (not its validity at the cluster); throws {@link InviteTokenError}. */
export function parseInviteToken(text: string): InviteToken {
  const trimmed = text.trim();
  if (trimmed.length > inviteTokenCharsMax) throw new InviteTokenError("token is too long");
  if (!trimmed.startsWith(inviteTokenPrefix)) throw new InviteTokenError(`token does not start with ${inviteTokenPrefix}`);
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(Buffer.from(trimmed.slice(inviteTokenPrefix.length), "base64url").toString("utf8")) as Record<string, unknown>;
  } catch {
    throw new InviteTokenError("token body is not base64url JSON");
  }
  const { c, i, h, s, f, a, e } = body;
  if (typeof c !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(c)) throw new InviteTokenError("token has no valid cluster id");
  if (typeof i !== "string" || !isValidInviteId(i)) throw new InviteTokenError("token has no valid invite id");
  if (typeof h !== "string" || !isValidHomeserverId(h)) throw new InviteTokenError("token has no valid homeserver id");
  const secret = typeof s === "string" ? Buffer.from(s, "base64url") : Buffer.alloc(0);
  if (secret.byteLength !== inviteSecretBytes) throw new InviteTokenError("token has no valid secret");
  if (typeof f !== "string" || !fingerprintPattern.test(f)) throw new InviteTokenError("token has no valid CA fingerprint");
  if (typeof a !== "string" || !addressPattern.test(a)) throw new InviteTokenError("token has no valid join address");
  if (typeof e !== "number" || !Number.isSafeInteger(e) || e <= 0) throw new InviteTokenError("token has no valid expiry");
  return { clusterId: c, inviteId: i, homeserverId: h, secret: new Uint8Array(secret), caFingerprint: f, joinAddress: a, expiresAtMs: e };
}

/** SHA-256 of an invite secret, lowercase hex: what the directory stores and compares. */
export function inviteSecretHash(secret: Uint8Array): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** SHA-256 of a PEM certificate's DER encoding, lowercase hex without separators. */
export function certificateFingerprint(pem: string | Buffer): string {
  return new X509Certificate(pem).fingerprint256.replace(/:/g, "").toLowerCase();
}
