/**
 * Conversion between the core's Raft messages (src/raft/types.ts) and their
 * protobuf wire form (proto/epochd/raft/v1/raft.proto), written by hand over
 * protowire.ts (the peer stream's hot path; tests check it against the
 * generated protobuf-es codec in both directions), with strict
 * validation of everything a peer sends: a malformed or out-of-bounds message
 * becomes a {@link CodecError}, never a crash and never a value the core could
 * trip over.
 */
import { assert } from "../raft/assert.ts";
import {
  EntryType,
  MessageType,
  type ConfState,
  type Entry,
  type Message,
  type SnapshotMetadata,
} from "../raft/types.ts";

import { CodecError } from "./codec-error.ts";
import { delimitedSize, lengthFieldSize, utf8Length, varintFieldSize, WireReader, WireType, WireWriter } from "./protowire.ts";

export { CodecError, type CodecErrorCode } from "./codec-error.ts";

/** Bounds on what one peer message may hold. Checked on every decode, at the edge. */
export interface CodecLimits {
  /** Longest group id or node id, in UTF-16 code units (ids are ASCII in practice). */
  readonly maxIdLength: number;
  /** Most messages in one batch. */
  readonly maxMessagesPerBatch: number;
  /** Most entries in one Append. */
  readonly maxEntriesPerMessage: number;
  /** Largest data of one entry. */
  readonly maxEntryBytes: number;
  /** Largest `context`. */
  readonly maxContextBytes: number;
  /** Most node ids in one membership list. */
  readonly maxMembers: number;
  /** Most notices in one stream request. */
  readonly maxNoticesPerBatch: number;
  /** Largest notice payload. */
  readonly maxNoticeBytes: number;
}

/** Limits that fit epochd's groups with room to spare. */
export const defaultCodecLimits: CodecLimits = {
  maxIdLength: 128,
  maxMessagesPerBatch: 65_536,
  maxEntriesPerMessage: 65_536,
  maxEntryBytes: 8 * 1024 * 1024,
  maxContextBytes: 4096,
  maxMembers: 1024,
  maxNoticesPerBatch: 1024,
  maxNoticeBytes: 4 * 1024 * 1024,
};

/** An application message on the peer stream (see Notice in raft.proto), routed by `topic`. */
export interface PeerNotice {
  readonly topic: string;
  readonly payload: Uint8Array;
}

const emptyBytes: Uint8Array = new Uint8Array(0);

const knownMessageTypes: ReadonlySet<number> = new Set(
  Object.values(MessageType).filter((v): v is number => typeof v === "number"),
);

/** Field numbers of raft.proto, by message. */
const EntryField = { term: 1, index: 2, type: 3, data: 4 } as const;
const ConfStateField = { voters: 1, votersOutgoing: 2, learners: 3, learnersNext: 4 } as const;
const SnapshotMetadataField = { index: 1, term: 2, confState: 3 } as const;
const MessageField = {
  type: 1, groupId: 2, from: 3, to: 4, term: 5, logTerm: 6, index: 7, entries: 8,
  commit: 9, reject: 10, rejectHint: 11, rejectHintTerm: 12, snapshot: 13, context: 14,
} as const;
const BatchField = { messages: 1 } as const;
const StreamRequestField = { batch: 1, notices: 2 } as const;
const NoticeField = { topic: 1, payload: 2 } as const;
const StreamResponseField = { nodeId: 1, droppedBatches: 2 } as const;
const SnapshotHeaderField = { message: 1 } as const;
const SnapshotEndField = { dataBytes: 1, crc32c: 2 } as const;
const SendSnapshotRequestField = { header: 1, data: 2, end: 3 } as const;

/** Wire EntryType (proto reserves 0 for "unspecified"): NORMAL = 1, CONF_CHANGE = 2. */
const wireEntryType = { normal: 1, confChange: 2 } as const;

function entryTypeToWire(type: EntryType): number {
  return type === EntryType.ConfChange ? wireEntryType.confChange : wireEntryType.normal;
}

function entryTypeFromWire(type: number): EntryType {
  if (type === wireEntryType.normal) return EntryType.Normal;
  if (type === wireEntryType.confChange) return EntryType.ConfChange;
  throw new CodecError("unknown-entry-type", `entry type ${type}`);
}

