/**
 * The PrivateMessage framing reader (a hand-written walk of the TLS encoding) must decide exactly as
 * ts-mls' decodeMlsMessage does, since every replica applies what it decides: on real private commits
 * and application messages, on fuzzed mutations of them, on PrivateMessage headers built from
 * random fields (every length form, cut anywhere) and on random bytes. It must never throw. Seed from
 * FC_SEED, printed at start.
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { decodeMlsMessage } from "ts-mls/message.js";
import { readPrivateFraming } from "../../src/mls/private-framing.ts";
import { inspectMessage } from "../../src/mls/inspect.ts";
import { decodeFramed, shortWireformat } from "../../src/mls/decode.ts";
import { maxMessageBytes } from "../../src/mls/limits.ts";
import { buildGroup, makeApplicationMessage, makeCommit, makeProposal, memberOf } from "../fixtures/mls-group.ts";

const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`PrivateMessage framing: FC_SEED=${seed}`);

type Verdict = "private" | "other-wireformat" | "undecodable" | "trailing";

/** Both readers' verdicts on `bytes`, and their fields when both read a PrivateMessage. */
function agree(bytes: Uint8Array): Verdict {
  let full: ReturnType<typeof decodeMlsMessage>;
  try {
    full = decodeMlsMessage(bytes, 0);
  } catch {
    full = undefined;
  }
  const fast = readPrivateFraming(bytes);
  if (fast === "other-wireformat") {
    // Left to the full decode by the caller, which then decides: it must not find a PrivateMessage.
    expect(full === undefined || full[0].wireformat !== "mls_private_message").toBe(true);
    return "other-wireformat";
  }
  if (full === undefined) {
    expect(fast).toBe("undecodable");
    return "undecodable";
  }
  const [message, bytesRead] = full;
  if (message.wireformat !== "mls_private_message") throw new Error(`the full decode read a ${message.wireformat} the reader did not leave to it`);
  if (bytesRead !== bytes.length) {
    expect(fast).toEqual({ trailingBytes: bytes.length - bytesRead });
    return "trailing";
  }
  expect(fast).toEqual({ groupId: message.privateMessage.groupId, epoch: message.privateMessage.epoch, contentType: message.privateMessage.contentType });
  return "private";
}

/** An MLS variable-length vector header for `length`, in the given form (0: 1 byte, 1: 2, 2: 4, 3: the unsupported 8). */
function lengthPrefix(length: number, form: number): number[] {
  if (form === 0) return [length & 0x3f];
  if (form === 1) return [0x40 | ((length >> 8) & 0x3f), length & 0xff];
  if (form === 2) return [0x80 | ((length >>> 24) & 0x3f), (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff];
  return [0xc0, 0, 0, 0, 0, 0, 0, length & 0xff];
}

const vectorArb = fc.record({
  bytes: fc.uint8Array({ maxLength: 60 }),
  form: fc.constantFrom(0, 0, 0, 1, 1, 2, 2, 3),
  skew: fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -2, max: 2 }) }),
});

/** A PrivateMessage-shaped byte string from random fields, lengths possibly wrong by a little. */
const headerArb = fc
  .record({
    version: fc.constantFrom(1, 1, 1, 1, 1, 1, 0, 256),
    wireformat: fc.constantFrom(2, 2, 2, 2, 2, 2, 0, 1, 3, 5, 6),
    vectors: fc.array(vectorArb, { minLength: 4, maxLength: 4 }),
    epoch: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    contentType: fc.constantFrom(1, 2, 3, 1, 2, 3, 0, 4, 255),
    cut: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.nat() }),
    extra: fc.oneof({ weight: 3, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 3 }) }),
  })
  .map(({ version, wireformat, vectors, epoch, contentType, cut, extra }) => {
    const out: number[] = [version >> 8, version & 0xff, wireformat >> 8, wireformat & 0xff];
    const push = ({ bytes, form, skew }: { bytes: Uint8Array; form: number; skew: number }) => {
      const declared = Math.max(0, bytes.length + (form === 0 ? Math.min(skew, 63 - bytes.length) : skew));
      out.push(...lengthPrefix(form === 0 ? Math.min(declared, 63) : declared, form), ...bytes);
    };
    push(vectors[0]!);
    for (let i = 7; i >= 0; i--) out.push(Number((epoch >> BigInt(8 * i)) & 0xffn));
    out.push(contentType);
    for (const vector of vectors.slice(1)) push(vector);
    out.push(...extra);
    const bytes = new Uint8Array(out);
    return cut === undefined ? bytes : bytes.slice(0, cut % (bytes.length + 1));
  });

