/**
 * Hand-rolled protobuf wire encoding for the benchmark clients' hot path:
 * the requests are two or three fields, and encoding them directly into one
 * Buffer keeps the load generator's CPU cost (which shares the machine with
 * the servers under test) as small as possible.
 */

const wireVarint = 0;
const wireBytes = 2;

function varintBytes(value: number): number {
  let bytes = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 128)) bytes++;
  return bytes;
}

function putVarint(buffer: Buffer, offset: number, value: number): number {
  let v = value;
  let at = offset;
  while (v >= 0x80) {
    buffer[at++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buffer[at++] = v;
  return at;
}

/** A field to encode: a non-negative safe integer (varint) or bytes (length-delimited). */
export type WireField = { readonly field: number; readonly varint: number } | { readonly field: number; readonly bytes: Uint8Array };

/** Encodes `fields` in order as one protobuf message. Fields must be numbered 1..15. */
export function encodeFields(fields: readonly WireField[]): Buffer {
  let size = 0;
  for (const f of fields) {
    size += 1 + ("varint" in f ? varintBytes(f.varint) : varintBytes(f.bytes.byteLength) + f.bytes.byteLength);
  }
  const buffer = Buffer.allocUnsafe(size);
  let at = 0;
  for (const f of fields) {
    if ("varint" in f) {
      buffer[at++] = (f.field << 3) | wireVarint;
      at = putVarint(buffer, at, f.varint);
    } else {
      buffer[at++] = (f.field << 3) | wireBytes;
      at = putVarint(buffer, at, f.bytes.byteLength);
      buffer.set(f.bytes, at);
      at += f.bytes.byteLength;
    }
  }
  return buffer;
}

/** The top-level fields of a message: varints as numbers, length-delimited fields as views. Throws on malformed input. */
export function decodeFields(bytes: Uint8Array): Map<number, number | Uint8Array> {
  const fields = new Map<number, number | Uint8Array>();
  let at = 0;
  const readVarint = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= bytes.byteLength) throw new Error("truncated varint");
      const byte = bytes[at++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new Error("varint too long");
  };
  while (at < bytes.byteLength) {
    const tag = readVarint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === wireVarint) fields.set(field, readVarint());
    else if (wire === wireBytes) {
      const length = readVarint();
      if (at + length > bytes.byteLength) throw new Error("truncated field");
      fields.set(field, bytes.subarray(at, at + length));
      at += length;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
  return fields;
}
