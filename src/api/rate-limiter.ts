/**
 * Token buckets keyed by caller, for fairness under abuse: one member
 * flooding proposals must not starve the others' commits. Local to each
 * homeserver's API edge; a refused request changes nothing.
 */

/** A bucket's shape: `burst` tokens, refilled at `perSecond`. */
export interface BucketLimit {
  readonly burst: number;
  readonly perSecond: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Most keys tracked at once; the least recently used are forgotten (they start full again). */
export const rateLimiterKeysMax = 100_000;

/** Many token buckets with one limit. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: BucketLimit,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes a token for `key`: 0 when granted, else the milliseconds until one is available. */
  take(key: string): number {
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= rateLimiterKeysMax) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = { tokens: this.limit.burst, updatedMs: now };
    } else {
      this.buckets.delete(key); // re-inserted below: Map order is recency
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + ((now - bucket.updatedMs) / 1000) * this.limit.perSecond);
      bucket.updatedMs = now;
    }
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) / this.limit.perSecond) * 1000);
  }
}
