/**
 * Reconnect delays for peer links: exponential, bounded, with jitter so that
 * homeservers restarted together do not reconnect in lockstep.
 */

/** Bounds of the reconnect delay. Invariant: 0 < minMs <= maxMs. */
export interface BackoffPolicy {
  readonly minMs: number;
  readonly maxMs: number;
}

/** Default bounds: fast first retry (a restarted peer is back within a few hundred ms), capped at 2 s. */
export const defaultBackoffPolicy: BackoffPolicy = { minMs: 50, maxMs: 2_000 };

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry):
 * a ceiling of min(maxMs, minMs * 2^attempt), of which the upper half is
 * randomized ("equal jitter"). `random` returns numbers in [0, 1).
 */
export function backoffDelayMs(policy: BackoffPolicy, attempt: number, random: () => number): number {
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const ceilingMs = Math.min(policy.maxMs, policy.minMs * 2 ** exponent);
  return ceilingMs / 2 + random() * (ceilingMs / 2);
}
