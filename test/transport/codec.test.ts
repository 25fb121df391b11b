import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as pb from "../../src/gen/epochd/raft/v1/raft_pb.ts";
import { EntryType, MessageType, message, type Entry, type Message } from "../../src/raft/types.ts";
import {
  CodecError,
  decodeBatch,
  decodeSnapshotRequest,
  decodeStreamRequest,
  defaultCodecLimits,
  encodeBatch,
  encodeSnapshotChunk,
  encodeSnapshotEnd,
  encodeSnapshotHeader,
  type CodecErrorCode,
} from "../../src/transport/codec.ts";

const seed = process.env["FC_SEED"] === undefined ? Date.now() % 2 ** 31 : Number(process.env["FC_SEED"]);
console.log(`codec property tests: FC_SEED=${seed}`);

const idArb = fc.stringMatching(/^[a-z0-9-]{1,16}$/);
const numberArb = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const bytesArb = fc.uint8Array({ maxLength: 64 }).map((b) => new Uint8Array(b));
const nonSnapshotTypes = Object.values(MessageType).filter((v): v is MessageType => typeof v === "number" && v !== MessageType.Snapshot);

/** Valid messages (never Snapshot): contiguous entries with non-decreasing terms between logTerm and term. */
const messageArb: fc.Arbitrary<Message> = fc
  .record({
    type: fc.constantFrom(...nonSnapshotTypes),
    groupId: idArb, from: idArb, to: idArb,
    term: fc.nat({ max: 1_000_000 }), index: fc.nat({ max: 2 ** 40 }),
    termSteps: fc.array(fc.tuple(fc.nat({ max: 3 }), fc.constantFrom(EntryType.Normal, EntryType.ConfChange), bytesArb), { maxLength: 8 }),
    commit: numberArb, reject: fc.boolean(), rejectHint: numberArb, rejectHintTerm: numberArb, context: bytesArb,
  })
  .map(({ termSteps, ...r }) => {
    const logTerm = Math.max(0, r.term - 10);
    let term = logTerm;
    const entries: Entry[] = termSteps.map(([step, type, data], i) => {
      term = Math.min(r.term, term + step);
      // Forwarded proposals carry application data only; the leader assigns index and term.
      if (r.type === MessageType.Propose) return { term: 0, index: 0, type: EntryType.Normal, data };
      return { term, index: r.index + 1 + i, type, data };
    });
    return message({ ...r, logTerm, entries });
  });

function roundTrip(m: Message): Message {
  const decoded = decodeBatch(encodeBatch([m]), defaultCodecLimits);
  expect(decoded).toHaveLength(1);
  return decoded[0]!;
}

function expectCodecError(run: () => unknown, code: CodecErrorCode): void {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(CodecError);
    expect((error as CodecError).code).toBe(code);
    return;
  }
  expect.fail(`expected CodecError ${code}`);
}

/** A batch built directly in wire form, to send what our encoder never would. */
function wireBatch(...messages: Parameters<typeof create<typeof pb.MessageSchema>>[1][]): Uint8Array {
  return toBinary(pb.StreamRequestSchema, create(pb.StreamRequestSchema, {
    batch: { messages: messages.map((m) => create(pb.MessageSchema, m)) },
  }));
}

const base = { type: pb.MessageType.APPEND, groupId: "g1", from: "hs1", to: "hs2", term: 5n, logTerm: 4n, index: 10n };

/** The protobuf-es form of `m`: the generated codec is the reference our hand-written one must match. */
function referenceProto(m: Message): pb.Message {
  const metadata = m.snapshot?.metadata;
  return create(pb.MessageSchema, {
    type: m.type as number as pb.MessageType,
    groupId: m.groupId, from: m.from, to: m.to,
    term: BigInt(m.term), logTerm: BigInt(m.logTerm), index: BigInt(m.index),
    entries: m.entries.map((e) => ({ term: BigInt(e.term), index: BigInt(e.index), type: e.type === EntryType.ConfChange ? pb.EntryType.CONF_CHANGE : pb.EntryType.NORMAL, data: e.data })),
    commit: BigInt(m.commit), reject: m.reject, rejectHint: BigInt(m.rejectHint), rejectHintTerm: BigInt(m.rejectHintTerm), context: m.context,
    ...(metadata === undefined ? {} : { snapshot: { index: BigInt(metadata.index), term: BigInt(metadata.term), confState: { voters: [...metadata.confState.voters], votersOutgoing: [...metadata.confState.votersOutgoing], learners: [...metadata.confState.learners], learnersNext: [...metadata.confState.learnersNext] } } }),
  });
}

