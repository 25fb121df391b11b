/**
 * The protobuf wire format, by hand, for the hot paths: Raft batches on the
 * peer stream are encoded and decoded here at several thousand per second
 * (protobuf-es's reflection-driven codec cost the leader a fifth of its
 * CPU), and the records every accepted commit writes are encoded here
 * (src/channel/record-codec.ts). Only what those use: varints (uint64 up
 * to 2^53 - 1, enums, bools) and length-delimited fields (strings, bytes,
 * messages). A reader rejects
 * anything malformed with a {@link CodecError} and skips unknown fields, as
 * any protobuf reader does, so the schema in proto/ stays the contract.
 */
import { CodecError, type CodecErrorCode } from "./codec-error.ts";

/** Wire types of the protobuf encoding (groups, 3 and 4, are long deprecated and refused). */
export const enum WireType {
  Varint = 0,
  Fixed64 = 1,
  LengthDelimited = 2,
  Fixed32 = 5,
}

/** Bytes of `value` as a varint; `value` is a non-negative safe integer. */
export function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  let size = 4;
  let rest = Math.floor(value / 0x10000000);
  while (rest > 0) {
    size++;
    rest = Math.floor(rest / 0x80);
  }
  return size;
}

/** Bytes of a length-delimited field whose payload is `length` bytes, tag included (fields below 16). */
export function delimitedSize(length: number): number {
  return 1 + varintSize(length) + length;
}

/** Bytes of a bytes or string field of `length` bytes, tag included; 0 when empty and left out. */
export function lengthFieldSize(length: number): number {
  return length === 0 ? 0 : delimitedSize(length);
}

/** Bytes of a varint field holding `value`, tag included; 0 when the value is the default and left out. */
export function varintFieldSize(value: number): number {
  return value === 0 ? 0 : 1 + varintSize(value);
}

/** UTF-8 length of `text`, with a fast path for ASCII (every id epochd makes). */
export function utf8Length(text: string): number {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return Buffer.byteLength(text, "utf8");
  return text.length;
}

/**
 * Writes fields into a buffer sized beforehand (with the size functions
 * above), so a batch is one allocation and one pass. Field numbers are below
 * 16 (one-byte tags), as everywhere in raft.proto.
 */
export class WireWriter {
  readonly buffer: Buffer;
  private position = 0;

  constructor(sizeBytes: number) {
    this.buffer = Buffer.allocUnsafe(sizeBytes);
  }

  private tag(field: number, wireType: WireType): void {
    this.buffer[this.position++] = (field << 3) | wireType;
  }

  /** A raw varint; `value` is a non-negative safe integer. */
  varint(value: number): this {
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.position++] = (rest & 0x7f) | 0x80;
      rest = rest >= 0x10000000 ? Math.floor(rest / 0x80) : rest >>> 7;
    }
    this.buffer[this.position++] = rest;
    return this;
  }

  /** A varint field, left out when 0 (proto3's default). */
  varintField(field: number, value: number): this {
    if (value === 0) return this;
    this.tag(field, WireType.Varint);
    return this.varint(value);
  }

  /** A fixed32 field (an unsigned 32-bit value, little-endian), left out when 0. */
  fixed32Field(field: number, value: number): this {
    if (value === 0) return this;
    this.tag(field, WireType.Fixed32);
    this.buffer.writeUInt32LE(value >>> 0, this.position);
    this.position += 4;
    return this;
  }

  /** The tag and length of a length-delimited field; its payload follows. */
  delimited(field: number, length: number): this {
    this.tag(field, WireType.LengthDelimited);
    return this.varint(length);
  }

  /** A bytes field, left out when empty. */
  bytesField(field: number, value: Uint8Array): this {
    if (value.length === 0) return this;
    return this.delimited(field, value.length).raw(value);
  }

  /** A string field of UTF-8 length `length` (from {@link utf8Length}), left out when empty. */
  stringField(field: number, value: string, length: number): this {
    return length === 0 ? this : this.stringElement(field, value, length);
  }

  /** One element of a repeated string field: written even when empty. */
  stringElement(field: number, value: string, length: number): this {
    this.delimited(field, length);
    if (length === value.length) {
      for (let i = 0; i < length; i++) this.buffer[this.position + i] = value.charCodeAt(i);
    } else {
      this.buffer.write(value, this.position, length, "utf8");
    }
    this.position += length;
    return this;
  }

  /** Bytes as they are, no tag or length (the payload after {@link delimited}). */
  raw(value: Uint8Array): this {
    this.buffer.set(value, this.position);
    this.position += value.length;
    return this;
  }

  /** The encoded bytes; asserts the sizing matched. */
  finish(): Buffer {
    if (this.position !== this.buffer.length) throw new Error(`wire sizing mismatch: wrote ${this.position} of ${this.buffer.length} bytes`);
    return this.buffer;
  }
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Reads fields from `input[start, end)`; every malformed input becomes a {@link CodecError}. */
export class WireReader {
  private position: number;

