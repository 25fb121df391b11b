/**
 * Conversion between the core's Raft messages (src/raft/types.ts) and their
 * protobuf wire form (proto/epochd/raft/v1/raft.proto), with strict
 * validation of everything a peer sends: a malformed or out-of-bounds message
 * becomes a {@link CodecError}, never a crash and never a value the core could
 * trip over.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as pb from "../gen/epochd/raft/v1/raft_pb.ts";
import { assert } from "../raft/assert.ts";
import {
  EntryType,
  MessageType,
  type ConfState,
  type Entry,
  type Message,
  type SnapshotMetadata,
} from "../raft/types.ts";

/** Why a peer's input was refused. Stable strings: they appear in logs and counters. */
export type CodecErrorCode =
  | "malformed-protobuf"
  | "unknown-message-type"
  | "unknown-entry-type"
  | "bad-id"
  | "number-out-of-range"
  | "too-many-messages"
  | "too-many-entries"
  | "too-many-members"
  | "entry-too-large"
  | "context-too-large"
  | "entries-not-contiguous"
  | "entry-terms-out-of-order"
  | "snapshot-misplaced"
  | "missing-field"
  | "too-many-notices"
  | "notice-too-large";

/** A peer sent bytes that are not a valid Raft message. Expected input, not a bug: drop it and log. */
export class CodecError extends Error {
  constructor(
    readonly code: CodecErrorCode,
    message: string,
    options?: { cause: unknown },
  ) {
    super(`${code}: ${message}`, options);
    this.name = "CodecError";
  }
}

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

const knownMessageTypes: ReadonlySet<number> = new Set(
  Object.values(MessageType).filter((v): v is number => typeof v === "number"),
);

/** Core EntryType -> wire EntryType (the wire reserves 0 for "unspecified"). */
function entryTypeToProto(type: EntryType): pb.EntryType {
  return type === EntryType.ConfChange ? pb.EntryType.CONF_CHANGE : pb.EntryType.NORMAL;
}

function entryTypeFromProto(type: pb.EntryType): EntryType {
  if (type === pb.EntryType.NORMAL) return EntryType.Normal;
  if (type === pb.EntryType.CONF_CHANGE) return EntryType.ConfChange;
  throw new CodecError("unknown-entry-type", `entry type ${type}`);
}

function confStateToProto(confState: ConfState): pb.ConfState {
  return create(pb.ConfStateSchema, {
    voters: [...confState.voters],
    votersOutgoing: [...confState.votersOutgoing],
    learners: [...confState.learners],
    learnersNext: [...confState.learnersNext],
  });
}

/**
 * The wire form of `message`. A snapshot's data is left out: it travels in
 * SendSnapshot chunks (see {@link encodeSnapshotHeader}).
 */
export function messageToProto(message: Message): pb.Message {
  for (const value of [message.term, message.logTerm, message.index, message.commit, message.rejectHint, message.rejectHintTerm]) {
    assert(Number.isSafeInteger(value) && value >= 0, `message field out of range: ${value} (${MessageType[message.type]} to ${message.to})`);
  }
  const metadata = message.snapshot?.metadata;
  return create(pb.MessageSchema, {
    type: message.type as number as pb.MessageType,
    groupId: message.groupId,
    from: message.from,
    to: message.to,
    term: BigInt(message.term),
    logTerm: BigInt(message.logTerm),
    index: BigInt(message.index),
    entries: message.entries.map((entry) =>
      create(pb.EntrySchema, {
        term: BigInt(entry.term),
        index: BigInt(entry.index),
        type: entryTypeToProto(entry.type),
        data: entry.data,
      }),
    ),
    commit: BigInt(message.commit),
    reject: message.reject,
    rejectHint: BigInt(message.rejectHint),
    rejectHintTerm: BigInt(message.rejectHintTerm),
    context: message.context,
    ...(metadata === undefined
      ? {}
      : {
          snapshot: create(pb.SnapshotMetadataSchema, {
            index: BigInt(metadata.index),
            term: BigInt(metadata.term),
            confState: confStateToProto(metadata.confState),
          }),
        }),
  });
}

