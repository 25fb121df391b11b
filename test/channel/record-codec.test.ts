/**
 * The hand-written record encoders must write exactly what protobuf-es's
 * toBinary writes, for any record: empty and non-ASCII strings, empty
 * elements of repeated fields, absent and empty nested messages, and the
 * fallbacks (uint64 beyond 2^53 - 1, unknown fields). Property tests; the
 * seed is printed and FC_SEED reproduces a run.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  encodeCertificate,
  encodeCertificateRecords,
  encodeChannelEvent,
  encodeChannelRecord,
  encodeCommitStreamResult,
  encodeEpochRecord,
  encodeInboxEntry,
  encodeSubmitCommitCommand,
  handEncodedFields,
  writesEveryField,
} from "../../src/channel/record-codec.ts";
import { InboxEntrySchema } from "../../src/gen/epochd/inbox/v1/inbox_pb.ts";
import {
  CertificateSchema,
  ChannelEventSchema,
  MemberSchema,
  SignatureSchema,
  SubmitCommitRequestSchema,
  SubmitCommitResponseSchema,
  SubmitCommitStreamResponseSchema,
} from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema, ChannelRecordSchema, CommitSignaturesSchema, EpochRecordSchema } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";

const seed = process.env["FC_SEED"] === undefined ? Date.now() % 2 ** 31 : Number(process.env["FC_SEED"]);
console.log(`record codec property tests: FC_SEED=${seed}`);

const text = fc.oneof(fc.constant(""), fc.string({ maxLength: 12 }), fc.string({ unit: "grapheme", maxLength: 6 }));
const bytes = (maxLength: number) => fc.uint8Array({ maxLength });
/** uint64 values, mostly small, some at and beyond 2^53 - 1 (the fallback). */
const uint64 = fc.oneof({ weight: 6, arbitrary: fc.bigInt({ min: 0n, max: 100_000n }) }, { weight: 1, arbitrary: fc.constantFrom(2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n) });
const uint32 = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
/** Enum values, some negative (the fallback: toBinary writes them as ten-byte varints). */
const enumValue = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 5 }) }, { weight: 1, arbitrary: fc.integer({ min: -3, max: -1 }) });

const signature = fc.record({ homeserverId: text, signature: bytes(64), leafIndex: uint32, leafCount: uint32, proof: fc.array(bytes(32), { maxLength: 3 }) }).map((init) => create(SignatureSchema, init));
const certificate = fc
  .record({ clusterId: text, channelId: text, epoch: uint64, commitHash: bytes(32), logIndex: uint64, signatures: fc.array(signature, { maxLength: 3 }), voters: fc.array(text, { maxLength: 4 }) })
  .map((init) => create(CertificateSchema, init));
const member = fc.record({ deviceId: text, homeserverId: text, role: enumValue, leafIndex: uint32 }).map((init) => create(MemberSchema, init));
const channelRecord = fc
  .record({
    channelId: text,
    groupId: bytes(16),
    epoch: uint64,
    contentType: text,
    handshakeMode: enumValue,
    groupInfo: bytes(64),
    members: fc.array(member, { maxLength: 4 }),
    lastSequence: uint64,
    pendingProposals: fc.array(bytes(8), { maxLength: 3 }),
    pendingProposedAdds: fc.array(text, { maxLength: 3 }),
    pendingProposedRemoves: fc.array(text, { maxLength: 3 }),
    witnesses: fc.array(text, { maxLength: 3 }),
  })
  .map((init) => create(ChannelRecordSchema, init));
const epochRecord = fc
  .record({ epoch: uint64, commit: bytes(64), welcome: bytes(16), certificate: fc.option(certificate, { nil: undefined }), sequence: uint64 })
  .map(({ certificate: c, ...rest }) => create(EpochRecordSchema, { ...rest, ...(c === undefined ? {} : { certificate: c }) }));
const event = fc
  .record({ sequence: uint64, kind: enumValue, epoch: uint64, payload: bytes(64), certificate: fc.option(certificate, { nil: undefined }), welcome: bytes(16) })
  .map(({ certificate: c, ...rest }) => create(ChannelEventSchema, { ...rest, ...(c === undefined ? {} : { certificate: c }) }));

const inboxEntry = fc
  .record({
    sequence: uint64,
    messageId: text,
    kind: enumValue,
    channelId: text,
    channelSequence: uint64,
    epoch: uint64,
    payload: bytes(64),
    certificate: fc.option(certificate, { nil: undefined }),
    logIndex: uint64,
    senderDeviceId: text,
    gapReason: enumValue,
  })
  .map(({ certificate: c, ...rest }) => create(InboxEntrySchema, { ...rest, ...(c === undefined ? {} : { certificate: c }) }));