  constructor(
    private readonly input: Uint8Array,
    start = 0,
    private readonly end = input.length,
  ) {
    this.position = start;
  }

  private malformed(reason: string): never {
    throw new CodecError("malformed-protobuf", `${reason} at byte ${this.position}`);
  }

  /** Whether the reader reached its end. */
  done(): boolean {
    return this.position >= this.end;
  }

  /** The next field's tag: field number times 8 plus wire type. */
  tag(): number {
    const tag = this.varint("tag");
    if (tag >>> 3 === 0 || tag > 0xffffffff) this.malformed(`invalid tag ${tag}`);
    return tag;
  }

  /**
   * A varint up to 2^53 - 1 (a uint64 beyond that is refused as
   * "number-out-of-range", naming `field`). Up to 10 bytes, like any varint.
   */
  varint(field: string): number {
    const first = this.input[this.position];
    if (first !== undefined && first < 0x80 && this.position < this.end) {
      this.position++;
      return first;
    }
    let value = 0;
    let scale = 1;
    for (let count = 0; count < 10; count++) {
      if (this.position >= this.end) this.malformed("truncated varint");
      const byte = this.input[this.position++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (value > Number.MAX_SAFE_INTEGER) throw new CodecError("number-out-of-range", `${field} exceeds 2^53 - 1`);
        return value;
      }
      scale *= 0x80;
    }
    return this.malformed("varint longer than 10 bytes");
  }

  /** An enum: a negative or huge value (never a known one) comes back as -1. */
  enumValue(): number {
    const start = this.position;
    try {
      return this.varint("enum");
    } catch (error) {
      if (!(error instanceof CodecError) || error.code !== "number-out-of-range") throw error;
      this.position = start;
      this.skip(WireType.Varint);
      return -1;
    }
  }

  /** A fixed32 field's unsigned value. */
  fixed32(): number {
    this.advance(4);
    const at = this.position - 4;
    const b = this.input;
    return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
  }

  /** The payload bounds of a length-delimited field: [start, end). */
  delimited(): { start: number; end: number } {
    const length = this.varint("length");
    if (length > this.end - this.position) this.malformed(`length ${length} beyond the input`);
    const start = this.position;
    this.position += length;
    return { start, end: this.position };
  }

  /**
   * A bytes field, copied out (stored entries must not pin whole receive
   * buffers); longer than `maxBytes` is refused with `tooLarge` before any copy.
   */
  bytes(maxBytes: number, tooLarge: CodecErrorCode): Uint8Array {
    const { start, end } = this.delimited();
    if (end - start > maxBytes) throw new CodecError(tooLarge, `${end - start} bytes (max ${maxBytes})`);
    return new Uint8Array(this.input.subarray(start, end));
  }

  /** A reader over the payload of a length-delimited field. */
  nested(): WireReader {
    const { start, end } = this.delimited();
    return new WireReader(this.input, start, end);
  }

  /** A UTF-8 string field; invalid UTF-8 is malformed. */
  string(): string {
    const { start, end } = this.delimited();
    if (end - start <= 64) {
      let ascii = "";
      let i = start;
      for (; i < end; i++) {
        const byte = this.input[i]!;
        if (byte >= 0x80) break;
        ascii += String.fromCharCode(byte);
      }
      if (i === end) return ascii;
    }
    try {
      return utf8Strict.decode(this.input.subarray(start, end));
    } catch {
      return this.malformed("invalid UTF-8 in a string");
    }
  }

  /** Skips a field of an unknown number. */
  skip(wireType: number): void {
    switch (wireType) {
      case WireType.Varint:
        for (let count = 0; ; count++) {
          if (count === 10) this.malformed("varint longer than 10 bytes");
          if (this.position >= this.end) this.malformed("truncated varint");
          if (this.input[this.position++]! < 0x80) return;
        }
      case WireType.Fixed64:
        return this.advance(8);
      case WireType.LengthDelimited:
        this.delimited();
        return;
      case WireType.Fixed32:
        return this.advance(4);
      default:
        this.malformed(`unsupported wire type ${wireType}`);
    }
  }

  private advance(bytes: number): void {
    if (this.end - this.position < bytes) this.malformed("truncated fixed-width field");
    this.position += bytes;
  }

  /** Refuses a known field sent with the wrong wire type. */
  expect(tag: number, wireType: WireType): void {
    if ((tag & 7) !== wireType) this.malformed(`field ${tag >>> 3} has wire type ${tag & 7}, expected ${wireType}`);
  }
}
