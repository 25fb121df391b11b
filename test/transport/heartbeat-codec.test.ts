import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { quiesceContext } from "../../src/raft/raw-node.ts";
import { MessageType, message, type Message } from "../../src/raft/types.ts";
import { CodecError, defaultCodecLimits } from "../../src/transport/codec.ts";
import { decodeHeartbeats, encodeHeartbeats, isCoalescable } from "../../src/transport/heartbeat-codec.ts";

const seed = Number(process.env.FC_SEED ?? Date.now() % 1_000_000);
console.log(`heartbeat-codec properties: FC_SEED=${seed}`);

const groupId = fc.string({ minLength: 1, maxLength: 40, unit: "grapheme" }).filter((s) => s.length <= defaultCodecLimits.maxIdLength);
const safe = fc.maxSafeNat();
const beat: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ groupId, term: safe, commit: safe, quiesce: fc.boolean() }).map(({ groupId, term, commit, quiesce }) =>
    message({ type: MessageType.Heartbeat, groupId, from: "hs1", to: "hs2", term, commit, context: quiesce ? quiesceContext : new Uint8Array(0) }),
  ),
  fc.record({ groupId, term: safe, index: safe }).map(({ groupId, term, index }) =>
    message({ type: MessageType.HeartbeatResponse, groupId, from: "hs1", to: "hs2", term, index }),
  ),
);

describe("coalesced heartbeats", () => {
  it("round-trip every heartbeat and response, in order (property)", () => {
    fc.assert(
      fc.property(fc.array(beat, { maxLength: 50 }), (beats) => {
        const decoded = decodeHeartbeats(encodeHeartbeats(beats), "hs1", "hs2", defaultCodecLimits);
        expect(decoded).toEqual(beats);
      }),
      { seed, numRuns: 200 },
    );
  });

  it("are compact: 10,000 groups' heartbeats in a few hundred KB", () => {
    const beats = Array.from({ length: 8192 }, (_, i) => message({ type: MessageType.Heartbeat, groupId: `channel-${i}`, from: "a", to: "b", term: 7, commit: 1000 + i }));
    expect(encodeHeartbeats(beats).byteLength).toBeLessThan(20 * beats.length);
  });

  it("coalesce only heartbeats without a read context", () => {
    const base = { groupId: "g", from: "a", to: "b", term: 1 };
    expect(isCoalescable(message({ ...base, type: MessageType.Heartbeat }))).toBe(true);
    expect(isCoalescable(message({ ...base, type: MessageType.Heartbeat, context: quiesceContext }))).toBe(true);
    expect(isCoalescable(message({ ...base, type: MessageType.Heartbeat, context: new Uint8Array([1]) }))).toBe(false);
    expect(isCoalescable(message({ ...base, type: MessageType.HeartbeatResponse, context: new Uint8Array([1]) }))).toBe(false);
    expect(isCoalescable(message({ ...base, type: MessageType.Append }))).toBe(false);
  });

  it("refuse malformed payloads with a CodecError and nothing else (property)", () => {
    const valid = encodeHeartbeats([message({ type: MessageType.Heartbeat, groupId: "g1", from: "a", to: "b", term: 3, commit: 9 })]);
    const cases: Array<[string, Uint8Array]> = [
      ["empty", new Uint8Array(0)],
      ["bad version", Uint8Array.of(9, 1, 1, 103, 1, 1)],
      ["unknown kind", Uint8Array.of(1, 7, 1, 103, 1, 1)],
      ["empty group id", Uint8Array.of(1, 1, 0, 1, 1)],
      ["truncated", valid.subarray(0, valid.length - 1)],
      ["term over 2^53", Uint8Array.of(1, 1, 1, 103, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1)],
      ["group id not UTF-8", Uint8Array.of(1, 1, 1, 0xff, 1, 1)],
      ["group id too long", Uint8Array.of(1, 1, 0xff, 0x7f)],
    ];
    for (const [what, bytes] of cases) expect(() => decodeHeartbeats(bytes, "a", "b", defaultCodecLimits), what).toThrow(CodecError);
    const tooMany = encodeHeartbeats(Array.from({ length: 20 }, () => message({ type: MessageType.Heartbeat, groupId: "g", from: "a", to: "b", term: 1 })));
    expect(() => decodeHeartbeats(tooMany, "a", "b", { ...defaultCodecLimits, maxMessagesPerBatch: 10 })).toThrow(CodecError);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodeHeartbeats(bytes, "a", "b", defaultCodecLimits);
        } catch (error) {
          expect(error).toBeInstanceOf(CodecError);
        }
      }),
      { seed, numRuns: 500 },
    );
  });
});
