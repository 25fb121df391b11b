import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EntryType, type ConfState, type Entry, type HardState, type SnapshotMetadata } from "../../src/raft/types.ts";
import {
  ByteWriter,
  CodecError,
  decodeConfState,
  decodeCounter,
  decodeEntryBody,
  decodeHardState,
  decodeLogPosition,
  decodeSnapshotMetadata,
  encodeConfState,
  encodeCounter,
  encodeEntryBody,
  encodeHardState,
  encodeLogPosition,
  encodeSnapshotMetadata,
  type LogPosition,
} from "../../src/storage/codec.ts";
import { propertySeed } from "./helpers.ts";

const safeNat = fc.maxSafeNat();
const nodeId = fc.string({ unit: "grapheme", maxLength: 12 });
const nodeIds = fc.array(nodeId, { maxLength: 5 });
const confState: fc.Arbitrary<ConfState> = fc.record({ voters: nodeIds, votersOutgoing: nodeIds, learners: nodeIds, learnersNext: nodeIds });
const hardState: fc.Arbitrary<HardState> = fc.record({ term: safeNat, vote: nodeId, commit: safeNat });
const metadata: fc.Arbitrary<SnapshotMetadata> = fc.record({ index: safeNat, term: safeNat, confState });
const position: fc.Arbitrary<LogPosition> = fc.record({ index: safeNat, term: safeNat });
const entryAt = (index: number): fc.Arbitrary<Entry> =>
  fc.record({
    index: fc.constant(index),
    term: safeNat,
    type: fc.constantFrom(EntryType.Normal, EntryType.ConfChange),
    data: fc.uint8Array({ maxLength: 200 }),
  });

/**
 * One helper for every codec: decode(encode(x)) equals x, every strict prefix
 * of an encoding is rejected, and arbitrary bytes either fail with CodecError
 * or decode to a value that encodes back to exactly those bytes (canonical).
 */
function checkCodec<T>(name: string, arbitrary: fc.Arbitrary<T>, encode: (value: T) => Uint8Array, decode: (bytes: Uint8Array) => T): void {
  describe(name, () => {
    it("round-trips and rejects every truncation", () => {
      const seed = propertySeed(`${name} round trip`);
      fc.assert(
        fc.property(arbitrary, (value) => {
          const bytes = encode(value);
          const decoded = decode(bytes);
          expect(normalize(decoded)).toEqual(normalize(value));
          for (let length = 0; length < bytes.length; length++) {
            expect(() => decode(bytes.subarray(0, length))).toThrow(CodecError);
          }
          const extended = new Uint8Array(bytes.length + 1);
          extended.set(bytes);
          expect(() => decode(extended)).toThrow(CodecError);
        }),
        { seed, numRuns: 150 },
      );
    });

    it("rejects garbage or decodes it canonically", () => {
      const seed = propertySeed(`${name} garbage`);
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
          let decoded: T;
          try {
            decoded = decode(bytes);
          } catch (error: unknown) {
            expect(error).toBeInstanceOf(CodecError);
            return;
          }
          expect(Array.from(encode(decoded))).toEqual(Array.from(bytes));
        }),
        { seed, numRuns: 400 },
      );
    });
  });
}

/** Byte arrays as plain arrays, so a view and a copy compare equal. */
function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return Array.from(value);
  if (Array.isArray(value)) return value.map(normalize);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}

checkCodec("entry", entryAt(7), encodeEntryBody, (bytes) => decodeEntryBody(7, bytes));
checkCodec("hard state", hardState, encodeHardState, decodeHardState);
checkCodec("snapshot metadata", metadata, encodeSnapshotMetadata, decodeSnapshotMetadata);
checkCodec("conf state", confState, encodeConfState, decodeConfState);
checkCodec("log position", position, encodeLogPosition, decodeLogPosition);
checkCodec("counter", safeNat, encodeCounter, (bytes) => decodeCounter(bytes, "counter"));

describe("codec rejections", () => {
  it("names what is wrong", () => {
    expect(() => decodeCounter(Uint8Array.of(0x80, 0x00), "applied index")).toThrow(/applied index: overlong varint/);
    expect(() => decodeCounter(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "x")).toThrow(/beyond 2\^53|longer than 8/);
    expect(() => decodeEntryBody(3, Uint8Array.of(9, 1, 0))).toThrow(/log entry 3: unknown entry type 9/);
    expect(() => decodeHardState(Uint8Array.of(1, 2, 0xc3, 0x28, 0))).toThrow(/invalid UTF-8/);
    expect(() => decodeHardState(Uint8Array.of(1, 100, 0x61))).toThrow(/length 100 beyond the input/);
  });

  it("encodes the largest safe integer and keeps a BOM in strings", () => {
    expect(decodeCounter(encodeCounter(Number.MAX_SAFE_INTEGER), "c")).toBe(Number.MAX_SAFE_INTEGER);
    const bom = { term: 1, vote: "\ufeffhs1", commit: 2 };
    expect(decodeHardState(encodeHardState(bom))).toEqual(bom);
    expect(() => new ByteWriter().uvarint(-1)).toThrow();
  });
});
