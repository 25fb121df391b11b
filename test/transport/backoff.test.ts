import { describe, expect, it } from "vitest";
import { backoffDelayMs } from "../../src/transport/backoff.ts";

describe("backoffDelayMs", () => {
  const policy = { minMs: 50, maxMs: 2_000 };

  it("doubles from minMs up to maxMs, jittering the upper half", () => {
    expect(backoffDelayMs(policy, 0, () => 0)).toBe(25);
    expect(backoffDelayMs(policy, 0, () => 0.999999)).toBeCloseTo(50, 3);
    expect(backoffDelayMs(policy, 3, () => 0)).toBe(200);
    expect(backoffDelayMs(policy, 10, () => 0.5)).toBe(1_500);
    expect(backoffDelayMs(policy, 1_000_000, () => 0.999999)).toBeLessThanOrEqual(2_000);
  });

  it("stays within [ceiling / 2, ceiling) for any attempt", () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const ceiling = Math.min(policy.maxMs, policy.minMs * 2 ** attempt);
      for (const r of [0, 0.25, 0.999]) {
        const delay = backoffDelayMs(policy, attempt, () => r);
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
        expect(delay).toBeLessThan(ceiling);
      }
    }
  });
});