// ---- encoding: size everything, then write once into one buffer ------------------------------------

function entrySize(entry: Entry): number {
  return varintFieldSize(entry.term) + varintFieldSize(entry.index) + varintFieldSize(entryTypeToWire(entry.type)) + lengthFieldSize(entry.data.length);
}

function writeEntry(writer: WireWriter, entry: Entry, size: number): void {
  writer
    .delimited(MessageField.entries, size)
    .varintField(EntryField.term, entry.term)
    .varintField(EntryField.index, entry.index)
    .varintField(EntryField.type, entryTypeToWire(entry.type))
    .bytesField(EntryField.data, entry.data);
}

const confStateLists = ["voters", "votersOutgoing", "learners", "learnersNext"] as const;

function confStateSize(confState: ConfState): number {
  let size = 0;
  for (const list of confStateLists) for (const id of confState[list]) size += delimitedSize(utf8Length(id));
  return size;
}

function snapshotMetadataSize(metadata: SnapshotMetadata): number {
  return varintFieldSize(metadata.index) + varintFieldSize(metadata.term) + delimitedSize(confStateSize(metadata.confState));
}

function writeSnapshotMetadata(writer: WireWriter, metadata: SnapshotMetadata): void {
  writer.delimited(MessageField.snapshot, snapshotMetadataSize(metadata)).varintField(SnapshotMetadataField.index, metadata.index).varintField(SnapshotMetadataField.term, metadata.term);
  writer.delimited(SnapshotMetadataField.confState, confStateSize(metadata.confState));
  for (const list of confStateLists) for (const id of metadata.confState[list]) writer.stringElement(ConfStateField[list], id, utf8Length(id));
}

/** A message's sizes, computed once and used by both passes. */
interface MessagePlan {
  readonly message: Message;
  readonly groupIdBytes: number;
  readonly fromBytes: number;
  readonly toBytes: number;
  readonly entrySizes: readonly number[];
  readonly bodyBytes: number;
}

function planMessage(message: Message): MessagePlan {
  for (const value of [message.term, message.logTerm, message.index, message.commit, message.rejectHint, message.rejectHintTerm]) {
    assert(Number.isSafeInteger(value) && value >= 0, `message field out of range: ${value} (${MessageType[message.type]} to ${message.to})`);
  }
  const groupIdBytes = utf8Length(message.groupId);
  const fromBytes = utf8Length(message.from);
  const toBytes = utf8Length(message.to);
  const entrySizes = message.entries.map(entrySize);
  let bodyBytes =
    varintFieldSize(message.type) +
    lengthFieldSize(groupIdBytes) +
    lengthFieldSize(fromBytes) +
    lengthFieldSize(toBytes) +
    varintFieldSize(message.term) +
    varintFieldSize(message.logTerm) +
    varintFieldSize(message.index) +
    varintFieldSize(message.commit) +
    (message.reject ? 2 : 0) +
    varintFieldSize(message.rejectHint) +
    varintFieldSize(message.rejectHintTerm) +
    lengthFieldSize(message.context.length);
  for (const size of entrySizes) bodyBytes += delimitedSize(size);
  if (message.snapshot !== null) bodyBytes += delimitedSize(snapshotMetadataSize(message.snapshot.metadata));
  return { message, groupIdBytes, fromBytes, toBytes, entrySizes, bodyBytes };
}

function writeMessage(writer: WireWriter, field: number, plan: MessagePlan): void {
  const m = plan.message;
  writer
    .delimited(field, plan.bodyBytes)
    .varintField(MessageField.type, m.type)
    .stringField(MessageField.groupId, m.groupId, plan.groupIdBytes)
    .stringField(MessageField.from, m.from, plan.fromBytes)
    .stringField(MessageField.to, m.to, plan.toBytes)
    .varintField(MessageField.term, m.term)
    .varintField(MessageField.logTerm, m.logTerm)
    .varintField(MessageField.index, m.index);
  m.entries.forEach((entry, i) => writeEntry(writer, entry, plan.entrySizes[i]!));
  writer.varintField(MessageField.commit, m.commit).varintField(MessageField.reject, m.reject ? 1 : 0).varintField(MessageField.rejectHint, m.rejectHint).varintField(MessageField.rejectHintTerm, m.rejectHintTerm);
  if (m.snapshot !== null) writeSnapshotMetadata(writer, m.snapshot.metadata);
  writer.bytesField(MessageField.context, m.context);
}

