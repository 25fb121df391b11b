/**
 * The invite and leave rules of the cluster directory (op 7): applied
 * deterministically on every homeserver, stored under namespace 'v'
 * (`'v' + invite id -> InviteRecord JSON`). An invite is consumed exactly
 * once, at apply: the first redeem entry that passes the rules marks it
 * used, bound to the joiner's key; any later one by another key is refused.
 * Homeserver records themselves stay in the directory namespace 'd'.
 */
import { timingSafeEqual } from "node:crypto";
import { isActiveRecord, isValidHomeserverRecord, type HomeserverRecord } from "./directory-command.ts";
import { decodeMembershipCommand, type InviteCommand, type LeaveCommand, type RedeemCommand } from "./directory-membership-command.ts";

/** An invite as the directory keeps it. */
export interface InviteRecord {
  readonly inviteId: string;
  readonly homeserverId: string;
  readonly secretHash: string;
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  readonly issuer: string;
  /** Set once redeemed: when (the redeemer's stamped clock) and by which key. */
  readonly redeemedAtMs?: number;
  readonly keyHash?: string;
}

/** Why a membership command was refused; the API maps it to a gRPC status. */
export type MembershipRefusal = "invalid" | "unauthenticated" | "denied" | "precondition";

/** What applying a membership command decided; replicated, identical everywhere. */
export type MembershipResult =
  | { readonly ok: true; readonly kind: "invite" | "redeem" | "leave"; readonly homeserverId: string }
  | { readonly ok: false; readonly code: MembershipRefusal; readonly reason: string };

/** Longest validity of an invite. */
export const inviteLifetimeMsMax = 7 * 24 * 3600_000;
/** Invites kept at most (used and expired ones are pruned after {@link inviteRetentionMs}). */
export const invitesMax = 256;
/** How long a used or expired invite is kept (so a reuse is told "used", not "unknown"). */
export const inviteRetentionMs = 24 * 3600_000;

/** The directory as membership apply reads and changes it. */
export interface DirectoryAccess {
  get(homeserverId: string): HomeserverRecord | undefined;
  /** Records (or replaces) a homeserver record: storage write and local reactions. */
  set(record: HomeserverRecord): void;
}

/** Where membership apply writes invite records (keys without the namespace byte). */
export interface InviteWriter {
  put(key: Uint8Array, value: Uint8Array): void;
  delete(key: Uint8Array): void;
}

const refuse = (code: MembershipRefusal, reason: string): MembershipResult => ({ ok: false, code, reason });

