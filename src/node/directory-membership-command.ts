/**
 * Membership commands of the cluster directory, as log entry payloads:
 * version u8 (1), op u8 (7), then UTF-8 JSON. Three kinds: mint an invite,
 * redeem one (which records the new homeserver), and mark a homeserver as
 * left. Every command carries a random `nonce` so the homeserver that
 * proposed it (possibly a follower) can wait for its apply result. Any time
 * the rules need is stamped by the proposer (`issuedAtMs`, `nowMs`).
 */
import { entryPayload } from "../multiraft/entry-payload.ts";
import { isValidHomeserverId } from "../transport/tls.ts";
import { isValidInviteId } from "./directory-token.ts";

/** The op byte of a membership command. */
export const membershipOp = 7;

/** Mints an invite for `homeserverId`, valid until `expiresAtMs`. */
export interface InviteCommand {
  readonly kind: "invite";
  readonly nonce: string;
  readonly inviteId: string;
  readonly homeserverId: string;
  /** SHA-256 of the token's secret, hex. */
  readonly secretHash: string;
  /** The minting homeserver's clock when it proposed. */
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  /** The homeserver that minted it. */
  readonly issuer: string;
}

/** Redeems an invite: records the new homeserver, active. */
export interface RedeemCommand {
  readonly kind: "redeem";
  readonly nonce: string;
  readonly inviteId: string;
  readonly homeserverId: string;
  readonly secretHash: string;
  /** The redeeming homeserver's clock when it proposed; compared with the expiry at apply. */
  readonly nowMs: number;
  readonly peerAddress: string;
  readonly clientAddress: string;
  /** The joiner's raw Ed25519 signing key, base64. */
  readonly signingKey: string;
  /** SHA-256 of the joiner's TLS public key (or of its signing key without TLS), hex: binds the invite to one key. */
  readonly keyHash: string;
}

/** Marks a homeserver as left; the leader then removes it from the group. */
export interface LeaveCommand {
  readonly kind: "leave";
  readonly nonce: string;
  readonly homeserverId: string;
}

/** Any membership command. */
export type MembershipCommand = InviteCommand | RedeemCommand | LeaveCommand;

const hexPattern = /^[0-9a-f]{64}$/;
const noncePattern = /^[0-9a-f]{16,64}$/;

function isTime(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** The entry payload of `command`. */
export function encodeMembershipCommand(command: MembershipCommand): Uint8Array {
  return entryPayload(membershipOp, new TextEncoder().encode(JSON.stringify(command)));
}

/** Decodes and checks the body of a membership entry (after version and op bytes); undefined when malformed. */
export function decodeMembershipCommand(body: Uint8Array): MembershipCommand | undefined {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || typeof value["nonce"] !== "string" || !noncePattern.test(value["nonce"])) return undefined;
  if (typeof value["homeserverId"] !== "string" || !isValidHomeserverId(value["homeserverId"])) return undefined;
  const str = (name: string) => (typeof value[name] === "string" ? (value[name] as string) : undefined);
  switch (value["kind"]) {
    case "leave":
      return { kind: "leave", nonce: value["nonce"], homeserverId: value["homeserverId"] };
    case "invite": {
      const { inviteId, secretHash, issuer } = { inviteId: str("inviteId"), secretHash: str("secretHash"), issuer: str("issuer") };
      if (inviteId === undefined || !isValidInviteId(inviteId) || secretHash === undefined || !hexPattern.test(secretHash)) return undefined;
      if (issuer === undefined || !isValidHomeserverId(issuer) || !isTime(value["issuedAtMs"]) || !isTime(value["expiresAtMs"])) return undefined;
      return { kind: "invite", nonce: value["nonce"], inviteId, homeserverId: value["homeserverId"], secretHash, issuedAtMs: value["issuedAtMs"], expiresAtMs: value["expiresAtMs"], issuer };
    }
    case "redeem": {
      const fields = { inviteId: str("inviteId"), secretHash: str("secretHash"), peerAddress: str("peerAddress"), clientAddress: str("clientAddress"), signingKey: str("signingKey"), keyHash: str("keyHash") };
      if (Object.values(fields).some((v) => v === undefined) || !isTime(value["nowMs"])) return undefined;
      const f = fields as { [K in keyof typeof fields]: string };
      if (!isValidInviteId(f.inviteId) || !hexPattern.test(f.secretHash) || !hexPattern.test(f.keyHash)) return undefined;
      return { kind: "redeem", nonce: value["nonce"], homeserverId: value["homeserverId"], nowMs: value["nowMs"], ...f };
    }
    default:
      return undefined;
  }
}
