/**
 * The cleartext framing of a PrivateMessage (RFC 9420, 6.3.2), read straight
 * from its bytes: every replica reads it for every encrypted-handshake commit
 * and application message it applies, and ts-mls' generic decoder took a
 * quarter of such an apply. It accepts exactly what `decodeMlsMessage` does
 * (a property test holds the two equal), so the decision, replicated by
 * every homeserver, does not depend on which one ran.
 */
import type { ContentTypeName } from "ts-mls";

/** What a server can read of a PrivateMessage without the group's secrets. */
export interface PrivateFraming {
  readonly groupId: Uint8Array;
  readonly epoch: bigint;
  readonly contentType: ContentTypeName;
}

/**
 * How `bytes` (one whole MLSMessage) reads: the framing of a PrivateMessage;
 * `other-wireformat` for a well-framed header of another wire format (left
 * to the generic decoder); `undecodable`; or the count of bytes left after a
 * complete PrivateMessage.
 */
export type PrivateFramingRead = PrivateFraming | "other-wireformat" | "undecodable" | { readonly trailingBytes: number };

const protocolVersionMls10 = 1;
const wireformatPrivateMessage = 2;
const wireformatMax = 5;
const contentTypeNames: readonly (ContentTypeName | undefined)[] = [undefined, "application", "proposal", "commit"];

/** Reads the PrivateMessage framing of `bytes`, with ts-mls 1.x's decoding rules (see the module comment). */
export function readPrivateFraming(bytes: Uint8Array): PrivateFramingRead {
  if (bytes.length < 4) return "undecodable";
  const version = (bytes[0]! << 8) | bytes[1]!;
  const wireformat = (bytes[2]! << 8) | bytes[3]!;
  if (version !== protocolVersionMls10 || wireformat < 1 || wireformat > wireformatMax) return "undecodable";
  if (wireformat !== wireformatPrivateMessage) return "other-wireformat";
  const reader = new VectorReader(bytes, 4);
  const groupId = reader.vector();
  if (groupId === undefined || reader.offset + 9 > bytes.length) return "undecodable";
  const epoch = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(reader.offset);
  const contentType = contentTypeNames[bytes[reader.offset + 8]!];
  if (contentType === undefined) return "undecodable";
  reader.offset += 9;
  // authenticated_data, encrypted_sender_data, ciphertext
  for (let i = 0; i < 3; i++) if (reader.vector() === undefined) return "undecodable";
  if (reader.offset !== bytes.length) return { trailingBytes: bytes.length - reader.offset };
  return { groupId, epoch, contentType };
}

/** Reads MLS variable-length vectors (`opaque x<V>`) as ts-mls 1.x does: 1, 2 or 4 length bytes, not 8. */
class VectorReader {
  constructor(
    private readonly bytes: Uint8Array,
    public offset: number,
  ) {}

  /** The next vector's contents (a view), or undefined when it is cut short or uses the 8-byte length form. */
  vector(): Uint8Array | undefined {
    const bytes = this.bytes;
    const at = this.offset;
    if (at >= bytes.length) return undefined;
    const first = bytes[at]!;
    let length: number;
    let lengthBytes: number;
    switch (first >> 6) {
      case 0:
        length = first;
        lengthBytes = 1;
        break;
      case 1:
        if (at + 2 > bytes.length) return undefined;
        length = ((first & 0x3f) << 8) | bytes[at + 1]!;
        lengthBytes = 2;
        break;
      case 2:
        if (at + 4 > bytes.length) return undefined;
        length = (first & 0x3f) * 0x1000000 + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!);
        lengthBytes = 4;
        break;
      default:
        return undefined;
    }
    const end = at + lengthBytes + length;
    if (end > bytes.length) return undefined;
    this.offset = end;
    return bytes.subarray(at + lengthBytes, end);
  }
}
