/**
 * Minting and redeeming invites on a homeserver: the work behind
 * AdminService.CreateInvite and JoinService.Join. Both propose an op-7
 * command (forwarded to the leader when this homeserver follows) and wait
 * for its apply result by nonce; a command whose answer was lost is proposed
 * again, which is safe because the state shows whether it took effect.
 *
 * Trust model: the cluster CA is the root of trust of every peer link. A
 * homeserver configured with the CA key (`tlsCaKey`) is an issuer: it mints
 * invites and signs a joiner's certificate request, for the invited id only,
 * once the redeem is applied. The joiner's private key never leaves it.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { signCertificateRequest, type CertificateAuthority } from "../transport/tls.ts";
import { isActiveRecord, type HomeserverRecord } from "./directory-command.ts";
import { encodeMembershipCommand, type MembershipCommand, type RedeemCommand } from "./directory-membership-command.ts";
import { checkRedeem, inviteLifetimeMsMax, type DirectoryMembership, type MembershipResult } from "./directory-membership.ts";
import { certificateFingerprint, encodeInviteToken, inviteSecretBytes, inviteSecretHash } from "./directory-token.ts";

/** Default validity of an invite. */
export const inviteLifetimeMsDefault = 3600_000;
/** How long one proposal attempt waits for its result before it is proposed again. */
const attemptWaitMs = 3000;

/** A membership command refused (by the rules at the edge or at apply), or one whose outcome could not be learned. */
export class MembershipError extends Error {
  constructor(readonly code: "invalid" | "unauthenticated" | "denied" | "precondition" | "unavailable", message: string) {
    super(message);
    this.name = "MembershipError";
  }
}

/** Signs joiners' certificates with the cluster CA; absent on a homeserver without the CA key. */
export interface CertificateIssuer {
  readonly caCertificatePem: string;
  /** SHA-256 of the CA certificate, hex (what tokens carry). */
  readonly caFingerprint: string;
  sign(csrPem: string, homeserverId: string, extraHosts: readonly string[]): Promise<string>;
}

/** An issuer over the CA files `ca`. */
export function fileIssuer(ca: CertificateAuthority): CertificateIssuer {
  const caCertificatePem = readFileSync(ca.certPath, "utf8");
  readFileSync(ca.keyPath); // fail at start, not at the first join, when the key is unreadable
  return {
    caCertificatePem,
    caFingerprint: certificateFingerprint(caCertificatePem),
    sign: (csrPem, homeserverId, extraHosts) => signCertificateRequest(ca, csrPem, homeserverId, { extraHosts }),
  };
}

/** What minting and redeeming need from the homeserver. */
export interface InviteContext {
  readonly selfId: string;
  readonly clusterId: string;
  /** This homeserver's client address: where a joiner redeems the tokens it mints. */
  readonly clientAddress: string;
  /** Plaintext cluster: no certificates to issue. */
  readonly insecure: boolean;
  readonly issuer: CertificateIssuer | undefined;
  readonly membership: DirectoryMembership;
  directory(): ReadonlyMap<string, HomeserverRecord>;
  proposeAnywhere(data: Uint8Array): boolean;
}

/** A fresh nonce for a membership command. */
function nonce(): string {
  return randomBytes(12).toString("hex");
}

/**
 * Proposes `command` until its apply result is known or `waitMs` passes.
 * `tookEffect` says from the state whether an earlier attempt was applied.
 */
async function proposeUntilApplied(context: InviteContext, command: MembershipCommand, tookEffect: () => boolean, waitMs: number): Promise<MembershipResult> {
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    const waiting = context.membership.wait(command.nonce, Math.max(1, Math.min(attemptWaitMs, deadline - Date.now())));
    const sent = context.proposeAnywhere(encodeMembershipCommand(command));
    const result = sent ? await waiting : undefined;
    if (result !== undefined) return result;
    if (tookEffect()) return { ok: true, kind: command.kind, homeserverId: command.homeserverId };
    if (!sent) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new MembershipError("unavailable", `the cluster did not apply the ${command.kind} in time; try again`);
}

