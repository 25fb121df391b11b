import { describe, expect, it } from "vitest";
import { Network, splitLinks } from "../../src/sim/network.ts";
import { Prng } from "../../src/sim/prng.ts";

const latency = { latencyMinMs: 1, latencyMaxMs: 9 };

describe("Network", () => {
  it("delivers every message once, FIFO per link, within the latency bounds when healthy", () => {
    const net = new Network(new Prng(1), latency, 3);
    let last = 0;
    for (let i = 0; i < 500; i++) {
      const now = i * 0.5;
      expect(net.route(0, 1, now)).toBe(1);
      const at = net.arrivals[0]!;
      expect(at).toBeGreaterThanOrEqual(now + 1);
      expect(at).toBeGreaterThanOrEqual(last);
      last = at;
    }
    expect(net.stats).toEqual({ sent: 500, dropped: 0, duplicated: 0 });
  });

  it("drops and duplicates at about the impairment's rates, and stops when it is removed", () => {
    const net = new Network(new Prng(2), latency, 2);
    const handle = net.addImpairment({ dropRate: 0.3, duplicateRate: 0.2, reorderJitterMs: 0 });
    let dropped = 0;
    let doubled = 0;
    for (let i = 0; i < 10_000; i++) {
      const n = net.route(0, 1, i);
      if (n === 0) dropped++;
      if (n === 2) doubled++;
    }
    expect(dropped / 10_000).toBeCloseTo(0.3, 1);
    expect(doubled / 7_000).toBeCloseTo(0.2, 1);
    net.removeImpairment(handle);
    const copies = Array.from({ length: 1000 }, (_, i) => net.route(0, 1, i));
    expect(copies.every((n) => n === 1)).toBe(true);
  });

  it("reorders messages on one link while reordering is on", () => {
    const net = new Network(new Prng(3), latency, 2);
    net.addImpairment({ dropRate: 0, duplicateRate: 0, reorderJitterMs: 100 });
    const arrivals = Array.from({ length: 100 }, (_, i) => (net.route(0, 1, i), net.arrivals[0]!));
    const inversions = arrivals.filter((at, i) => i > 0 && at < arrivals[i - 1]!).length;
    expect(inversions).toBeGreaterThan(10);
  });

  it("blocks directed links of a partition, overlapping partitions included, until removed", () => {
    const net = new Network(new Prng(4), latency, 3);
    const oneWay = net.addPartition([[0, 1]]);
    expect(net.route(0, 1, 0)).toBe(0);
    expect(net.route(1, 0, 0)).toBe(1);
    const split = net.addPartition(splitLinks([0], [1, 2]));
    expect(net.isBlocked(2, 0)).toBe(true);
    net.removePartition(split);
    expect(net.isBlocked(2, 0)).toBe(false);
    expect(net.isBlocked(0, 1)).toBe(true); // still cut by the first partition
    net.removePartition(oneWay);
    net.removePartition(oneWay); // idempotent
    expect(net.isBlocked(0, 1)).toBe(false);
  });

  it("heals everything at once", () => {
    const net = new Network(new Prng(5), latency, 3);
    net.addPartition(splitLinks([0, 1], [2]));
    net.addImpairment({ dropRate: 1, duplicateRate: 0, reorderJitterMs: 0 });
    net.healAll();
    expect(net.conditions()).toEqual({ dropRate: 0, duplicateRate: 0, reorderJitterMs: 0 });
    expect(splitLinks([0, 1], [2]).map(([a, b]) => net.route(a, b, 0))).toEqual([1, 1, 1, 1]);
  });
});