/**
 * Encodes one stream request: Raft messages and notices. Snapshot messages
 * never go in a batch: the caller routes them through SendSnapshot (a
 * programmer error otherwise).
 */
export function encodeBatch(messages: readonly Message[], notices: readonly PeerNotice[] = []): Buffer {
  const plans = messages.map((message) => {
    assert(message.type !== MessageType.Snapshot, "Snapshot messages go through SendSnapshot, not a batch");
    return planMessage(message);
  });
  let batchBytes = 0;
  for (const plan of plans) batchBytes += delimitedSize(plan.bodyBytes);
  const noticeSizes = notices.map((n) => {
    const topicBytes = utf8Length(n.topic);
    return { topicBytes, bodyBytes: lengthFieldSize(topicBytes) + lengthFieldSize(n.payload.length) };
  });
  let size = delimitedSize(batchBytes);
  for (const { bodyBytes } of noticeSizes) size += delimitedSize(bodyBytes);
  const writer = new WireWriter(size).delimited(StreamRequestField.batch, batchBytes);
  for (const plan of plans) writeMessage(writer, BatchField.messages, plan);
  notices.forEach((notice, i) => {
    const { topicBytes, bodyBytes } = noticeSizes[i]!;
    writer.delimited(StreamRequestField.notices, bodyBytes).stringField(NoticeField.topic, notice.topic, topicBytes).bytesField(NoticeField.payload, notice.payload);
  });
  return writer.finish();
}

/** Encodes what a receiver writes back on a stream. */
export function encodeStreamResponse(nodeId: string, droppedBatches: number): Buffer {
  const nodeIdBytes = utf8Length(nodeId);
  return new WireWriter(lengthFieldSize(nodeIdBytes) + varintFieldSize(droppedBatches))
    .stringField(StreamResponseField.nodeId, nodeId, nodeIdBytes)
    .varintField(StreamResponseField.droppedBatches, droppedBatches)
    .finish();
}

/** Encodes the first request of a SendSnapshot call: the Snapshot message (its data, if any, is not sent here). */
export function encodeSnapshotHeader(message: Message): Buffer {
  assert(message.type === MessageType.Snapshot && message.snapshot !== null, "snapshot header needs a Snapshot message");
  const plan = planMessage(message);
  const headerBytes = delimitedSize(plan.bodyBytes);
  const writer = new WireWriter(delimitedSize(headerBytes)).delimited(SendSnapshotRequestField.header, headerBytes);
  writeMessage(writer, SnapshotHeaderField.message, plan);
  return writer.finish();
}

/** Encodes the last request of a SendSnapshot call: the data's length and CRC-32C. */
export function encodeSnapshotEnd(dataBytes: number, crc32c: number): Buffer {
  const endBytes = varintFieldSize(dataBytes) + (crc32c === 0 ? 0 : 5);
  // A oneof member is written even when empty (it says which case is set).
  const writer = new WireWriter(delimitedSize(endBytes)).delimited(SendSnapshotRequestField.end, endBytes);
  return writer.varintField(SnapshotEndField.dataBytes, dataBytes).fixed32Field(SnapshotEndField.crc32c, crc32c).finish();
}

/** Encodes one data chunk of a SendSnapshot call. */
export function encodeSnapshotChunk(data: Uint8Array): Buffer {
  // A oneof member is written even when empty (it says which case is set).
  return new WireWriter(delimitedSize(data.length)).delimited(SendSnapshotRequestField.data, data.length).raw(data).finish();
}

/** Encodes the receiver's acknowledgement of a whole snapshot. */
export function encodeSendSnapshotResponse(dataBytes: number): Buffer {
  return new WireWriter(varintFieldSize(dataBytes)).varintField(1, dataBytes).finish();
}

// ---- decoding: read the wire form, then validate it -------------------------------------------------

