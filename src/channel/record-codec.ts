/**
 * Hand-written encoders of the records every accepted commit writes on every
 * homeserver (the channel record, the epoch record, the event, the
 * certificate, and an inbox entry per local member device), and of the
 * messages each commit makes on its way (the command entry, the certificates
 * recorded along with the channel's next command, the answer on a
 * SubmitCommitStream): protobuf-es's reflection-driven `toBinary` was an eighth of a
 * homeserver's busy time under commit load, and a fifth of what its leader allocated. They write exactly the bytes
 * `toBinary` writes (fields in number order, proto3 defaults left out,
 * repeated elements always), which a property test holds them to, so what is
 * stored stays readable by any protobuf reader. A record with unknown fields
 * (read from a newer version) or a uint64 beyond 2^53 - 1 goes to `toBinary`,
 * and so does every record of a message whose schema has a field its
 * encoder does not write (a field added to the proto and not here): slower,
 * never lossy.
 */
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { CertificateSchema, ChannelEventSchema, MemberSchema, SignatureSchema, type Certificate, type ChannelEvent, type Member, type Signature } from "../gen/epochd/channel/v1/channel_pb.ts";
import { InboxEntrySchema, type InboxEntry } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import {
  ChannelCommandSchema,
  ChannelRecordSchema,
  CommitSignaturesSchema,
  EpochRecordSchema,
  type ChannelRecord,
  type CommitSignatures,
  type EpochRecord,
} from "../gen/epochd/state/v1/channel_state_pb.ts";
import { SubmitCommitRequestSchema, SubmitCommitResponseSchema, SubmitCommitStreamResponseSchema, type SubmitCommitRequest } from "../gen/epochd/channel/v1/channel_pb.ts";
import { delimitedSize, lengthFieldSize, utf8Length, varintFieldSize, WireWriter } from "../transport/protowire.ts";

const safeMax = BigInt(Number.MAX_SAFE_INTEGER);

/** The field numbers each hand-written encoder writes, by message type name (a test pins them to the schemas). */
export const handEncodedFields: ReadonlyMap<string, readonly number[]> = new Map([
  [SignatureSchema.typeName, [1, 2, 3, 4, 5]],
  [CertificateSchema.typeName, [1, 2, 3, 4, 5, 6, 7]],
  [EpochRecordSchema.typeName, [1, 2, 3, 4, 5]],
  [ChannelEventSchema.typeName, [1, 2, 3, 4, 5, 6]],
  [MemberSchema.typeName, [1, 2, 3, 4]],
  [ChannelRecordSchema.typeName, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]],
  [InboxEntrySchema.typeName, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]],
  [SubmitCommitRequestSchema.typeName, [1, 2, 3, 4, 5]],
  [CommitSignaturesSchema.typeName, [1, 2, 3, 4]],
  [SubmitCommitResponseSchema.typeName, [1, 2]],
  // Field 3 (an item's error) is never set on the answers written by hand (encodeCommitStreamResult).
  [SubmitCommitStreamResponseSchema.typeName, [1, 2, 3]],
]);

/** Whether the encoders write every field of each of `schemas` (else their records go to toBinary). */
export function writesEveryField(...schemas: DescMessage[]): boolean {
  return schemas.every((schema) => {
    const written = new Set(handEncodedFields.get(schema.typeName) ?? []);
    return schema.fields.length === written.size && schema.fields.every((field) => written.has(field.number));
  });
}

// A record's nested certificate is checked on its own (plainCertificate).
const certificateByHand = writesEveryField(CertificateSchema, SignatureSchema);
const epochRecordByHand = writesEveryField(EpochRecordSchema);
const eventByHand = writesEveryField(ChannelEventSchema);
const channelRecordByHand = writesEveryField(ChannelRecordSchema, MemberSchema);
const inboxEntryByHand = writesEveryField(InboxEntrySchema);
const submitCommitByHand = writesEveryField(SubmitCommitRequestSchema);
const commitSignaturesByHand = writesEveryField(CommitSignaturesSchema, SignatureSchema);
const commitResponseByHand = writesEveryField(SubmitCommitStreamResponseSchema, SubmitCommitResponseSchema) && certificateByHand;

