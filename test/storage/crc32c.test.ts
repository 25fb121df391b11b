import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { crc32c, crc32cFinish, crc32cInit, crc32cUpdate } from "../../src/storage/crc32c.ts";
import { propertySeed } from "./helpers.ts";

const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);

describe("crc32c", () => {
  // Vectors from RFC 3720 (iSCSI), appendix B.4, and the common check value.
  it("matches the known test vectors", () => {
    expect(crc32c(ascii("123456789"))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
    expect(crc32c(ascii("The quick brown fox jumps over the lazy dog"))).toBe(0x22620404);
  });

  it("gives the same result however the input is chunked", () => {
    const seed = propertySeed("crc32c chunking");
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), (bytes, cutSeed) => {
        const cut = bytes.length === 0 ? 0 : cutSeed % bytes.length;
        const chunked = crc32cFinish(crc32cUpdate(crc32cUpdate(crc32cInit, bytes.subarray(0, cut)), bytes.subarray(cut)));
        expect(chunked).toBe(crc32c(bytes));
        expect(crc32c(bytes.subarray(0, cut), bytes.subarray(cut))).toBe(crc32c(bytes));
      }),
      { seed, numRuns: 200 },
    );
  });

  it("gives the one-byte-per-step result at every length and alignment", () => {
    const seed = propertySeed("crc32c against the bytewise reference");
    const reference = (bytes: Uint8Array): number => {
      let crc = 0xffffffff;
      for (const byte of bytes) {
        crc ^= byte;
        for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
      }
      return (crc ^ 0xffffffff) >>> 0;
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat({ max: 7 }), (bytes, offset) => {
        const shifted = new Uint8Array(bytes.length + offset);
        shifted.set(bytes, offset);
        expect(crc32c(shifted.subarray(offset))).toBe(reference(bytes));
      }),
      { seed, numRuns: 500 },
    );
  });

  it("detects every single-bit flip", () => {
    const data = ascii("a record payload of moderate length, 1 KiB in production");
    const original = crc32c(data);
    for (let bit = 0; bit < data.length * 8; bit++) {
      const flipped = data.slice();
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      expect(crc32c(flipped)).not.toBe(original);
    }
  });
});