const submitCommit = fc
  .record({ channelId: text, epoch: uint64, commit: bytes(64), nextGroupInfo: bytes(64), welcome: bytes(16) })
  .map((init) => create(SubmitCommitRequestSchema, init));
const certificateRecord = fc.record({ channelId: text, epoch: uint64, signatures: fc.array(signature, { maxLength: 3 }), signerKeys: fc.array(bytes(32), { maxLength: 3 }) });

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const safeMax = 2n ** 53n - 1n;

describe("hand-written record encoders", () => {
  it("write exactly toBinary's bytes for any certificate, epoch record, event, channel record and inbox entry", () => {
    fc.assert(fc.property(certificate, (c) => hex(encodeCertificate(c)) === hex(toBinary(CertificateSchema, c))), { seed, numRuns: 500 });
    fc.assert(fc.property(epochRecord, (r) => hex(encodeEpochRecord(r)) === hex(toBinary(EpochRecordSchema, r))), { seed, numRuns: 500 });
    fc.assert(fc.property(event, (e) => hex(encodeChannelEvent(e)) === hex(toBinary(ChannelEventSchema, e))), { seed, numRuns: 500 });
    fc.assert(fc.property(channelRecord, (r) => hex(encodeChannelRecord(r)) === hex(toBinary(ChannelRecordSchema, r))), { seed, numRuns: 500 });
    fc.assert(fc.property(inboxEntry, (e) => hex(encodeInboxEntry(e)) === hex(toBinary(InboxEntrySchema, e))), { seed, numRuns: 500 });
  });

  it("write exactly toBinary's bytes for a SubmitCommit's entry, the certificates a command takes along and a commit stream's answer", () => {
    fc.assert(
      fc.property(submitCommit, bytes(16), (request, requestId) => {
        const expected = toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command: { case: "submitCommit", value: request }, requestId }));
        return hex(encodeSubmitCommitCommand(request, requestId)) === hex(expected);
      }),
      { seed, numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.array(certificateRecord, { maxLength: 3 }), (certificates) => {
        const expected = toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { certificates }));
        return hex(encodeCertificateRecords(certificates)) === hex(expected);
      }),
      { seed, numRuns: 500 },
    );
    let byHand = 0;
    fc.assert(
      fc.property(uint64, uint64, fc.option(certificate, { nil: undefined }), (requestId, epoch, c) => {
        const encoded = encodeCommitStreamResult(requestId, epoch, c);
        const fits = requestId <= safeMax && epoch <= safeMax && (c === undefined || (c.epoch <= safeMax && c.logIndex <= safeMax));
        if (encoded === undefined) return !fits;
        byHand++;
        const expected = toBinary(SubmitCommitStreamResponseSchema, create(SubmitCommitStreamResponseSchema, { requestId, result: { epoch, ...(c === undefined ? {} : { certificate: c }) } }));
        return hex(encoded) === hex(expected);
      }),
      { seed, numRuns: 500 },
    );
    expect(byHand).toBeGreaterThan(250);
  });

  it("keep the unknown fields of a record read from a newer version, as toBinary does", () => {
    const newer = new Uint8Array([...toBinary(CertificateSchema, create(CertificateSchema, { channelId: "c", epoch: 3n })), 0xa0, 0x01, 0x2a]); // field 20 = 42
    const read = fromBinary(CertificateSchema, newer);
    expect(hex(encodeCertificate(read))).toBe(hex(newer));
    const record = create(EpochRecordSchema, { epoch: 3n, certificate: read });
    expect(hex(encodeEpochRecord(record))).toBe(hex(toBinary(EpochRecordSchema, record)));
  });

  it("write every field of their messages: a field added to the proto and not to an encoder is caught here", () => {
    const schemas = [SignatureSchema, CertificateSchema, EpochRecordSchema, ChannelEventSchema, MemberSchema, ChannelRecordSchema, InboxEntrySchema, SubmitCommitRequestSchema, CommitSignaturesSchema, SubmitCommitResponseSchema, SubmitCommitStreamResponseSchema];
    const numbers = (list: readonly number[]) => [...list].sort((a, b) => a - b);
    for (const schema of schemas) expect(numbers(handEncodedFields.get(schema.typeName) ?? []), schema.typeName).toEqual(numbers(schema.fields.map((f) => f.number)));
    expect(writesEveryField(...schemas)).toBe(true);
    // The same schema with one more field: its records would go to toBinary.
    const grown = { ...CertificateSchema, fields: [...CertificateSchema.fields, { ...CertificateSchema.fields[0]!, number: 8 }] };
    expect(writesEveryField(grown)).toBe(false);
  });
});
