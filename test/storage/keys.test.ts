import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareBytes } from "./bytes.ts";
import { describeKey, GroupKeys, GroupKind, InvalidGroupIdError, parseKey, prefixEnd } from "../../src/storage/keys.ts";
import { propertySeed } from "./helpers.ts";

describe("key layout", () => {
  it("orders log keys by index", () => {
    const seed = propertySeed("log key order");
    const keys = new GroupKeys("c1");
    fc.assert(
      fc.property(fc.maxSafeNat(), fc.maxSafeNat(), (a, b) => {
        const order = Math.sign(compareBytes(keys.logEntry(a), keys.logEntry(b)));
        expect(order).toBe(Math.sign(a - b));
      }),
      { seed, numRuns: 300 },
    );
  });

  it("keeps every group's keys inside its own prefix range", () => {
    const seed = propertySeed("group prefixes");
    const groupId = fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 });
    fc.assert(
      fc.property(groupId, groupId, fc.uint8Array({ maxLength: 10 }), (a, b, userKey) => {
        fc.pre(a !== b);
        const keysA = new GroupKeys(a);
        const keysB = new GroupKeys(b);
        const end = prefixEnd(keysA.prefix)!;
        for (const key of [keysB.hardState, keysB.logEntry(5), keysB.stateMachine(userKey)]) {
          const inside = compareBytes(key, keysA.prefix) >= 0 && compareBytes(key, end) < 0;
          expect(inside).toBe(false);
        }
        expect(compareBytes(keysA.stateMachine(userKey), end)).toBeLessThan(0);
      }),
      { seed, numRuns: 300 },
    );
  });

  it("parses and describes what it builds", () => {
    const keys = new GroupKeys("chan-ü");
    expect(parseKey(keys.logEntry(17))).toEqual({ space: "group", groupId: "chan-ü", kind: GroupKind.LogEntry, index: 17 });
    expect(parseKey(keys.hardState)).toEqual({ space: "group", groupId: "chan-ü", kind: GroupKind.HardState });
    expect(describeKey(keys.logEntry(17))).toMatch(/^group "chan-ü" log entry 17 \(key 0x01076368616e2dc3bc06/);
    expect(describeKey(keys.stateMachine(Uint8Array.of(0xab)))).toMatch(/state machine key 0xab/);
    expect(parseKey(Uint8Array.of(0x07, 0x01))).toEqual({ space: "unknown" });
  });

  it("refuses group ids the layout cannot hold", () => {
    expect(() => new GroupKeys("")).toThrow(InvalidGroupIdError);
    expect(() => new GroupKeys("x".repeat(256))).toThrow(/256 UTF-8 bytes, at most 255/);
    expect(() => new GroupKeys("x".repeat(255))).not.toThrow();
  });

  it("computes exclusive prefix ends", () => {
    expect(Array.from(prefixEnd(Uint8Array.of(1, 2, 0xff))!)).toEqual([1, 3]);
    expect(prefixEnd(Uint8Array.of(0xff, 0xff))).toBeUndefined();
  });
});