/** What `writer` wrote, as a plain Uint8Array (as toBinary returns; a Buffer would differ when read back). */
function bytesOf(writer: WireWriter): Uint8Array {
  const out = writer.finish();
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Whether the hand-written path may encode a message with these uint64 and
 * enum values: no unknown fields, uint64s up to 2^53 - 1, no negative enum
 * (toBinary writes those as ten-byte varints).
 */
function plain(message: { readonly $unknown?: readonly unknown[] | undefined }, uint64s: readonly bigint[] = [], enums: readonly number[] = []): boolean {
  return (message.$unknown === undefined || message.$unknown.length === 0) && uint64s.every((v) => v >= 0n && v <= safeMax) && enums.every((v) => v >= 0);
}

const stringSize = (value: string) => lengthFieldSize(utf8Length(value));
const repeatedStringsSize = (values: readonly string[]) => values.reduce((size, value) => size + delimitedSize(utf8Length(value)), 0);
const repeatedBytesSize = (values: readonly Uint8Array[]) => values.reduce((size, value) => size + delimitedSize(value.length), 0);

function writeString(writer: WireWriter, field: number, value: string): void {
  writer.stringField(field, value, utf8Length(value));
}

function writeRepeatedStrings(writer: WireWriter, field: number, values: readonly string[]): void {
  for (const value of values) writer.stringElement(field, value, utf8Length(value));
}

function writeRepeatedBytes(writer: WireWriter, field: number, values: readonly Uint8Array[]): void {
  for (const value of values) writer.delimited(field, value.length).raw(value);
}

function signatureSize(s: Signature): number {
  return stringSize(s.homeserverId) + lengthFieldSize(s.signature.length) + varintFieldSize(s.leafIndex) + varintFieldSize(s.leafCount) + repeatedBytesSize(s.proof);
}

function writeSignature(writer: WireWriter, s: Signature): void {
  writeString(writer, 1, s.homeserverId);
  writer.bytesField(2, s.signature);
  writer.varintField(3, s.leafIndex);
  writer.varintField(4, s.leafCount);
  writeRepeatedBytes(writer, 5, s.proof);
}

function certificateSize(c: Certificate): number {
  let size = stringSize(c.clusterId) + stringSize(c.channelId) + varintFieldSize(Number(c.epoch)) + lengthFieldSize(c.commitHash.length) + varintFieldSize(Number(c.logIndex));
  for (const s of c.signatures) size += delimitedSize(signatureSize(s));
  return size + repeatedStringsSize(c.voters);
}

function writeCertificate(writer: WireWriter, c: Certificate): void {
  writeString(writer, 1, c.clusterId);
  writeString(writer, 2, c.channelId);
  writer.varintField(3, Number(c.epoch));
  writer.bytesField(4, c.commitHash);
  writer.varintField(5, Number(c.logIndex));
  for (const s of c.signatures) {
    writer.delimited(6, signatureSize(s));
    writeSignature(writer, s);
  }
  writeRepeatedStrings(writer, 7, c.voters);
}

const plainCertificate = (c: Certificate) => certificateByHand && plain(c, [c.epoch, c.logIndex]) && c.signatures.every((s) => plain(s));

/** `toBinary(CertificateSchema, certificate)`, by hand. */
export function encodeCertificate(certificate: Certificate): Uint8Array {
  if (!plainCertificate(certificate)) return toBinary(CertificateSchema, certificate);
  const writer = new WireWriter(certificateSize(certificate));
  writeCertificate(writer, certificate);
  return bytesOf(writer);
}

/** `toBinary(EpochRecordSchema, record)`, by hand. */
export function encodeEpochRecord(record: EpochRecord): Uint8Array {
  const certificate = record.certificate;
  if (!epochRecordByHand || !plain(record, [record.epoch, record.sequence]) || (certificate !== undefined && !plainCertificate(certificate))) return toBinary(EpochRecordSchema, record);
  const certificateBytes = certificate === undefined ? 0 : certificateSize(certificate);
  const size =
    varintFieldSize(Number(record.epoch)) +
    lengthFieldSize(record.commit.length) +
    lengthFieldSize(record.welcome.length) +
    (certificate === undefined ? 0 : delimitedSize(certificateBytes)) +
    varintFieldSize(Number(record.sequence));
  const writer = new WireWriter(size);
  writer.varintField(1, Number(record.epoch));
  writer.bytesField(2, record.commit);
  writer.bytesField(3, record.welcome);
  if (certificate !== undefined) {
    writer.delimited(4, certificateBytes);
    writeCertificate(writer, certificate);
  }
  writer.varintField(5, Number(record.sequence));
  return bytesOf(writer);
}

/** `toBinary(ChannelEventSchema, event)`, by hand. */
export function encodeChannelEvent(event: ChannelEvent): Uint8Array {
  const certificate = event.certificate;
  if (!eventByHand || !plain(event, [event.sequence, event.epoch], [event.kind]) || (certificate !== undefined && !plainCertificate(certificate))) return toBinary(ChannelEventSchema, event);
  const certificateBytes = certificate === undefined ? 0 : certificateSize(certificate);
  const size =
    varintFieldSize(Number(event.sequence)) +
    varintFieldSize(event.kind) +
    varintFieldSize(Number(event.epoch)) +
    lengthFieldSize(event.payload.length) +
    (certificate === undefined ? 0 : delimitedSize(certificateBytes)) +
    lengthFieldSize(event.welcome.length);
  const writer = new WireWriter(size);
  writer.varintField(1, Number(event.sequence));
  writer.varintField(2, event.kind);
  writer.varintField(3, Number(event.epoch));
  writer.bytesField(4, event.payload);
  if (certificate !== undefined) {
    writer.delimited(5, certificateBytes);
    writeCertificate(writer, certificate);
  }
  writer.bytesField(6, event.welcome);
  return bytesOf(writer);
}

function memberSize(m: Member): number {
  return stringSize(m.deviceId) + stringSize(m.homeserverId) + varintFieldSize(m.role) + varintFieldSize(m.leafIndex);
}

/** `toBinary(ChannelRecordSchema, record)`, by hand. */
export function encodeChannelRecord(record: ChannelRecord): Uint8Array {
  if (!channelRecordByHand || !plain(record, [record.epoch, record.lastSequence], [record.handshakeMode]) || !record.members.every((m) => plain(m, [], [m.role]))) return toBinary(ChannelRecordSchema, record);
  let membersSize = 0;
  for (const m of record.members) membersSize += delimitedSize(memberSize(m));
  const size =
    stringSize(record.channelId) +
    lengthFieldSize(record.groupId.length) +
    varintFieldSize(Number(record.epoch)) +
    stringSize(record.contentType) +
    varintFieldSize(record.handshakeMode) +
    lengthFieldSize(record.groupInfo.length) +
    membersSize +
    varintFieldSize(Number(record.lastSequence)) +
    repeatedBytesSize(record.pendingProposals) +
    repeatedStringsSize(record.pendingProposedAdds) +
    repeatedStringsSize(record.pendingProposedRemoves) +
    repeatedStringsSize(record.witnesses);
  const writer = new WireWriter(size);
  writeString(writer, 1, record.channelId);
  writer.bytesField(2, record.groupId);
  writer.varintField(3, Number(record.epoch));
  writeString(writer, 4, record.contentType);
  writer.varintField(5, record.handshakeMode);
  writer.bytesField(6, record.groupInfo);
  for (const m of record.members) {
    writer.delimited(7, memberSize(m));
    writeString(writer, 1, m.deviceId);
    writeString(writer, 2, m.homeserverId);
    writer.varintField(3, m.role);
    writer.varintField(4, m.leafIndex);
  }
  writer.varintField(8, Number(record.lastSequence));
  writeRepeatedBytes(writer, 9, record.pendingProposals);
  writeRepeatedStrings(writer, 10, record.pendingProposedAdds);
  writeRepeatedStrings(writer, 11, record.pendingProposedRemoves);
  writeRepeatedStrings(writer, 12, record.witnesses);
  return bytesOf(writer);
}

/** `toBinary(InboxEntrySchema, entry)`, by hand. */
export function encodeInboxEntry(entry: InboxEntry): Uint8Array {
  const certificate = entry.certificate;
  if (!inboxEntryByHand || !plain(entry, [entry.sequence, entry.channelSequence, entry.epoch, entry.logIndex], [entry.kind, entry.gapReason]) || (certificate !== undefined && !plainCertificate(certificate))) {
    return toBinary(InboxEntrySchema, entry);
  }
  const certificateBytes = certificate === undefined ? 0 : certificateSize(certificate);
  const size =
    varintFieldSize(Number(entry.sequence)) +
    stringSize(entry.messageId) +
    varintFieldSize(entry.kind) +
    stringSize(entry.channelId) +
    varintFieldSize(Number(entry.channelSequence)) +
    varintFieldSize(Number(entry.epoch)) +
    lengthFieldSize(entry.payload.length) +
    (certificate === undefined ? 0 : delimitedSize(certificateBytes)) +
    varintFieldSize(Number(entry.logIndex)) +
    stringSize(entry.senderDeviceId) +
    varintFieldSize(entry.gapReason);
  const writer = new WireWriter(size);
  writer.varintField(1, Number(entry.sequence));
  writeString(writer, 2, entry.messageId);
  writer.varintField(3, entry.kind);
  writeString(writer, 4, entry.channelId);
  writer.varintField(5, Number(entry.channelSequence));
  writer.varintField(6, Number(entry.epoch));
  writer.bytesField(7, entry.payload);
  if (certificate !== undefined) {
    writer.delimited(8, certificateBytes);
    writeCertificate(writer, certificate);
  }
  writer.varintField(9, Number(entry.logIndex));
  writeString(writer, 10, entry.senderDeviceId);
  writer.varintField(11, entry.gapReason);
  return bytesOf(writer);
}

/**
 * `toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command: { case: "submitCommit", value: request }, requestId }))`,
 * by hand: the entry a SubmitCommit becomes.
 */
export function encodeSubmitCommitCommand(request: SubmitCommitRequest, requestId: Uint8Array): Uint8Array {
  if (!submitCommitByHand || !plain(request, [request.epoch])) {
    return toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command: { case: "submitCommit", value: request }, requestId }));
  }
  const requestSize =
    stringSize(request.channelId) +
    varintFieldSize(Number(request.epoch)) +
    lengthFieldSize(request.commit.length) +
    lengthFieldSize(request.nextGroupInfo.length) +
    lengthFieldSize(request.welcome.length);
  const writer = new WireWriter(delimitedSize(requestSize) + lengthFieldSize(requestId.length));
  writer.delimited(2, requestSize);
  writeString(writer, 1, request.channelId);
  writer.varintField(2, Number(request.epoch));
  writer.bytesField(3, request.commit);
  writer.bytesField(4, request.nextGroupInfo);
  writer.bytesField(5, request.welcome);
  writer.bytesField(6, requestId);
  return bytesOf(writer);
}

