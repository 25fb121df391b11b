import { describe, expect, it } from "vitest";
import { RateLimiter } from "../src/api/rate-limiter.ts";

describe("token buckets", () => {
  it("grants a burst, then refills at the rate, per key", () => {
    let now = 0;
    const limiter = new RateLimiter({ burst: 3, perSecond: 10 }, () => now);
    expect([limiter.take("a"), limiter.take("a"), limiter.take("a")]).toEqual([0, 0, 0]);
    expect(limiter.take("a")).toBe(100);
    expect(limiter.take("b")).toBe(0);
    now += 100;
    expect(limiter.take("a")).toBe(0);
    expect(limiter.take("a")).toBeGreaterThan(0);
  });
});