/** A Message as read off the wire, before validation. */
interface WireMessage {
  type: number;
  groupId: string;
  from: string;
  to: string;
  term: number;
  logTerm: number;
  index: number;
  readonly entries: Array<{ term: number; index: number; type: number; data: Uint8Array }>;
  commit: number;
  reject: boolean;
  rejectHint: number;
  rejectHintTerm: number;
  snapshot: { index: number; term: number; confState: ConfState | undefined } | undefined;
  context: Uint8Array;
}

function readEntry(reader: WireReader, limits: CodecLimits): WireMessage["entries"][number] {
  const entry = { term: 0, index: 0, type: 0, data: emptyBytes };
  while (!reader.done()) {
    const tag = reader.tag();
    switch (tag >>> 3) {
      case EntryField.term:
        reader.expect(tag, WireType.Varint);
        entry.term = reader.varint("entry term");
        break;
      case EntryField.index:
        reader.expect(tag, WireType.Varint);
        entry.index = reader.varint("entry index");
        break;
      case EntryField.type:
        reader.expect(tag, WireType.Varint);
        entry.type = reader.enumValue();
        break;
      case EntryField.data:
        reader.expect(tag, WireType.LengthDelimited);
        entry.data = reader.bytes(limits.maxEntryBytes, "entry-too-large");
        break;
      default:
        reader.skip(tag & 7);
    }
  }
  return entry;
}

function readConfState(reader: WireReader, limits: CodecLimits): ConfState {
  const lists: Record<(typeof confStateLists)[number], string[]> = { voters: [], votersOutgoing: [], learners: [], learnersNext: [] };
  while (!reader.done()) {
    const tag = reader.tag();
    const list = confStateLists[(tag >>> 3) - 1];
    if (list === undefined) {
      reader.skip(tag & 7);
      continue;
    }
    reader.expect(tag, WireType.LengthDelimited);
    if (lists[list].length >= limits.maxMembers) throw new CodecError("too-many-members", `${list} has more than ${limits.maxMembers} ids`);
    lists[list].push(checkId(reader.string(), `${list}[${lists[list].length}]`, limits));
  }
  return lists;
}

function readSnapshotMetadata(reader: WireReader, limits: CodecLimits): NonNullable<WireMessage["snapshot"]> {
  const metadata: NonNullable<WireMessage["snapshot"]> = { index: 0, term: 0, confState: undefined };
  while (!reader.done()) {
    const tag = reader.tag();
    switch (tag >>> 3) {
      case SnapshotMetadataField.index:
        reader.expect(tag, WireType.Varint);
        metadata.index = reader.varint("snapshot.index");
        break;
      case SnapshotMetadataField.term:
        reader.expect(tag, WireType.Varint);
        metadata.term = reader.varint("snapshot.term");
        break;
      case SnapshotMetadataField.confState:
        reader.expect(tag, WireType.LengthDelimited);
        metadata.confState = readConfState(reader.nested(), limits);
        break;
      default:
        reader.skip(tag & 7);
    }
  }
  return metadata;
}

