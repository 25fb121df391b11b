import { describe, expect, it } from "vitest";
import { EventQueue } from "../../src/sim/event-queue.ts";
import { Prng } from "../../src/sim/prng.ts";

describe("Prng", () => {
  it("repeats the same sequence for the same seed and stream", () => {
    const a = new Prng(42, 7);
    const b = new Prng(42, 7);
    const xs = Array.from({ length: 100 }, () => a.nextUint32());
    expect(Array.from({ length: 100 }, () => b.nextUint32())).toEqual(xs);
  });

  it("gives different sequences for different seeds and for different streams of one seed", () => {
    const first = (p: Prng) => Array.from({ length: 8 }, () => p.nextUint32());
    expect(first(new Prng(1))).not.toEqual(first(new Prng(2)));
    expect(first(new Prng(1, 1))).not.toEqual(first(new Prng(1, 2)));
    expect(first(new Prng(0))).not.toEqual(first(new Prng(0, 1)));
  });

  it("draws floats in [0, 1) and integers in bounds, roughly uniformly", () => {
    const rng = new Prng(9);
    const buckets = new Array<number>(10).fill(0);
    let outOfBounds = 0;
    for (let i = 0; i < 20_000; i++) {
      const f = rng.float();
      if (f < 0 || f >= 1) outOfBounds++;
      else buckets[Math.floor(f * 10)]!++;
      const n = rng.range(3, 5);
      if (n !== 3 && n !== 4 && n !== 5) outOfBounds++;
    }
    expect(outOfBounds).toBe(0);
    for (const count of buckets) expect(Math.abs(count - 2000)).toBeLessThan(200);
  });

  it("chance(0) is never true and chance(1) always is", () => {
    const rng = new Prng(3);
    const draws = Array.from({ length: 1000 }, () => [rng.chance(0), rng.chance(1)]);
    expect(draws.every(([never, always]) => never === false && always === true)).toBe(true);
  });

  it("shuffles into a permutation and picks existing items", () => {
    const rng = new Prng(5);
    const items = [1, 2, 3, 4, 5, 6, 7];
    const shuffled = rng.shuffle([...items]);
    expect([...shuffled].sort()).toEqual(items);
    expect(items).toContain(rng.pick(items));
    expect(() => rng.pick([])).toThrow(RangeError);
  });
});

describe("EventQueue", () => {
  it("pops by time, then in scheduling order for equal times", () => {
    const q = new EventQueue();
    const order: string[] = [];
    const rng = new Prng(11);
    const times = Array.from({ length: 200 }, () => rng.int(20));
    times.forEach((t, i) => q.push(t, () => order.push(`${t}:${i}`)));
    for (let e = q.pop(); e !== undefined; e = q.pop()) e.fire();
    const expected = times.map((t, i) => ({ t, i })).sort((a, b) => a.t - b.t || a.i - b.i).map(({ t, i }) => `${t}:${i}`);
    expect(order).toEqual(expected);
    expect(q.size).toBe(0);
    expect(q.peekTimeMs()).toBe(Number.POSITIVE_INFINITY);
  });
});
