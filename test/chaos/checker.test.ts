/**
 * The chaos checker on hand-made histories: a correct one passes, and a lost acknowledged commit, a
 * double-accepted epoch, a non-linearizable (stale) read and a reordered delivery are each reported by
 * the check that owns them. A fast-check property then plays random concurrent histories that are
 * linearizable by construction (must pass) and the same with one stale read added (must fail).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { checkLinearizable, type TimedOp } from "../../src/chaos/checker-linearizability.ts";
import { checkHistory, commitLogModel, type LogInput } from "../../src/chaos/checker.ts";
import { buildHistory, channel, correctPlan, toRunHistory, type PlannedOp } from "./history-builders.ts";

const seed = Number(process.env.FC_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`chaos checker property: FC_SEED=${seed}`);

function checksFired(history: ReturnType<typeof toRunHistory>): string[] {
  return [...new Set(checkHistory(history).violations.map((v) => v.check))].sort();
}

describe("chaos checker on hand-made histories", () => {
  it("passes a correct history", () => {
    const result = checkHistory(toRunHistory(buildHistory(correctPlan())));
    expect(result.violations).toEqual([]);
    expect(result.stats.acknowledgedCommits).toBe(3);
    expect(result.stats.acknowledgedMessages).toBe(2);
  });

  it("reports an acknowledged commit missing from a homeserver", () => {
    const built = buildHistory(correctPlan());
    const lossy = built.log.filter((e) => !(e.kind === "commit" && e.epoch === 2));
    const result = checkHistory(toRunHistory(built, { hs2: lossy }));
    const durable = result.violations.filter((v) => v.check === "durable");
    expect(durable).toHaveLength(1);
    expect(durable[0]!.message).toContain("missing from hs2's final log");
    expect(durable[0]!.epoch).toBe(2);
    expect(checksFired(toRunHistory(built, { hs2: lossy }))).toEqual(["durable", "homeservers-agree"]);
  });

  it("reports a double-accepted epoch", () => {
    const built = buildHistory(correctPlan());
    // A second client is told its own, different commit was accepted for epoch 1.
    built.ops.push({ id: 99, process: "z", kind: "commit", channel, invokeMs: 25, endMs: 40, outcome: "ok", epoch: 1, hash: "rival-1" });
    const fired = checksFired(toRunHistory(built));
    expect(fired).toContain("one-commit-per-epoch");
    expect(fired).toContain("linearizable");
    const v = checkHistory(toRunHistory(built)).violations.find((x) => x.check === "one-commit-per-epoch")!;
    expect(v.epoch).toBe(1);
    expect(JSON.stringify(v.context)).toContain("rival-1");
  });

  it("reports a stale (non-linearizable) read and nothing else", () => {
    const built = buildHistory(correctPlan());
    // Invoked after the commit of epoch 2 was acknowledged (at 55 ms), yet returns epoch 2 (length before it).
    built.ops.push({ id: 98, process: "r2", kind: "read", channel, invokeMs: 56, endMs: 58, outcome: "ok", epoch: 2 });
    expect(checksFired(toRunHistory(built))).toEqual(["linearizable"]);
    const v = checkHistory(toRunHistory(built)).violations[0]!;
    expect(JSON.stringify(v.context)).toContain('"id":98');
  });

  it("accepts a read concurrent with the commit it may or may not see", () => {
    const built = buildHistory(correctPlan());
    built.ops.push({ id: 97, process: "r3", kind: "read", channel, invokeMs: 40, endMs: 52, outcome: "ok", epoch: 2 });
    built.ops.push({ id: 96, process: "r4", kind: "read", channel, invokeMs: 41, endMs: 53, outcome: "ok", epoch: 3 });
    expect(checkHistory(toRunHistory(built)).violations).toEqual([]);
  });

  it("reports a reordered delivery", () => {
    const built = buildHistory(correctPlan());
    const items = built.deliveries[0]!.items;
    [items[1], items[2]] = [items[2]!, items[1]!];
    const result = checkHistory(toRunHistory(built));
    expect(result.violations.map((v) => v.check)).toEqual(["delivered"]);
    expect(result.violations[0]!.message).toContain("out of order");
  });

  it("reports a gap in a delivery and a device that never caught up", () => {
    const built = buildHistory(correctPlan());
    built.deliveries[0]!.items.splice(1, 1);
    built.deliveries.push({ device: "late@hs2", channel, joinedAtEpoch: 0, items: built.deliveries[0]!.items.slice(0, 2), caughtUp: true });
    const messages = checkHistory(toRunHistory(built)).violations.map((v) => v.message);
    expect(messages.some((m) => m.includes("reader@hs1") && m.includes("never reached it"))).toBe(true);
    expect(messages.some((m) => m.includes("late@hs2") && m.includes("still a member at the end"))).toBe(true);
  });

  it("reports a commit in a log that no client submitted, and an unknown commit resolved from the final log", () => {
    const built = buildHistory(correctPlan());
    const phantom = [...built.log, { sequence: built.log.length + 1, kind: "commit" as const, epoch: 3, hash: "phantom" }];
    const fired = checkHistory(toRunHistory(built, { hs1: phantom, hs2: phantom, hs3: phantom }));
    expect(fired.violations.some((v) => v.check === "durable" && v.message.includes("no client submitted"))).toBe(true);
    // The same commit, submitted without an answer: accepted by the final log, so it linearizes.
    built.ops.push({ id: 95, process: "u", kind: "commit", channel, invokeMs: 75, outcome: "unknown", epoch: 3, hash: "phantom" });
    built.deliveries[0]!.items.push({ sequence: built.log.length + 1, kind: "commit", epoch: 3 });
    const resolved = checkHistory(toRunHistory(built, { hs1: phantom, hs2: phantom, hs3: phantom }));
    expect(resolved.violations).toEqual([]);
    expect(resolved.stats.unknownCommitsApplied).toBe(1);
  });
});

/** Random concurrent plans: operations at increasing instants, each visible over a random window around it. */
const planArbitrary = fc
  .array(
    fc.record({
      kind: fc.constantFrom<PlannedOp["kind"]>("append", "append", "conflict", "read", "message"),
      gapMs: fc.integer({ min: 1, max: 20 }),
      beforeMs: fc.integer({ min: 0, max: 40 }),
      afterMs: fc.integer({ min: 0, max: 40 }),
      process: fc.constantFrom("a", "b", "c", "r"),
    }),
    { minLength: 1, maxLength: 40 },
  )
  .map((items) => {
    let at = 100;
    return items.map((i) => ({ kind: i.kind, atMs: (at += i.gapMs), beforeMs: i.beforeMs, afterMs: i.afterMs, process: i.process }));
  });

