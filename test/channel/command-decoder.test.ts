/**
 * The hand-written decoder of a SubmitCommit's entry must return what protobuf-es's fromBinary returns,
 * for any command: the usual shape (taken by hand), every other command and every oddity (left to
 * fromBinary), and mutated bytes (the same result, or both throw). Property tests; the seed is printed
 * and FC_SEED reproduces a run.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeChannelCommand, readSubmitCommitCommand } from "../../src/channel/command-decoder.ts";
import { encodeCertificateRecords, encodeSubmitCommitCommand } from "../../src/channel/record-codec.ts";
import { SignatureSchema, SubmitCommitRequestSchema } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";

const seed = process.env["FC_SEED"] === undefined ? Date.now() % 2 ** 31 : Number(process.env["FC_SEED"]);
console.log(`channel command decoder property tests: FC_SEED=${seed}`);

const ascii = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 12 });
const text = fc.oneof({ weight: 4, arbitrary: ascii }, { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 4 }) }, { weight: 1, arbitrary: fc.constant("\uFEFFbom") });
const bytes = (maxLength: number) => fc.uint8Array({ maxLength });
const uint64 = fc.oneof({ weight: 6, arbitrary: fc.bigInt({ min: 0n, max: 100_000n }) }, { weight: 1, arbitrary: fc.constantFrom(2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n) });
const uint32 = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 32 - 1 }));

const submitCommit = fc.record({ channelId: text, epoch: uint64, commit: bytes(64), nextGroupInfo: bytes(64), welcome: bytes(16) }).map((init) => create(SubmitCommitRequestSchema, init));
const signature = fc.record({ homeserverId: text, signature: bytes(64), leafIndex: uint32, leafCount: uint32, proof: fc.array(bytes(32), { maxLength: 3 }) }).map((init) => create(SignatureSchema, init));
const certificates = fc.array(fc.record({ channelId: text, epoch: uint64, signatures: fc.array(signature, { maxLength: 3 }), signerKeys: fc.array(bytes(32), { maxLength: 3 }) }), { maxLength: 3 });

/** A SubmitCommit entry as the leader writes it: the command, then the certificates it takes along. */
const entry = fc.tuple(submitCommit, bytes(16), certificates).map(([request, requestId, records]) => {
  const head = encodeSubmitCommitCommand(request, requestId);
  const tail = encodeCertificateRecords(records);
  const out = new Uint8Array(head.length + tail.length);
  out.set(head);
  out.set(tail, head.length);
  return out;
});

/** Other commands, and SubmitCommit entries with oddities: a repeated or unknown field, a field out of order. */
const other = fc.oneof(
  fc.record({ channelId: text, epoch: uint64, message: bytes(32) }).map((value) => toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command: { case: "sendMessage", value } }))),
  fc.record({ channelId: text, groupInfo: bytes(32) }).map((value) => toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command: { case: "createChannel", value } }))),
  fc.tuple(entry, fc.constantFrom([0x32, 0x00], [0x08, 0x01], [0xa0, 0x01, 0x2a], [0x12, 0x00], [0x32, 0x01, 0x07])).map(([e, extra]) => new Uint8Array([...e, ...extra])),
  // A signature's leaf index written as a varint beyond 2^32 (fromBinary keeps its low 32 bits).
  fc.integer({ min: 1, max: 2 ** 20 }).map((high) => {
    const leafIndex = [...varintBytes(high * 2 ** 32 + 5)];
    const signature = [0x18, ...leafIndex];
    const item = [0x1a, signature.length, ...signature];
    return new Uint8Array([0x12, 0x03, 0x0a, 0x01, 0x63, 0x3a, item.length, ...item]);
  }),
);

function varintBytes(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
  return out;
}

type Outcome = { ok: true; value: unknown } | { ok: false };
const outcome = (decode: () => unknown): Outcome => {
  try {
    return { ok: true, value: decode() };
  } catch {
    return { ok: false };
  }
};

function mutate(original: Uint8Array, edits: ReadonlyArray<[number, number, "flip" | "cut" | "insert"]>): Uint8Array {
  let out = original.slice();
  for (const [at, value, kind] of edits) {
    const i = out.length === 0 ? 0 : at % (out.length + 1);
    if (kind === "cut") out = out.slice(0, i);
    else if (kind === "insert") out = new Uint8Array([...out.subarray(0, i), value, ...out.subarray(i)]);
    else if (out.length > 0) out[i % out.length]! ^= value || 1;
  }
  return out;
}

describe("decodeChannelCommand", () => {
  it("decodes a SubmitCommit entry by hand, exactly as fromBinary does", () => {
    let byHand = 0;
    fc.assert(
      fc.property(entry, (bytes) => {
        const expected = fromBinary(ChannelCommandSchema, bytes);
        expect(decodeChannelCommand(bytes)).toStrictEqual(expected);
        if (readSubmitCommitCommand(bytes) !== undefined) byHand++;
      }),
      { seed, numRuns: 500 },
    );
    // ASCII ids and numbers below 2^53 (most generated entries) take the hand-written path.
    expect(byHand).toBeGreaterThan(100);
  });

  it("leaves every other command and every oddity to fromBinary, with the same result", () => {
    fc.assert(
      fc.property(other, (bytes) => {
        expect(outcome(() => decodeChannelCommand(bytes))).toStrictEqual(outcome(() => fromBinary(ChannelCommandSchema, bytes)));
      }),
      { seed, numRuns: 500 },
    );
  });

  it("gives fromBinary's result, or throws as it does, on mutated entries (property)", () => {
    const edits = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("flip" as const, "cut" as const, "insert" as const)), { minLength: 1, maxLength: 3 });
    fc.assert(
      fc.property(entry, edits, (bytes, e) => {
        const mutated = mutate(bytes, e);
        expect(outcome(() => decodeChannelCommand(mutated))).toStrictEqual(outcome(() => fromBinary(ChannelCommandSchema, mutated)));
      }),
      { seed, numRuns: 1000 },
    );
  });
});