function throwIfRefused(result: MembershipResult): void {
  if (!result.ok) throw new MembershipError(result.code, result.reason);
}

/** Mints an invite for `homeserverId`; resolves with the token once the directory holds it. */
export async function createInvite(context: InviteContext, homeserverId: string, lifetimeMs: number, waitMs: number): Promise<{ token: string; expiresAtMs: number }> {
  if (!context.insecure && context.issuer === undefined) {
    throw new MembershipError("precondition", `${context.selfId} holds no cluster CA key (tlsCaKey), so it cannot sign a joiner's certificate; ask a homeserver that does`);
  }
  if (lifetimeMs <= 0 || lifetimeMs > inviteLifetimeMsMax) throw new MembershipError("invalid", `ttl must be between 1 ms and ${inviteLifetimeMsMax} ms`);
  if (isActiveRecord(context.directory().get(homeserverId))) throw new MembershipError("precondition", `${homeserverId} is already an active member`);
  const secret = randomBytes(inviteSecretBytes);
  const issuedAtMs = Date.now();
  const command = {
    kind: "invite" as const,
    nonce: nonce(),
    inviteId: randomBytes(16).toString("hex"),
    homeserverId,
    secretHash: inviteSecretHash(secret),
    issuedAtMs,
    expiresAtMs: issuedAtMs + lifetimeMs,
    issuer: context.selfId,
  };
  const result = await proposeUntilApplied(context, command, () => context.membership.invite(command.inviteId)?.secretHash === command.secretHash, waitMs);
  throwIfRefused(result);
  const token = encodeInviteToken({
    clusterId: context.clusterId,
    inviteId: command.inviteId,
    homeserverId,
    secret,
    caFingerprint: context.issuer?.caFingerprint ?? "",
    joinAddress: context.clientAddress,
    expiresAtMs: command.expiresAtMs,
  });
  return { token, expiresAtMs: command.expiresAtMs };
}

/** What a joiner presents (already shape-checked by the API). */
export interface RedeemRequest {
  readonly inviteId: string;
  readonly secret: Uint8Array;
  readonly homeserverId: string;
  readonly peerAddress: string;
  readonly clientAddress: string;
  /** Base64 raw Ed25519 key. */
  readonly signingKey: string;
  /** Empty without TLS. */
  readonly csrPem: string;
  /** SHA-256 of the request's public key (or of the signing key without TLS). */
  readonly keyHash: string;
}

/**
 * Redeems an invite: checks the token against the directory (refusing
 * without proposing anything), proposes the redeem, and once it is applied
 * signs the joiner's certificate. Call after a linearizable read point.
 */
export async function redeemInvite(context: InviteContext, request: RedeemRequest, waitMs: number): Promise<{ certificatePem: string; members: HomeserverRecord[] }> {
  const command: RedeemCommand = {
    kind: "redeem",
    nonce: nonce(),
    inviteId: request.inviteId,
    homeserverId: request.homeserverId,
    secretHash: inviteSecretHash(request.secret),
    nowMs: Date.now(),
    peerAddress: request.peerAddress,
    clientAddress: request.clientAddress,
    signingKey: request.signingKey,
    keyHash: request.keyHash,
  };
  const refused = checkRedeem(context.membership.invite(request.inviteId), command);
  if (refused !== undefined) throwIfRefused(refused);
  if (!context.insecure && context.issuer === undefined) {
    throw new MembershipError("precondition", `${context.selfId} holds no cluster CA key (tlsCaKey); join through the homeserver that made the invite`);
  }
  const result = await proposeUntilApplied(context, command, () => context.membership.invite(request.inviteId)?.keyHash === request.keyHash, waitMs);
  throwIfRefused(result);
  const hosts = [request.peerAddress, request.clientAddress].map((address) => address.slice(0, address.lastIndexOf(":")));
  const certificatePem = context.issuer === undefined ? "" : await context.issuer.sign(request.csrPem, request.homeserverId, hosts);
  return { certificatePem, members: [...context.directory().values()].filter(isActiveRecord).sort((a, b) => a.id.localeCompare(b.id)) };
}