function readMessage(reader: WireReader, limits: CodecLimits): WireMessage {
  const m: WireMessage = {
    type: 0, groupId: "", from: "", to: "", term: 0, logTerm: 0, index: 0, entries: [],
    commit: 0, reject: false, rejectHint: 0, rejectHintTerm: 0, snapshot: undefined, context: emptyBytes,
  };
  while (!reader.done()) {
    const tag = reader.tag();
    const field = tag >>> 3;
    switch (field) {
      case MessageField.type:
        reader.expect(tag, WireType.Varint);
        m.type = reader.enumValue();
        break;
      case MessageField.groupId:
      case MessageField.from:
      case MessageField.to: {
        reader.expect(tag, WireType.LengthDelimited);
        const value = reader.string();
        if (field === MessageField.groupId) m.groupId = value;
        else if (field === MessageField.from) m.from = value;
        else m.to = value;
        break;
      }
      case MessageField.term:
        reader.expect(tag, WireType.Varint);
        m.term = reader.varint("term");
        break;
      case MessageField.logTerm:
        reader.expect(tag, WireType.Varint);
        m.logTerm = reader.varint("log_term");
        break;
      case MessageField.index:
        reader.expect(tag, WireType.Varint);
        m.index = reader.varint("index");
        break;
      case MessageField.entries:
        reader.expect(tag, WireType.LengthDelimited);
        if (m.entries.length >= limits.maxEntriesPerMessage) throw new CodecError("too-many-entries", `more than ${limits.maxEntriesPerMessage} entries`);
        m.entries.push(readEntry(reader.nested(), limits));
        break;
      case MessageField.commit:
        reader.expect(tag, WireType.Varint);
        m.commit = reader.varint("commit");
        break;
      case MessageField.reject:
        reader.expect(tag, WireType.Varint);
        m.reject = reader.enumValue() !== 0;
        break;
      case MessageField.rejectHint:
        reader.expect(tag, WireType.Varint);
        m.rejectHint = reader.varint("reject_hint");
        break;
      case MessageField.rejectHintTerm:
        reader.expect(tag, WireType.Varint);
        m.rejectHintTerm = reader.varint("reject_hint_term");
        break;
      case MessageField.snapshot:
        reader.expect(tag, WireType.LengthDelimited);
        m.snapshot = readSnapshotMetadata(reader.nested(), limits);
        break;
      case MessageField.context:
        reader.expect(tag, WireType.LengthDelimited);
        m.context = reader.bytes(limits.maxContextBytes, "context-too-large");
        break;
      default:
        reader.skip(tag & 7);
    }
  }
  return m;
}

function checkId(id: string, field: string, limits: CodecLimits): string {
  if (id.length === 0 || id.length > limits.maxIdLength) {
    throw new CodecError("bad-id", `${field} has length ${id.length} (1..${limits.maxIdLength})`);
  }
  return id;
}

/**
 * Validates the entries of one message. Invariant checked: entries[i].index
 * == index + 1 + i, and logTerm <= entries[0].term <= ... <= term (a Raft
 * log's terms never decrease, and no entry is newer than its sender's term).
 */
function entriesFromWire(w: WireMessage): Entry[] {
  if (w.type === MessageType.Propose) return proposedEntriesFromWire(w);
  const entries: Entry[] = [];
  let previousTerm = w.logTerm;
  for (const [i, e] of w.entries.entries()) {
    if (e.index !== w.index + 1 + i) {
      throw new CodecError("entries-not-contiguous", `entries[${i}].index = ${e.index}, expected ${w.index + 1 + i}`);
    }
    if (e.term < previousTerm || e.term > w.term) {
      throw new CodecError("entry-terms-out-of-order", `entries[${i}].term = ${e.term} (after ${previousTerm}, message term ${w.term})`);
    }
    entries.push({ term: e.term, index: e.index, type: entryTypeFromWire(e.type), data: e.data });
    previousTerm = e.term;
  }
  return entries;
}

/** Forwarded proposals: index and term 0 (the leader assigns them), application data only. */
function proposedEntriesFromWire(w: WireMessage): Entry[] {
  return w.entries.map((e, i) => {
    if (e.index !== 0 || e.term !== 0) throw new CodecError("entries-not-contiguous", `proposed entries[${i}] must have index and term 0`);
    if (entryTypeFromWire(e.type) !== EntryType.Normal) throw new CodecError("unknown-entry-type", `proposed entries[${i}] must be normal entries`);
    return { term: 0, index: 0, type: EntryType.Normal, data: e.data };
  });
}

function snapshotMetadataFromWire(w: WireMessage): SnapshotMetadata | null {
  const isSnapshot = w.type === MessageType.Snapshot;
  if (w.snapshot === undefined) {
    if (isSnapshot) throw new CodecError("missing-field", "snapshot metadata of a Snapshot message");
    return null;
  }
  if (!isSnapshot) throw new CodecError("snapshot-misplaced", `snapshot metadata on message type ${w.type}`);
  if (w.snapshot.confState === undefined) throw new CodecError("missing-field", "snapshot.conf_state");
  return { index: w.snapshot.index, term: w.snapshot.term, confState: w.snapshot.confState };
}

/**
 * The core message `w` stands for, after checking every field against
 * `limits`. For a Snapshot message, `snapshotData` is the reassembled data;
 * any other message must come with null.
 */