describe("chaos checker property", () => {
  it("passes histories linearizable by construction and fails them with one stale read added", () => {
    fc.assert(
      fc.property(planArbitrary, fc.nat(), (plan, pick) => {
        const built = buildHistory(plan);
        expect(checkHistory(toRunHistory(built)).violations).toEqual([]);
        const appends = built.ops.filter((o) => o.kind === "commit" && o.outcome === "ok");
        if (appends.length === 0) return;
        const a = appends[pick % appends.length]!;
        const stale = { id: 10_000, process: "stale", kind: "read" as const, channel, invokeMs: a.endMs! + 1, endMs: a.endMs! + 2, outcome: "ok" as const, epoch: a.epoch! };
        const timed = [...built.ops, stale].flatMap((o): TimedOp<LogInput>[] =>
          o.kind === "read" ? [{ id: o.id, callMs: o.invokeMs, returnMs: o.endMs!, input: { kind: "read" as const, length: o.epoch! } }] : o.kind === "commit" && o.outcome === "ok" ? [{ id: o.id, callMs: o.invokeMs, returnMs: o.endMs!, input: { kind: "append" as const, epoch: o.epoch!, hash: o.hash! } }] : [],
        );
        expect(checkLinearizable(timed, commitLogModel).verdict).toBe("violation");
        built.ops.push(stale);
        expect(checkHistory(toRunHistory(built)).violations.map((v) => v.check)).toEqual(["linearizable"]);
      }),
      { seed, numRuns: 300 },
    );
  });
});