function safeNumber(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CodecError("number-out-of-range", `${field} = ${value} exceeds 2^53 - 1`);
  }
  return Number(value);
}

function checkId(id: string, field: string, limits: CodecLimits): string {
  if (id.length === 0 || id.length > limits.maxIdLength) {
    throw new CodecError("bad-id", `${field} has length ${id.length} (1..${limits.maxIdLength})`);
  }
  return id;
}

function checkIds(ids: readonly string[], field: string, limits: CodecLimits): string[] {
  if (ids.length > limits.maxMembers) {
    throw new CodecError("too-many-members", `${field} has ${ids.length} ids (max ${limits.maxMembers})`);
  }
  return ids.map((id, i) => checkId(id, `${field}[${i}]`, limits));
}

function confStateFromProto(confState: pb.ConfState | undefined, limits: CodecLimits): ConfState {
  if (confState === undefined) throw new CodecError("missing-field", "snapshot.conf_state");
  return {
    voters: checkIds(confState.voters, "voters", limits),
    votersOutgoing: checkIds(confState.votersOutgoing, "voters_outgoing", limits),
    learners: checkIds(confState.learners, "learners", limits),
    learnersNext: checkIds(confState.learnersNext, "learners_next", limits),
  };
}

/**
 * Copies bytes out of a receive buffer into a plain Uint8Array, so stored
 * entries do not pin whole batches in memory (Buffer#slice would be a view).
 */
function ownedBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/**
 * Validates the entries of one message. Invariant checked: entries[i].index
 * == index + 1 + i, and logTerm <= entries[0].term <= ... <= term (a Raft
 * log's terms never decrease, and no entry is newer than its sender's term).
 */
function entriesFromProto(p: pb.Message, index: number, logTerm: number, term: number, limits: CodecLimits): Entry[] {
  if (p.entries.length > limits.maxEntriesPerMessage) {
    throw new CodecError("too-many-entries", `${p.entries.length} entries (max ${limits.maxEntriesPerMessage})`);
  }
  if (p.type === pb.MessageType.PROPOSE) return proposedEntriesFromProto(p, limits);
  const entries: Entry[] = [];
  let previousTerm = logTerm;
  for (const [i, e] of p.entries.entries()) {
    const entryIndex = safeNumber(e.index, `entries[${i}].index`);
    const entryTerm = safeNumber(e.term, `entries[${i}].term`);
    if (entryIndex !== index + 1 + i) {
      throw new CodecError("entries-not-contiguous", `entries[${i}].index = ${entryIndex}, expected ${index + 1 + i}`);
    }
    if (entryTerm < previousTerm || entryTerm > term) {
      throw new CodecError("entry-terms-out-of-order", `entries[${i}].term = ${entryTerm} (after ${previousTerm}, message term ${term})`);
    }
    if (e.data.length > limits.maxEntryBytes) {
      throw new CodecError("entry-too-large", `entries[${i}] has ${e.data.length} bytes (max ${limits.maxEntryBytes})`);
    }
    entries.push({ term: entryTerm, index: entryIndex, type: entryTypeFromProto(e.type), data: ownedBytes(e.data) });
    previousTerm = entryTerm;
  }
  return entries;
}

/** Forwarded proposals: index and term 0 (the leader assigns them), application data only. */
function proposedEntriesFromProto(p: pb.Message, limits: CodecLimits): Entry[] {
  return p.entries.map((e, i) => {
    if (e.index !== 0n || e.term !== 0n) throw new CodecError("entries-not-contiguous", `proposed entries[${i}] must have index and term 0`);
    if (entryTypeFromProto(e.type) !== EntryType.Normal) throw new CodecError("unknown-entry-type", `proposed entries[${i}] must be normal entries`);
    if (e.data.length > limits.maxEntryBytes) {
      throw new CodecError("entry-too-large", `entries[${i}] has ${e.data.length} bytes (max ${limits.maxEntryBytes})`);
    }
    return { term: 0, index: 0, type: EntryType.Normal, data: ownedBytes(e.data) };
  });
}