function messageFromWire(w: WireMessage, limits: CodecLimits, snapshotData: Uint8Array | null): Message {
  if (!knownMessageTypes.has(w.type)) throw new CodecError("unknown-message-type", `type ${w.type}`);
  const metadata = snapshotMetadataFromWire(w);
  if ((metadata === null) !== (snapshotData === null)) {
    throw new CodecError("snapshot-misplaced", "snapshot data without a Snapshot message, or the reverse");
  }
  return {
    type: w.type as MessageType,
    groupId: checkId(w.groupId, "group_id", limits),
    from: checkId(w.from, "from", limits),
    to: checkId(w.to, "to", limits),
    term: w.term,
    logTerm: w.logTerm,
    index: w.index,
    entries: entriesFromWire(w),
    commit: w.commit,
    reject: w.reject,
    rejectHint: w.rejectHint,
    rejectHintTerm: w.rejectHintTerm,
    snapshot: metadata === null || snapshotData === null ? null : { metadata, data: snapshotData },
    context: w.context,
  };
}

/**
 * Decodes and validates one stream request from a peer. Throws
 * {@link CodecError}. As protobuf readers do, repeated occurrences of the
 * batch merge, and unknown fields are skipped.
 */
export function decodeStreamRequest(bytes: Uint8Array, limits: CodecLimits): { messages: Message[]; notices: PeerNotice[] } {
  const reader = new WireReader(bytes);
  const messages: Message[] = [];
  const notices: PeerNotice[] = [];
  while (!reader.done()) {
    const tag = reader.tag();
    const field = tag >>> 3;
    if (field === StreamRequestField.batch) {
      reader.expect(tag, WireType.LengthDelimited);
      const batch = reader.nested();
      while (!batch.done()) {
        const batchTag = batch.tag();
        if (batchTag >>> 3 !== BatchField.messages) {
          batch.skip(batchTag & 7);
          continue;
        }
        batch.expect(batchTag, WireType.LengthDelimited);
        if (messages.length >= limits.maxMessagesPerBatch) throw new CodecError("too-many-messages", `more than ${limits.maxMessagesPerBatch} messages`);
        const wire = readMessage(batch.nested(), limits);
        if (wire.type === MessageType.Snapshot) throw new CodecError("snapshot-misplaced", "Snapshot message in a stream batch");
        messages.push(messageFromWire(wire, limits, null));
      }
    } else if (field === StreamRequestField.notices) {
      reader.expect(tag, WireType.LengthDelimited);
      if (notices.length >= limits.maxNoticesPerBatch) throw new CodecError("too-many-notices", `more than ${limits.maxNoticesPerBatch} notices`);
      notices.push(readNotice(reader.nested(), limits));
    } else {
      reader.skip(tag & 7);
    }
  }
  return { messages, notices };
}

function readNotice(reader: WireReader, limits: CodecLimits): PeerNotice {
  let topic = "";
  let payload = emptyBytes;
  while (!reader.done()) {
    const tag = reader.tag();
    const field = tag >>> 3;
    if (field === NoticeField.topic) {
      reader.expect(tag, WireType.LengthDelimited);
      topic = reader.string();
    } else if (field === NoticeField.payload) {
      reader.expect(tag, WireType.LengthDelimited);
      payload = reader.bytes(limits.maxNoticeBytes, "notice-too-large");
    } else {
      reader.skip(tag & 7);
    }
  }
  return { topic: checkId(topic, "notice topic", limits), payload };
}

/** Decodes and validates the Raft messages of one stream request. Throws {@link CodecError}. */
export function decodeBatch(bytes: Uint8Array, limits: CodecLimits): Message[] {
  return decodeStreamRequest(bytes, limits).messages;
}

/** Decodes a receiver's stream response. Throws {@link CodecError}. */
export function decodeStreamResponse(bytes: Uint8Array): { nodeId: string; droppedBatches: number } {
  const reader = new WireReader(bytes);
  const response = { nodeId: "", droppedBatches: 0 };
  while (!reader.done()) {
    const tag = reader.tag();
    const field = tag >>> 3;
    if (field === StreamResponseField.nodeId) {
      reader.expect(tag, WireType.LengthDelimited);
      response.nodeId = reader.string();
    } else if (field === StreamResponseField.droppedBatches) {
      reader.expect(tag, WireType.Varint);
      response.droppedBatches = reader.varint("dropped_batches");
    } else {
      reader.skip(tag & 7);
    }
  }
  return response;
}