describe("readPrivateFraming", () => {
  const samples: Uint8Array[] = [];

  beforeAll(async () => {
    const group = await buildGroup(["alice@hs1", "bob@hs2", "carol@hs3"]);
    const alice = memberOf(group, "alice@hs1").state;
    samples.push((await makeCommit(alice, { publicMessage: false })).commit);
    samples.push((await makeApplicationMessage(alice, "hello")).bytes);
    samples.push((await makeApplicationMessage(alice, "x".repeat(20_000))).bytes); // 2- and 4-byte lengths
    // PublicMessages: another wire format.
    samples.push((await makeCommit(alice)).commit);
    samples.push((await makeProposal(alice, { proposalType: "remove", remove: { removed: 2 } })).bytes);
  }, 60_000);

  it("reads real private commits and application messages as the full decode does", () => {
    expect(samples.map(agree)).toEqual(["private", "private", "private", "other-wireformat", "other-wireformat"]);
  });

  /** inspectMessage as it was before PrivateMessages were read by hand: the full decode, then the wire format's limit. */
  function inspectByFullDecode(bytes: Uint8Array): unknown {
    const message = decodeFramed(bytes, 1 << 30, "message");
    if ("reason" in message) return message;
    if (message.wireformat !== "mls_private_message") return "other";
    if (bytes.length > maxMessageBytes) return { ok: false, reason: `message: ${bytes.length} bytes exceeds the private limit of ${maxMessageBytes}` };
    const m = message.privateMessage;
    return { ok: true, wireformat: shortWireformat(message), byteSize: bytes.length, groupId: m.groupId, epoch: m.epoch, contentType: m.contentType };
  }

  it("inspectMessage answers a PrivateMessage as the full decode did (property)", () => {
    fc.assert(
      fc.property(fc.oneof(headerArb, fc.nat().map((i) => samples[i % 3]!)), (bytes) => {
        const before = inspectByFullDecode(bytes);
        if (before !== "other") expect(inspectMessage(bytes)).toEqual(before);
      }),
      { seed, numRuns: 1000 },
    );
  });

  it("agrees with the full decode on fuzzed real messages, built headers and random bytes, and never throws (property)", () => {
    const counts: Record<Verdict, number> = { private: 0, "other-wireformat": 0, undecodable: 0, trailing: 0 };
    const mutated = fc
      .tuple(fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.constantFrom("flip", "cut", "append")), { minLength: 1, maxLength: 3 }))
      .map(([which, edits]) => {
        let bytes = samples[which % samples.length]!.slice();
        for (const [at, mask, kind] of edits) {
          if (kind === "cut") bytes = bytes.slice(0, at % (bytes.length + 1));
          else if (kind === "append") bytes = new Uint8Array([...bytes, mask]);
          else if (bytes.length > 0) bytes[at % bytes.length]! ^= mask;
        }
        return bytes;
      });
    fc.assert(
      fc.property(fc.oneof(mutated, headerArb, fc.uint8Array({ maxLength: 40 })), (bytes) => {
        counts[agree(bytes)]++;
      }),
      { seed, numRuns: 3000 },
    );
    console.log(`PrivateMessage framing verdicts: ${JSON.stringify(counts)}`);
    // The generators reach every verdict, so the property compares more than rejections.
    for (const verdict of Object.keys(counts) as Verdict[]) expect(counts[verdict]).toBeGreaterThan(20);
  });
});