function snapshotMetadataFromProto(p: pb.Message, limits: CodecLimits): SnapshotMetadata | null {
  const isSnapshot = p.type === pb.MessageType.SNAPSHOT;
  if (p.snapshot === undefined) {
    if (isSnapshot) throw new CodecError("missing-field", "snapshot metadata of a Snapshot message");
    return null;
  }
  if (!isSnapshot) throw new CodecError("snapshot-misplaced", `snapshot metadata on message type ${p.type}`);
  return {
    index: safeNumber(p.snapshot.index, "snapshot.index"),
    term: safeNumber(p.snapshot.term, "snapshot.term"),
    confState: confStateFromProto(p.snapshot.confState, limits),
  };
}

/**
 * The core message `p` stands for, after checking every field against
 * `limits`. For a Snapshot message, `snapshotData` is the reassembled data;
 * any other message must come with null.
 */
export function messageFromProto(p: pb.Message, limits: CodecLimits, snapshotData: Uint8Array | null): Message {
  if (!knownMessageTypes.has(p.type)) throw new CodecError("unknown-message-type", `type ${p.type}`);
  const term = safeNumber(p.term, "term");
  const logTerm = safeNumber(p.logTerm, "log_term");
  const index = safeNumber(p.index, "index");
  if (p.context.length > limits.maxContextBytes) {
    throw new CodecError("context-too-large", `context has ${p.context.length} bytes (max ${limits.maxContextBytes})`);
  }
  const metadata = snapshotMetadataFromProto(p, limits);
  if ((metadata === null) !== (snapshotData === null)) {
    throw new CodecError("snapshot-misplaced", "snapshot data without a Snapshot message, or the reverse");
  }
  return {
    type: p.type as number as MessageType,
    groupId: checkId(p.groupId, "group_id", limits),
    from: checkId(p.from, "from", limits),
    to: checkId(p.to, "to", limits),
    term,
    logTerm,
    index,
    entries: entriesFromProto(p, index, logTerm, term, limits),
    commit: safeNumber(p.commit, "commit"),
    reject: p.reject,
    rejectHint: safeNumber(p.rejectHint, "reject_hint"),
    rejectHintTerm: safeNumber(p.rejectHintTerm, "reject_hint_term"),
    snapshot: metadata === null || snapshotData === null ? null : { metadata, data: snapshotData },
    context: ownedBytes(p.context),
  };
}

function parse<T extends pb.StreamRequest | pb.SendSnapshotRequest | pb.StreamResponse>(
  decode: () => T,
): T {
  try {
    return decode();
  } catch (cause) {
    throw new CodecError("malformed-protobuf", cause instanceof Error ? cause.message : String(cause), { cause });
  }
}

/**
 * Encodes one stream request: Raft messages and notices. Snapshot messages
 * never go in a batch: the caller routes them through SendSnapshot (a
 * programmer error otherwise).
 */
export function encodeBatch(messages: readonly Message[], notices: readonly PeerNotice[] = []): Uint8Array {
  const protos = messages.map((message) => {
    assert(message.type !== MessageType.Snapshot, "Snapshot messages go through SendSnapshot, not a batch");
    return messageToProto(message);
  });
  return toBinary(pb.StreamRequestSchema, create(pb.StreamRequestSchema, { batch: { messages: protos }, notices: notices.map((n) => ({ topic: n.topic, payload: n.payload })) }));
}