const noticeArb = fc.record({ topic: idArb, payload: bytesArb });

const snapshotArb: fc.Arbitrary<Message> = fc
  .record({
    groupId: idArb, from: idArb, to: idArb, term: numberArb, index: numberArb, snapshotTerm: numberArb,
    voters: fc.array(idArb, { maxLength: 5 }), learners: fc.array(idArb, { maxLength: 3 }), dataBytes: fc.nat({ max: 4096 }),
  })
  .map((r) => message({
    type: MessageType.Snapshot, groupId: r.groupId, from: r.from, to: r.to, term: r.term,
    snapshot: { metadata: { index: r.index, term: r.snapshotTerm, confState: { voters: r.voters, votersOutgoing: [], learners: r.learners, learnersNext: [] } }, data: new Uint8Array(r.dataBytes) },
  }));

describe("codec", () => {
  it("writes exactly the bytes of the generated protobuf-es codec, which reads them back (property)", () => {
    fc.assert(fc.property(fc.array(messageArb, { maxLength: 6 }), fc.array(noticeArb, { maxLength: 3 }), (messages, notices) => {
      const ours = encodeBatch(messages, notices);
      const reference = toBinary(pb.StreamRequestSchema, create(pb.StreamRequestSchema, { batch: { messages: messages.map(referenceProto) }, notices }));
      expect(Buffer.from(ours).equals(Buffer.from(reference))).toBe(true);
      expect(fromBinary(pb.StreamRequestSchema, ours).batch?.messages.length).toBe(messages.length);
    }), { seed, numRuns: 300 });
  });

  it("reads what the generated protobuf-es codec writes (property)", () => {
    fc.assert(fc.property(fc.array(messageArb, { maxLength: 6 }), fc.array(noticeArb, { maxLength: 3 }), (messages, notices) => {
      const reference = toBinary(pb.StreamRequestSchema, create(pb.StreamRequestSchema, { batch: { messages: messages.map(referenceProto) }, notices }));
      expect(decodeStreamRequest(reference, defaultCodecLimits)).toEqual({ messages, notices });
    }), { seed, numRuns: 300 });
  });

  it("writes snapshot headers as protobuf-es does and reads them back (property)", () => {
    fc.assert(fc.property(snapshotArb, (m) => {
      const ours = encodeSnapshotHeader(m);
      const reference = toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, {
        chunk: { case: "header", value: { message: referenceProto(m) } },
      }));
      expect(Buffer.from(ours).equals(Buffer.from(reference))).toBe(true);
      const decoded = decodeSnapshotRequest(ours, defaultCodecLimits);
      expect(decoded).toEqual({ kind: "header", message: { ...m, snapshot: { metadata: m.snapshot!.metadata, data: new Uint8Array(0) } } });
    }), { seed, numRuns: 200 });
  });

  it("writes a snapshot's end as protobuf-es does and reads it back (property)", () => {
    fc.assert(fc.property(fc.nat({ max: 2 ** 40 }), fc.nat({ max: 0xffffffff }), (dataBytes, crc32c) => {
      const ours = encodeSnapshotEnd(dataBytes, crc32c);
      const reference = toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, {
        chunk: { case: "end", value: { dataBytes: BigInt(dataBytes), crc32c } },
      }));
      expect(Buffer.from(ours).equals(Buffer.from(reference))).toBe(true);
      expect(decodeSnapshotRequest(ours, defaultCodecLimits)).toEqual({ kind: "end", dataBytes, crc32c });
    }), { seed, numRuns: 200 });
  });

  it("skips unknown fields, as any protobuf reader does", () => {
    const m = message({ type: MessageType.Heartbeat, groupId: "g", from: "a", to: "b", term: 3, commit: 2 });
    const unknown = Uint8Array.of((15 << 3) | 0, 0x96, 0x01, (16 << 3) | 2, 0x02, 0x01, 0x02, 0x7d, 1, 2, 3, 4, 0x79, 1, 2, 3, 4, 5, 6, 7, 8);
    expect(decodeBatch(Buffer.concat([encodeBatch([m]), unknown]), defaultCodecLimits)).toEqual([m]);
    // A group (wire type 3) is not something raft.proto ever produces.
    expectCodecError(() => decodeBatch(Uint8Array.of((7 << 3) | 3), defaultCodecLimits), "malformed-protobuf");
    // A known field with the wrong wire type.
    expectCodecError(() => decodeBatch(Uint8Array.of((1 << 3) | 0, 1), defaultCodecLimits), "malformed-protobuf");
  });

  it("refuses strings that are not UTF-8", () => {
    const bytes = Buffer.from(encodeBatch([message({ type: MessageType.Heartbeat, groupId: "g", from: "a", to: "b", term: 3 })]));
    const at = bytes.indexOf(0x67); // "g"
    bytes[at] = 0xff;
    expectCodecError(() => decodeBatch(bytes, defaultCodecLimits), "malformed-protobuf");
  });

  it("round-trips every valid message (property)", () => {
    fc.assert(fc.property(messageArb, (m) => { expect(roundTrip(m)).toEqual(m); }), { seed, numRuns: 300 });
  });

  it("round-trips a batch of messages of several groups in order", () => {
    const batch = [1, 2, 3].map((i) => message({ type: MessageType.Heartbeat, groupId: `g${i}`, from: "a", to: "b", term: i, commit: i }));
    expect(decodeBatch(encodeBatch(batch), defaultCodecLimits)).toEqual(batch);
  });

  it("round-trips a snapshot header and chunks", () => {
    const snap = message({
      type: MessageType.Snapshot, groupId: "g", from: "a", to: "b", term: 3,
      snapshot: { metadata: { index: 7, term: 2, confState: { voters: ["a", "b"], votersOutgoing: [], learners: ["c"], learnersNext: [] } }, data: new Uint8Array([1, 2, 3]) },
    });
    const header = decodeSnapshotRequest(encodeSnapshotHeader(snap), defaultCodecLimits);
    expect(header.kind).toBe("header");
    if (header.kind !== "header") return;
    expect(header.message.snapshot?.metadata).toEqual(snap.snapshot?.metadata);
    expect(decodeSnapshotRequest(encodeSnapshotChunk(new Uint8Array([9])), defaultCodecLimits)).toEqual({ kind: "data", data: new Uint8Array([9]) });
  });

  it("decodes entries into their own memory, not views of the batch", () => {
    const m = message({ ...base, type: MessageType.Append, groupId: "g", term: 1, logTerm: 1, index: 0, entries: [{ term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(100) }] });
    const bytes = Buffer.from(encodeBatch([m])); // what grpc-js hands over
    const decoded = decodeBatch(bytes, defaultCodecLimits)[0]!;
    expect(decoded.entries[0]!.data.buffer).not.toBe(bytes.buffer);
    expect(Buffer.isBuffer(decoded.entries[0]!.data)).toBe(false);
  });

  it("rejects bytes that are not protobuf", () => {
    expectCodecError(() => decodeBatch(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]), defaultCodecLimits), "malformed-protobuf");
    expectCodecError(() => decodeBatch(new Uint8Array([0x0a, 0x10, 0x01]), defaultCodecLimits), "malformed-protobuf");
  });

  it("rejects unknown message and entry types", () => {
    expectCodecError(() => decodeBatch(wireBatch({ ...base, type: 99 as pb.MessageType }), defaultCodecLimits), "unknown-message-type");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, type: pb.MessageType.UNSPECIFIED }), defaultCodecLimits), "unknown-message-type");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [{ term: 5n, index: 11n, type: pb.EntryType.UNSPECIFIED }] }), defaultCodecLimits), "unknown-entry-type");
  });

  it("rejects empty and overlong ids", () => {
    expectCodecError(() => decodeBatch(wireBatch({ ...base, groupId: "" }), defaultCodecLimits), "bad-id");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, from: "" }), defaultCodecLimits), "bad-id");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, to: "x".repeat(129) }), defaultCodecLimits), "bad-id");
  });

  it("rejects numbers beyond 2^53 - 1", () => {
    expectCodecError(() => decodeBatch(wireBatch({ ...base, commit: 2n ** 53n }), defaultCodecLimits), "number-out-of-range");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, term: 2n ** 64n - 1n }), defaultCodecLimits), "number-out-of-range");
  });

  it("rejects entries that are not contiguous after index, or whose terms go backwards", () => {
    const entry = (index: bigint, term: bigint) => ({ index, term, type: pb.EntryType.NORMAL });
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(12n, 5n)] }), defaultCodecLimits), "entries-not-contiguous");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(11n, 5n), entry(11n, 5n)] }), defaultCodecLimits), "entries-not-contiguous");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(11n, 5n), entry(12n, 4n)] }), defaultCodecLimits), "entry-terms-out-of-order");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(11n, 3n)] }), defaultCodecLimits), "entry-terms-out-of-order");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(11n, 6n)] }), defaultCodecLimits), "entry-terms-out-of-order");
  });

  it("rejects sizes over the limits", () => {
    const limits = { ...defaultCodecLimits, maxEntryBytes: 10, maxContextBytes: 4, maxEntriesPerMessage: 2, maxMessagesPerBatch: 2, maxMembers: 1 };
    const entry = (i: bigint, data = new Uint8Array(1)) => ({ index: 10n + i, term: 5n, type: pb.EntryType.NORMAL, data });
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(1n, new Uint8Array(11))] }), limits), "entry-too-large");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, entries: [entry(1n), entry(2n), entry(3n)] }), limits), "too-many-entries");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, context: new Uint8Array(5) }), limits), "context-too-large");
    expectCodecError(() => decodeBatch(wireBatch(base, base, base), limits), "too-many-messages");
    const snapshotHeader = toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, {
      chunk: { case: "header", value: { message: { ...base, type: pb.MessageType.SNAPSHOT, snapshot: { confState: { voters: ["a", "b"] } } } } },
    }));
    expectCodecError(() => decodeSnapshotRequest(snapshotHeader, limits), "too-many-members");
  });

  it("rejects snapshots out of place", () => {
    expectCodecError(() => decodeBatch(wireBatch({ ...base, type: pb.MessageType.SNAPSHOT, snapshot: { confState: {} } }), defaultCodecLimits), "snapshot-misplaced");
    expectCodecError(() => decodeBatch(wireBatch({ ...base, snapshot: { confState: {} } }), defaultCodecLimits), "snapshot-misplaced");
    const headerWithoutMetadata = toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, {
      chunk: { case: "header", value: { message: { ...base, type: pb.MessageType.SNAPSHOT } } },
    }));
    expectCodecError(() => decodeSnapshotRequest(headerWithoutMetadata, defaultCodecLimits), "missing-field");
    const headerOfAVote = toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, {
      chunk: { case: "header", value: { message: { ...base, type: pb.MessageType.VOTE } } },
    }));
    expectCodecError(() => decodeSnapshotRequest(headerOfAVote, defaultCodecLimits), "snapshot-misplaced");
  });

  it("never throws anything but CodecError on random bytes (property)", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
      for (const decode of [() => decodeBatch(bytes, defaultCodecLimits), () => decodeSnapshotRequest(bytes, defaultCodecLimits)]) {
        try {
          decode();
        } catch (error) {
          expect(error).toBeInstanceOf(CodecError);
        }
      }
    }), { seed, numRuns: 500 });
  });

  it("never throws anything but CodecError on mutated valid batches (property)", () => {
    fc.assert(fc.property(messageArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (m, position, xor) => {
      const bytes = encodeBatch([m]);
      bytes[position % bytes.length]! ^= xor;
      try {
        decodeBatch(bytes, defaultCodecLimits);
      } catch (error) {
        expect(error).toBeInstanceOf(CodecError);
      }
    }), { seed, numRuns: 500 });
  });

  it("carries notices next to Raft messages, in order, within their limits", () => {
    const m = message({ type: MessageType.Heartbeat, groupId: "g", from: "a", to: "b", term: 3, commit: 2 });
    const notices = [{ topic: "certificate-signatures", payload: Uint8Array.of(1, 2, 3) }, { topic: "other", payload: new Uint8Array(0) }];
    const decoded = decodeStreamRequest(encodeBatch([m], notices), defaultCodecLimits);
    expect(decoded.messages).toEqual([m]);
    expect(decoded.notices).toEqual(notices);
    expect(decodeStreamRequest(encodeBatch([], notices), defaultCodecLimits)).toEqual({ messages: [], notices });
    expectCodecError(() => decodeStreamRequest(encodeBatch([], notices), { ...defaultCodecLimits, maxNoticesPerBatch: 1 }), "too-many-notices");
    expectCodecError(() => decodeStreamRequest(encodeBatch([], [notices[0]!]), { ...defaultCodecLimits, maxNoticeBytes: 2 }), "notice-too-large");
    expectCodecError(() => decodeStreamRequest(encodeBatch([], [{ topic: "", payload: new Uint8Array(0) }]), defaultCodecLimits), "bad-id");
  });
});