/** A certificate as the log records it (see CommitSignatures). */
export type CertificateRecord = Pick<CommitSignatures, "channelId" | "epoch" | "signatures" | "signerKeys">;

function commitSignaturesSize(item: CertificateRecord): number {
  let size = stringSize(item.channelId) + varintFieldSize(Number(item.epoch)) + repeatedBytesSize(item.signerKeys);
  for (const s of item.signatures) size += delimitedSize(signatureSize(s));
  return size;
}

/**
 * `toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { certificates }))`, by hand: the
 * `certificates` field alone, which the channel's leader appends to a command's encoding.
 */
export function encodeCertificateRecords(certificates: readonly CertificateRecord[]): Uint8Array {
  if (!commitSignaturesByHand || !certificates.every((c) => c.epoch >= 0n && c.epoch <= safeMax && c.signatures.every((s) => plain(s)))) {
    return toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { certificates: certificates.map((c) => ({ ...c })) }));
  }
  const sizes = certificates.map(commitSignaturesSize);
  const writer = new WireWriter(sizes.reduce((total, size) => total + delimitedSize(size), 0));
  certificates.forEach((item, i) => {
    writer.delimited(7, sizes[i]!);
    writeString(writer, 1, item.channelId);
    writer.varintField(2, Number(item.epoch));
    for (const s of item.signatures) {
      writer.delimited(3, signatureSize(s));
      writeSignature(writer, s);
    }
    writeRepeatedBytes(writer, 4, item.signerKeys);
  });
  return bytesOf(writer);
}

/**
 * `toBinary(SubmitCommitStreamResponseSchema, create(SubmitCommitStreamResponseSchema, { requestId, result: { epoch, certificate } }))`,
 * by hand; undefined when it cannot be written so (leave it to toBinary).
 */
export function encodeCommitStreamResult(requestId: bigint, epoch: bigint, certificate: Certificate | undefined): Uint8Array | undefined {
  if (!commitResponseByHand || requestId < 0n || requestId > safeMax || epoch < 0n || epoch > safeMax) return undefined;
  if (certificate !== undefined && !plainCertificate(certificate)) return undefined;
  const certificateBytes = certificate === undefined ? 0 : certificateSize(certificate);
  const resultSize = varintFieldSize(Number(epoch)) + (certificate === undefined ? 0 : delimitedSize(certificateBytes));
  const writer = new WireWriter(varintFieldSize(Number(requestId)) + delimitedSize(resultSize));
  writer.varintField(1, Number(requestId));
  writer.delimited(2, resultSize);
  writer.varintField(1, Number(epoch));
  if (certificate !== undefined) {
    writer.delimited(2, certificateBytes);
    writeCertificate(writer, certificate);
  }
  return bytesOf(writer);
}