/** Decodes and validates one stream request from a peer. Throws {@link CodecError}. */
export function decodeStreamRequest(bytes: Uint8Array, limits: CodecLimits): { messages: Message[]; notices: PeerNotice[] } {
  const request = parse(() => fromBinary(pb.StreamRequestSchema, bytes, { readUnknownFields: false }));
  const protos = request.batch?.messages ?? [];
  if (protos.length > limits.maxMessagesPerBatch) {
    throw new CodecError("too-many-messages", `${protos.length} messages (max ${limits.maxMessagesPerBatch})`);
  }
  if (request.notices.length > limits.maxNoticesPerBatch) {
    throw new CodecError("too-many-notices", `${request.notices.length} notices (max ${limits.maxNoticesPerBatch})`);
  }
  const notices = request.notices.map((n) => {
    checkId(n.topic, "notice topic", limits);
    if (n.payload.byteLength > limits.maxNoticeBytes) throw new CodecError("notice-too-large", `${n.payload.byteLength} bytes (max ${limits.maxNoticeBytes})`);
    return { topic: n.topic, payload: n.payload };
  });
  const messages = protos.map((p) => {
    if (p.type === pb.MessageType.SNAPSHOT) throw new CodecError("snapshot-misplaced", "Snapshot message in a stream batch");
    return messageFromProto(p, limits, null);
  });
  return { messages, notices };
}

/** Decodes and validates the Raft messages of one stream request. Throws {@link CodecError}. */
export function decodeBatch(bytes: Uint8Array, limits: CodecLimits): Message[] {
  return decodeStreamRequest(bytes, limits).messages;
}

/** Encodes what a receiver writes back on a stream. */
export function encodeStreamResponse(nodeId: string, droppedBatches: number): Uint8Array {
  return toBinary(pb.StreamResponseSchema, create(pb.StreamResponseSchema, { nodeId, droppedBatches: BigInt(droppedBatches) }));
}

/** Decodes a receiver's stream response. Throws {@link CodecError}. */
export function decodeStreamResponse(bytes: Uint8Array): { nodeId: string; droppedBatches: number } {
  const response = parse(() => fromBinary(pb.StreamResponseSchema, bytes, { readUnknownFields: false }));
  return { nodeId: response.nodeId, droppedBatches: safeNumber(response.droppedBatches, "dropped_batches") };
}

/** Encodes the first request of a SendSnapshot call: the Snapshot message and its data length. */
export function encodeSnapshotHeader(message: Message): Uint8Array {
  assert(message.type === MessageType.Snapshot && message.snapshot !== null, "snapshot header needs a Snapshot message");
  const header = create(pb.SnapshotHeaderSchema, {
    message: messageToProto(message),
    dataBytes: BigInt(message.snapshot.data.length),
  });
  return toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, { chunk: { case: "header", value: header } }));
}

/** Encodes one data chunk of a SendSnapshot call. */
export function encodeSnapshotChunk(data: Uint8Array): Uint8Array {
  return toBinary(pb.SendSnapshotRequestSchema, create(pb.SendSnapshotRequestSchema, { chunk: { case: "data", value: data } }));
}

/**
 * One decoded SendSnapshot request: the header (a validated Snapshot message
 * whose `snapshot.data` is still empty) or a data chunk.
 */
export type SnapshotRequest =
  | { readonly kind: "header"; readonly message: Message; readonly dataBytes: number }
  | { readonly kind: "data"; readonly data: Uint8Array };

/** Decodes and validates one SendSnapshot request. Throws {@link CodecError}. */
export function decodeSnapshotRequest(bytes: Uint8Array, limits: CodecLimits): SnapshotRequest {
  const request = parse(() => fromBinary(pb.SendSnapshotRequestSchema, bytes, { readUnknownFields: false }));
  const chunk = request.chunk;
  if (chunk.case === "data") return { kind: "data", data: chunk.value };
  if (chunk.case !== "header" || chunk.value.message === undefined) {
    throw new CodecError("missing-field", "snapshot request without header or data");
  }
  if (chunk.value.message.type !== pb.MessageType.SNAPSHOT) {
    throw new CodecError("snapshot-misplaced", `snapshot header holds message type ${chunk.value.message.type}`);
  }
  const message = messageFromProto(chunk.value.message, limits, new Uint8Array(0));
  return { kind: "header", message, dataBytes: safeNumber(chunk.value.dataBytes, "data_bytes") };
}

/** Encodes the receiver's acknowledgement of a whole snapshot. */
export function encodeSendSnapshotResponse(dataBytes: number): Uint8Array {
  return toBinary(pb.SendSnapshotResponseSchema, create(pb.SendSnapshotResponseSchema, { dataBytes: BigInt(dataBytes) }));
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
