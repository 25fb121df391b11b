/**
 * The binary encoding of what the storage engine persists: log entries, hard
 * state, snapshot metadata, membership and small counters. Compact (unsigned
 * LEB128 varints, length-prefixed strings and bytes) and canonical: a decoder
 * accepts exactly the bytes its encoder produces, so every strict prefix and
 * every overlong varint, unknown enum value, invalid UTF-8 string or trailing
 * byte is rejected with a {@link CodecError}. The record checksum (records.ts)
 * guards against disk corruption; the codec guards against bugs and versions.
 */
import { assert } from "../raft/assert.ts";
import {
  EntryType,
  noCatchUpFloor,
  type CatchUpFloor,
  type ConfState,
  type Entry,
  type HardState,
  type LogIndex,
  type NodeId,
  type SnapshotMetadata,
  type Term,
} from "../raft/types.ts";

/** Thrown when bytes do not decode: truncated, garbage, or from an unknown format. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

/** The longest varint a safe integer (< 2^53) needs: 8 groups of 7 bits. */
const varintBytesMax = 8;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Appends encoded fields to a growing buffer. */
export class ByteWriter {
  private buffer: Uint8Array;
  private length = 0;

  /** `capacityBytes`: the expected size, to avoid regrowing for large payloads. */
  constructor(capacityBytes = 64) {
    this.buffer = new Uint8Array(Math.max(16, capacityBytes));
  }

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    let capacity = this.buffer.length * 2;
    while (capacity < this.length + bytes) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }

  /** A non-negative safe integer as an unsigned LEB128 varint. */
  uvarint(value: number): this {
    assert(Number.isSafeInteger(value) && value >= 0, `uvarint out of range: ${value}`);
    this.reserve(varintBytesMax);
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.length++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.buffer[this.length++] = rest;
    return this;
  }

  byte(value: number): this {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xff, `byte out of range: ${value}`);
    this.reserve(1);
    this.buffer[this.length++] = value;
    return this;
  }

  /** Length-prefixed bytes. */
  bytes(value: Uint8Array): this {
    this.uvarint(value.length);
    this.reserve(value.length);
    this.buffer.set(value, this.length);
    this.length += value.length;
    return this;
  }

  /** Length-prefixed UTF-8. */
  string(value: string): this {
    return this.bytes(utf8Encoder.encode(value));
  }

  /** The bytes written so far (a view; the writer must not be used afterwards). */
  finish(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

/** Reads fields written by {@link ByteWriter}, rejecting anything a writer could not have produced. */
export class ByteReader {
  private position = 0;

  constructor(private readonly input: Uint8Array, private readonly what: string) {}

  private fail(reason: string): never {
    throw new CodecError(`${this.what}: ${reason} at byte ${this.position} of ${this.input.length}`);
  }

  uvarint(): number {
    let value = 0;
    let scale = 1;
    for (let count = 1; count <= varintBytesMax; count++) {
      const byte = this.input[this.position];
      if (byte === undefined) this.fail("truncated varint");
      this.position++;
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) {
        if (byte === 0 && count > 1) this.fail("overlong varint");
        if (!Number.isSafeInteger(value)) this.fail("varint beyond 2^53");
        return value;
      }
      scale *= 0x80;
    }
    return this.fail("varint longer than 8 bytes");
  }

  byte(): number {
    const byte = this.input[this.position];
    if (byte === undefined) this.fail("truncated byte");
    this.position++;
    return byte;
  }

  /** Length-prefixed bytes, as a view into the input (no copy). */
  bytes(): Uint8Array {
    const length = this.uvarint();
    if (length > this.input.length - this.position) this.fail(`length ${length} beyond the input`);
    const start = this.input.byteOffset + this.position;
    this.position += length;
    return new Uint8Array(this.input.buffer, start, length);
  }

  string(): string {
    const bytes = this.bytes();
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      return this.fail("invalid UTF-8");
    }
  }

  /** Asserts the whole input was consumed. */
  end(): void {
    if (this.position !== this.input.length) this.fail("trailing bytes");
  }
}

function encodeNodeIds(writer: ByteWriter, ids: readonly NodeId[]): void {
  writer.uvarint(ids.length);
  for (const id of ids) writer.string(id);
}

function decodeNodeIds(reader: ByteReader): NodeId[] {
  const count = reader.uvarint();
  const ids: NodeId[] = [];
  // Each id takes at least one byte, so a count beyond the input fails in string() long before memory does.
  for (let i = 0; i < count; i++) ids.push(reader.string());
  return ids;
}

function writeConfState(writer: ByteWriter, confState: ConfState): void {
  encodeNodeIds(writer, confState.voters);
  encodeNodeIds(writer, confState.votersOutgoing);
  encodeNodeIds(writer, confState.learners);
  encodeNodeIds(writer, confState.learnersNext);
}

