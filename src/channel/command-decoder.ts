/**
 * Decodes a channel command entry, by hand for the one every commit makes (a
 * SubmitCommit with its request id and the certificates its leader records
 * along): every homeserver of the channel decodes it when it applies it, and
 * protobuf-es's reflection-driven `fromBinary` was a twentieth of a
 * follower's busy time and a seventh of what it allocated. The result is
 * what `fromBinary` returns (a property test holds the two equal): anything
 * unusual (another command, an unknown or repeated field, a wrong wire type,
 * a non-ASCII string, a number beyond 2^53 - 1) goes to `fromBinary`, so
 * what apply decides cannot depend on which decoder ran.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { SignatureSchema, SubmitCommitRequestSchema, type Signature, type SubmitCommitRequest } from "../gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema, CommitSignaturesSchema, type ChannelCommand, type CommitSignatures } from "../gen/epochd/state/v1/channel_state_pb.ts";
import { WireReader } from "../transport/protowire.ts";

/** `fromBinary(ChannelCommandSchema, bytes)`: throws on malformed input as it does. */
export function decodeChannelCommand(bytes: Uint8Array): ChannelCommand {
  return readSubmitCommitCommand(bytes) ?? fromBinary(ChannelCommandSchema, bytes);
}

const lengthDelimited = 2;
const varint = 0;
const tagOf = (field: number, wireType: number) => (field << 3) | wireType;
const noBytes: Uint8Array = new Uint8Array(0);

/** Thrown inside the hand-written path for anything it leaves to fromBinary. */
class Unusual extends Error {}

/** A field's payload as fromBinary gives it: a view of the input, not a copy. */
function view(input: Uint8Array, reader: WireReader): Uint8Array {
  const { start, end } = reader.delimited();
  return input.subarray(start, end);
}

/** An ASCII string (anything else is left to fromBinary, whose UTF-8 rules then apply). */
function asciiString(input: Uint8Array, reader: WireReader): string {
  const { start, end } = reader.delimited();
  let text = "";
  for (let i = start; i < end; i++) {
    const byte = input[i]!;
    if (byte >= 0x80) throw new Unusual();
    text += String.fromCharCode(byte);
  }
  return text;
}

function uint32(reader: WireReader): number {
  const value = reader.varint("uint32");
  if (value > 0xffffffff) throw new Unusual();
  return value;
}

/** Reads the fields of one message from `reader`: each known tag at most once unless `repeated` lists it. */
function readFields(reader: WireReader, read: (tag: number) => boolean, repeated: readonly number[] = []): void {
  const seen: number[] = [];
  while (!reader.done()) {
    const tag = reader.tag();
    if (!repeated.includes(tag)) {
      if (seen.includes(tag)) throw new Unusual();
      seen.push(tag);
    }
    if (!read(tag)) throw new Unusual();
  }
}

function readSubmitCommit(input: Uint8Array, reader: WireReader): SubmitCommitRequest {
  const request: SubmitCommitRequest = { $typeName: SubmitCommitRequestSchema.typeName, channelId: "", epoch: 0n, commit: noBytes, nextGroupInfo: noBytes, welcome: noBytes };
  readFields(reader, (tag) => {
    if (tag === tagOf(1, lengthDelimited)) request.channelId = asciiString(input, reader);
    else if (tag === tagOf(2, varint)) request.epoch = BigInt(reader.varint("epoch"));
    else if (tag === tagOf(3, lengthDelimited)) request.commit = view(input, reader);
    else if (tag === tagOf(4, lengthDelimited)) request.nextGroupInfo = view(input, reader);
    else if (tag === tagOf(5, lengthDelimited)) request.welcome = view(input, reader);
    else return false;
    return true;
  });
  return request;
}

function readSignature(input: Uint8Array, reader: WireReader): Signature {
  const signature: Signature = { $typeName: SignatureSchema.typeName, homeserverId: "", signature: noBytes, leafIndex: 0, leafCount: 0, proof: [] };
  readFields(
    reader,
    (tag) => {
      if (tag === tagOf(1, lengthDelimited)) signature.homeserverId = asciiString(input, reader);
      else if (tag === tagOf(2, lengthDelimited)) signature.signature = view(input, reader);
      else if (tag === tagOf(3, varint)) signature.leafIndex = uint32(reader);
      else if (tag === tagOf(4, varint)) signature.leafCount = uint32(reader);
      else if (tag === tagOf(5, lengthDelimited)) signature.proof.push(view(input, reader));
      else return false;
      return true;
    },
    [tagOf(5, lengthDelimited)],
  );
  return signature;
}

function readCommitSignatures(input: Uint8Array, reader: WireReader): CommitSignatures {
  const item: CommitSignatures = { $typeName: CommitSignaturesSchema.typeName, channelId: "", epoch: 0n, signatures: [], signerKeys: [] };
  readFields(
    reader,
    (tag) => {
      if (tag === tagOf(1, lengthDelimited)) item.channelId = asciiString(input, reader);
      else if (tag === tagOf(2, varint)) item.epoch = BigInt(reader.varint("epoch"));
      else if (tag === tagOf(3, lengthDelimited)) item.signatures.push(readSignature(input, reader.nested()));
      else if (tag === tagOf(4, lengthDelimited)) item.signerKeys.push(view(input, reader));
      else return false;
      return true;
    },
    [tagOf(3, lengthDelimited), tagOf(4, lengthDelimited)],
  );
  return item;
}

/** The command if it is a SubmitCommit of the usual shape, else undefined (see the module comment; exported for tests). */
export function readSubmitCommitCommand(input: Uint8Array): ChannelCommand | undefined {
  try {
    const reader = new WireReader(input);
    let submitCommit: SubmitCommitRequest | undefined;
    let requestId = noBytes;
    const certificates: CommitSignatures[] = [];
    readFields(
      reader,
      (tag) => {
        if (tag === tagOf(2, lengthDelimited)) submitCommit = readSubmitCommit(input, reader.nested());
        else if (tag === tagOf(6, lengthDelimited)) requestId = view(input, reader);
        else if (tag === tagOf(7, lengthDelimited)) certificates.push(readCommitSignatures(input, reader.nested()));
        else return false;
        return true;
      },
      [tagOf(7, lengthDelimited)],
    );
    if (submitCommit === undefined) return undefined;
    return { $typeName: ChannelCommandSchema.typeName, command: { case: "submitCommit", value: submitCommit }, requestId, certificates };
  } catch {
    // Unusual, or malformed: fromBinary decides (and throws on malformed input as before).
    return undefined;
  }
}
