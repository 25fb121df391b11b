/**
 * Outstanding login challenges of one homeserver: random nonces, each for one
 * device, short-lived and single use. Held in memory only: a restart forgets
 * them, and the device simply asks again.
 */
import { randomBytes } from "node:crypto";

/** How long a nonce may be answered. */
export const challengeLifetimeMs = 60_000;
/** Most challenges outstanding at once; beyond it Challenge is refused until some expire. */
export const challengesMax = 10_000;
/** Nonce length in bytes. */
export const nonceBytes = 32;

interface Pending {
  readonly deviceId: string;
  readonly expiresAtMs: number;
}

/** Issues and consumes nonces. */
export class ChallengeStore {
  /** Invariant: insertion order is expiry order (one lifetime for all), so expired ones are at the front. */
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A fresh nonce for `deviceId` and its expiry, or undefined when too many are outstanding. */
  issue(deviceId: string): { nonce: Uint8Array; expiresAtMs: number } | undefined {
    this.dropExpired();
    if (this.pending.size >= challengesMax) return undefined;
    const nonce = new Uint8Array(randomBytes(nonceBytes));
    const expiresAtMs = this.now() + challengeLifetimeMs;
    this.pending.set(Buffer.from(nonce).toString("hex"), { deviceId, expiresAtMs });
    return { nonce, expiresAtMs };
  }

  /** Consumes `nonce`: true only if it was issued to `deviceId` and has not expired. Used or not, it is gone. */
  consume(deviceId: string, nonce: Uint8Array): boolean {
    const key = Buffer.from(nonce).toString("hex");
    const found = this.pending.get(key);
    if (found === undefined) return false;
    this.pending.delete(key);
    return found.deviceId === deviceId && found.expiresAtMs > this.now();
  }

  /** Outstanding challenges (expired ones may still count until the next issue). */
  size(): number {
    return this.pending.size;
  }

  private dropExpired(): void {
    const now = this.now();
    for (const [key, value] of this.pending) {
      if (value.expiresAtMs > now) return;
      this.pending.delete(key);
    }
  }
}