function readConfState(reader: ByteReader): ConfState {
  const voters = decodeNodeIds(reader);
  const votersOutgoing = decodeNodeIds(reader);
  const learners = decodeNodeIds(reader);
  const learnersNext = decodeNodeIds(reader);
  return { voters, votersOutgoing, learners, learnersNext };
}

/** Encodes a membership. */
export function encodeConfState(confState: ConfState): Uint8Array {
  const writer = new ByteWriter();
  writeConfState(writer, confState);
  return writer.finish();
}

/** Decodes a membership; throws {@link CodecError} on malformed input. */
export function decodeConfState(bytes: Uint8Array): ConfState {
  const reader = new ByteReader(bytes, "conf state");
  const confState = readConfState(reader);
  reader.end();
  return confState;
}

/**
 * Encodes an entry's term, type and data. The index is not encoded: it is part
 * of the record's key, which the record checksum covers.
 */
export function encodeEntryBody(entry: Entry): Uint8Array {
  return new ByteWriter(entry.data.length + 2 * varintBytesMax + 1).byte(entry.type).uvarint(entry.term).bytes(entry.data).finish();
}

/** Decodes an entry stored at `index`; throws {@link CodecError} on malformed input. */
export function decodeEntryBody(index: LogIndex, bytes: Uint8Array): Entry {
  const reader = new ByteReader(bytes, `log entry ${index}`);
  const type = reader.byte();
  if (type !== EntryType.Normal && type !== EntryType.ConfChange) {
    throw new CodecError(`log entry ${index}: unknown entry type ${type}`);
  }
  const term = reader.uvarint();
  const data = reader.bytes();
  reader.end();
  return { index, term, type, data };
}

/** Encodes a hard state. */
export function encodeHardState(hardState: HardState): Uint8Array {
  return new ByteWriter().uvarint(hardState.term).string(hardState.vote).uvarint(hardState.commit).finish();
}

/** Decodes a hard state; throws {@link CodecError} on malformed input. */
export function decodeHardState(bytes: Uint8Array): HardState {
  const reader = new ByteReader(bytes, "hard state");
  const term = reader.uvarint();
  const vote = reader.string();
  const commit = reader.uvarint();
  reader.end();
  return { term, vote, commit };
}

/** Encodes snapshot metadata (the snapshot's data is stored as its own record). */
export function encodeSnapshotMetadata(metadata: SnapshotMetadata): Uint8Array {
  const writer = new ByteWriter().uvarint(metadata.index).uvarint(metadata.term);
  writeConfState(writer, metadata.confState);
  return writer.finish();
}

/** Decodes snapshot metadata; throws {@link CodecError} on malformed input. */
export function decodeSnapshotMetadata(bytes: Uint8Array): SnapshotMetadata {
  const reader = new ByteReader(bytes, "snapshot metadata");
  const index = reader.uvarint();
  const term = reader.uvarint();
  const confState = readConfState(reader);
  reader.end();
  return { index, term, confState };
}

/** A log position: the index and term of one entry. */
export interface LogPosition {
  readonly index: LogIndex;
  readonly term: Term;
}

/** Encodes a log position (used for the last discarded entry of a compacted log). */
export function encodeLogPosition(position: LogPosition): Uint8Array {
  return new ByteWriter().uvarint(position.index).uvarint(position.term).finish();
}

/** Decodes a log position; throws {@link CodecError} on malformed input. */
export function decodeLogPosition(bytes: Uint8Array): LogPosition {
  const reader = new ByteReader(bytes, "log position");
  const index = reader.uvarint();
  const term = reader.uvarint();
  reader.end();
  return { index, term };
}

/** Encodes one non-negative safe integer (an applied index, a format version). */
export function encodeCounter(value: number): Uint8Array {
  return new ByteWriter().uvarint(value).finish();
}

/** Decodes one non-negative safe integer; throws {@link CodecError} on malformed input. */
export function decodeCounter(bytes: Uint8Array, what: string): number {
  const reader = new ByteReader(bytes, what);
  const value = reader.uvarint();
  reader.end();
  return value;
}

/** Encodes a group registry record's payload: empty for no catch-up floor, else its index and term. */
export function encodeCatchUpFloor(floor: CatchUpFloor): Uint8Array {
  return floor.index === 0 ? new Uint8Array(0) : new ByteWriter().uvarint(floor.index).uvarint(floor.term).finish();
}

/** Decodes a group registry record's payload (see {@link encodeCatchUpFloor}); throws {@link CodecError} on malformed input. */
export function decodeCatchUpFloor(bytes: Uint8Array): CatchUpFloor {
  if (bytes.length === 0) return noCatchUpFloor;
  const reader = new ByteReader(bytes, "catch-up floor");
  const index = reader.uvarint();
  const term = reader.uvarint();
  reader.end();
  return { index, term };
}