/**
 * One decoded SendSnapshot request: the header (a validated Snapshot message
 * whose `snapshot.data` is still empty), a data chunk, or the end with the
 * data's length and CRC-32C.
 */
export type SnapshotRequest =
  | { readonly kind: "header"; readonly message: Message }
  | { readonly kind: "data"; readonly data: Uint8Array }
  | { readonly kind: "end"; readonly dataBytes: number; readonly crc32c: number };

/** Decodes and validates one SendSnapshot request (the last member of the oneof wins). Throws {@link CodecError}. */
export function decodeSnapshotRequest(bytes: Uint8Array, limits: CodecLimits): SnapshotRequest {
  const reader = new WireReader(bytes);
  let chunk: { kind: "header"; message: WireMessage | undefined } | Exclude<SnapshotRequest, { kind: "header" }> | undefined;
  while (!reader.done()) {
    const tag = reader.tag();
    const field = tag >>> 3;
    if (field === SendSnapshotRequestField.data) {
      reader.expect(tag, WireType.LengthDelimited);
      // A chunk is at most one gRPC message; the transfer's own limit bounds the whole.
      chunk = { kind: "data", data: reader.bytes(Number.MAX_SAFE_INTEGER, "entry-too-large") };
    } else if (field === SendSnapshotRequestField.header) {
      reader.expect(tag, WireType.LengthDelimited);
      chunk = readSnapshotHeader(reader.nested(), limits);
    } else if (field === SendSnapshotRequestField.end) {
      reader.expect(tag, WireType.LengthDelimited);
      chunk = readSnapshotEnd(reader.nested());
    } else {
      reader.skip(tag & 7);
    }
  }
  if (chunk === undefined) throw new CodecError("missing-field", "snapshot request without header, data or end");
  if (chunk.kind !== "header") return chunk;
  if (chunk.message === undefined) throw new CodecError("missing-field", "snapshot header without its message");
  if (chunk.message.type !== MessageType.Snapshot) {
    throw new CodecError("snapshot-misplaced", `snapshot header holds message type ${chunk.message.type}`);
  }
  return { kind: "header", message: messageFromWire(chunk.message, limits, new Uint8Array(0)) };
}

function readSnapshotHeader(reader: WireReader, limits: CodecLimits): { kind: "header"; message: WireMessage | undefined } {
  const header: { kind: "header"; message: WireMessage | undefined } = { kind: "header", message: undefined };
  while (!reader.done()) {
    const tag = reader.tag();
    if (tag >>> 3 === SnapshotHeaderField.message) {
      reader.expect(tag, WireType.LengthDelimited);
      header.message = readMessage(reader.nested(), limits);
    } else {
      reader.skip(tag & 7);
    }
  }
  return header;
}

function readSnapshotEnd(reader: WireReader): { kind: "end"; dataBytes: number; crc32c: number } {
  const end = { kind: "end" as const, dataBytes: 0, crc32c: 0 };
  while (!reader.done()) {
    const tag = reader.tag();
    const field = tag >>> 3;
    if (field === SnapshotEndField.dataBytes) {
      reader.expect(tag, WireType.Varint);
      end.dataBytes = reader.varint("data_bytes");
    } else if (field === SnapshotEndField.crc32c) {
      reader.expect(tag, WireType.Fixed32);
      end.crc32c = reader.fixed32();
    } else {
      reader.skip(tag & 7);
    }
  }
  return end;
}

/**
 * A cheap upper-bound-ish estimate of a message's encoded size, for queue
 * accounting and batch cuts without encoding twice.
 */
export function estimateMessageBytes(message: Message): number {
  let bytes = 80 + message.groupId.length + message.from.length + message.to.length + message.context.length;
  for (const entry of message.entries) bytes += 32 + entry.data.length;
  if (message.snapshot !== null) bytes += 64 + message.snapshot.data.length;
  return bytes;
}