function hashesEqual(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** A proposer waiting for its command's result, by nonce. */
interface Waiter {
  readonly resolve: (result: MembershipResult) => void;
  readonly timer: NodeJS.Timeout;
}

/** The invites and the membership rules; one per cluster state machine. */
export class DirectoryMembership {
  private readonly invites = new Map<string, InviteRecord>();
  private readonly waiters = new Map<string, Waiter>();

  /** Rebuilds the invites from storage (`scan` lists this namespace's pairs). */
  async load(scan: () => AsyncIterable<[Uint8Array, Uint8Array]>): Promise<void> {
    this.invites.clear();
    for await (const [, value] of scan()) {
      const record = JSON.parse(new TextDecoder().decode(value)) as InviteRecord;
      this.invites.set(record.inviteId, record);
    }
  }

  /** The invite named `inviteId`, as of the last apply. */
  invite(inviteId: string): InviteRecord | undefined {
    return this.invites.get(inviteId);
  }

  /** Applies one command body; returns its result and nonce. Never throws on any content. */
  apply(body: Uint8Array, directory: DirectoryAccess, writer: InviteWriter): { result: MembershipResult; nonce: string | undefined } {
    const command = decodeMembershipCommand(body);
    if (command === undefined) return { result: refuse("invalid", "malformed membership command"), nonce: undefined };
    const result =
      command.kind === "invite" ? this.mint(command, directory, writer) : command.kind === "redeem" ? this.redeem(command, directory, writer) : this.leave(command, directory);
    return { result, nonce: command.nonce };
  }

  private mint(command: InviteCommand, directory: DirectoryAccess, writer: InviteWriter): MembershipResult {
    if (command.expiresAtMs <= command.issuedAtMs || command.expiresAtMs - command.issuedAtMs > inviteLifetimeMsMax) return refuse("invalid", "invite lifetime out of range");
    if (this.invites.has(command.inviteId)) return refuse("invalid", "invite id already used");
    if (isActiveRecord(directory.get(command.homeserverId))) return refuse("precondition", `${command.homeserverId} is already an active member`);
    this.prune(command.issuedAtMs, writer);
    if (this.invites.size >= invitesMax) return refuse("precondition", `${invitesMax} invites are outstanding; wait for some to expire`);
    const { inviteId, homeserverId, secretHash, issuedAtMs, expiresAtMs, issuer } = command;
    this.store({ inviteId, homeserverId, secretHash, issuedAtMs, expiresAtMs, issuer }, writer);
    return { ok: true, kind: "invite", homeserverId };
  }

  /** Drops invites used or expired more than {@link inviteRetentionMs} before `nowMs`. */
  private prune(nowMs: number, writer: InviteWriter): void {
    for (const invite of this.invites.values()) {
      const doneAtMs = Math.min(invite.expiresAtMs, invite.redeemedAtMs ?? Number.MAX_SAFE_INTEGER);
      if (doneAtMs + inviteRetentionMs >= nowMs) continue;
      this.invites.delete(invite.inviteId);
      writer.delete(new TextEncoder().encode(invite.inviteId));
    }
  }

  private redeem(command: RedeemCommand, directory: DirectoryAccess, writer: InviteWriter): MembershipResult {
    const invite = this.invites.get(command.inviteId);
    const refused = checkRedeem(invite, command);
    if (refused !== undefined) return refused;
    if (invite?.keyHash !== undefined) return { ok: true, kind: "redeem", homeserverId: command.homeserverId };
    if (isActiveRecord(directory.get(command.homeserverId))) return refuse("precondition", `${command.homeserverId} is already an active member`);
    const record: HomeserverRecord = { id: command.homeserverId, peerAddress: command.peerAddress, clientAddress: command.clientAddress, signingKey: command.signingKey, status: "active" };
    if (!isValidHomeserverRecord(record) || record.signingKey === "") return refuse("invalid", "peer address, client address or signing key is malformed");
    this.store({ ...invite!, redeemedAtMs: command.nowMs, keyHash: command.keyHash }, writer);
    directory.set(record);
    return { ok: true, kind: "redeem", homeserverId: command.homeserverId };
  }

  private leave(command: LeaveCommand, directory: DirectoryAccess): MembershipResult {
    const record = directory.get(command.homeserverId);
    if (record === undefined) return refuse("precondition", `${command.homeserverId} is not in the directory`);
    if (record.status !== "left") directory.set({ ...record, status: "left" });
    return { ok: true, kind: "leave", homeserverId: command.homeserverId };
  }

  private store(invite: InviteRecord, writer: InviteWriter): void {
    this.invites.set(invite.inviteId, invite);
    writer.put(new TextEncoder().encode(invite.inviteId), new TextEncoder().encode(JSON.stringify(invite)));
  }

  /** Resolves with the result of the command carrying `nonce` once it is applied and written, or undefined after `timeoutMs`. */
  wait(nonce: string, timeoutMs: number): Promise<MembershipResult | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(nonce);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.set(nonce, { resolve, timer });
    });
  }

  /** Hands an applied (and written) result to its waiter, if one waits here. */
  settle(nonce: string, result: MembershipResult): void {
    const waiter = this.waiters.get(nonce);
    if (waiter === undefined) return;
    this.waiters.delete(nonce);
    clearTimeout(waiter.timer);
    waiter.resolve(result);
  }
}

/**
 * The token checks of a redeem, in order: known invite, right secret, right
 * homeserver, not used by another key, not expired. Undefined when it passes
 * (an invite already used by the same key passes: the joiner asks again).
 * The join service runs the same checks before proposing.
 */
export function checkRedeem(
  invite: InviteRecord | undefined,
  command: Pick<RedeemCommand, "secretHash" | "homeserverId" | "keyHash" | "nowMs">,
): MembershipResult | undefined {
  if (invite === undefined) return refuse("unauthenticated", "unknown invite");
  if (!hashesEqual(invite.secretHash, command.secretHash)) return refuse("unauthenticated", "wrong invite secret");
  if (invite.homeserverId !== command.homeserverId) return refuse("denied", `the invite is for homeserver ${invite.homeserverId}`);
  if (invite.keyHash !== undefined) return invite.keyHash === command.keyHash ? undefined : refuse("denied", "the invite was already used");
  if (command.nowMs >= invite.expiresAtMs) return refuse("denied", "the invite has expired");
  return undefined;
}
