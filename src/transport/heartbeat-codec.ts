/**
 * Coalesced heartbeats: the heartbeats (and their responses) of every awake
 * group between one pair of homeservers travel as one compact notice per
 * flush instead of one Raft message per group, and are expanded on receipt
 * into the per-group messages the cores expect. Sender and receiver come from
 * the authenticated stream, so an entry carries only group, term and one index.
 *
 * Payload (topic {@link heartbeatTopic}):
 *
 * ```
 * version u8 = 1
 * repeated until the end:
 *   kind      u8      1 heartbeat, 2 quiesce heartbeat, 3 heartbeat response
 *   group id  varint length (1..maxIdLength) + UTF-8 bytes
 *   term      varint (<= 2^53 - 1)
 *   index     varint (<= 2^53 - 1)   heartbeat: commit; response: the follower's match index
 * ```
 *
 * Only heartbeats without a read context (or with the quiesce marker) are
 * coalesced; a heartbeat carrying a ReadIndex context goes as a plain message.
 */
import { assert } from "../raft/assert.ts";
import { quiesceContext } from "../raft/raft.ts";
import { MessageType, message, type Message, type NodeId } from "../raft/types.ts";
import { CodecError, type CodecLimits } from "./codec.ts";

/** The reserved notice topic of coalesced heartbeats; never handed to the application's notice handler. */
export const heartbeatTopic = "raft.heartbeats";

/** Most heartbeats in one notice: keeps a notice well under `maxNoticeBytes` even with long group ids. */
export const heartbeatsPerNoticeMax = 8192;

const version = 1;

enum BeatKind {
  Heartbeat = 1,
  QuiesceHeartbeat = 2,
  Response = 3,
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether `m` can travel coalesced: a heartbeat (or response) without a read context. */
export function isCoalescable(m: Message): boolean {
  if (m.type === MessageType.HeartbeatResponse) return m.context.byteLength === 0;
  if (m.type !== MessageType.Heartbeat) return false;
  return m.context.byteLength === 0 || sameBytes(m.context, quiesceContext);
}

/** An upper bound of the bytes `m` takes in a coalesced payload. */
export function coalescedBytes(m: Message): number {
  return 1 + 5 + m.groupId.length * 3 + 16;
}

class Writer {
  private buffer = new Uint8Array(256);
  length = 0;

  private room(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + bytes));
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }

  byte(value: number): void {
    this.room(1);
    this.buffer[this.length++] = value;
  }

  varint(value: number): void {
    assert(Number.isSafeInteger(value) && value >= 0, `varint out of range: ${value}`);
    this.room(8);
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.length++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.buffer[this.length++] = rest;
  }

  bytes(data: Uint8Array): void {
    this.room(data.byteLength);
    this.buffer.set(data, this.length);
    this.length += data.byteLength;
  }

  result(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

/**
 * Encodes heartbeats and heartbeat responses (all {@link isCoalescable}, all
 * to one peer) as one notice payload. A programmer error otherwise.
 */
export function encodeHeartbeats(messages: readonly Message[]): Uint8Array {
  assert(messages.length <= heartbeatsPerNoticeMax, `too many heartbeats for one notice: ${messages.length}`);
  const w = new Writer();
  w.byte(version);
  for (const m of messages) {
    assert(isCoalescable(m), `not a coalescable heartbeat: ${MessageType[m.type]}`);
    const kind = m.type === MessageType.HeartbeatResponse ? BeatKind.Response : m.context.byteLength > 0 ? BeatKind.QuiesceHeartbeat : BeatKind.Heartbeat;
    const id = utf8.encode(m.groupId);
    w.byte(kind);
    w.varint(id.byteLength);
    w.bytes(id);
    w.varint(m.term);
    w.varint(kind === BeatKind.Response ? m.index : m.commit);
  }
  return w.result();
}

class Reader {
  offset = 0;
  constructor(private readonly data: Uint8Array) {}

  get done(): boolean {
    return this.offset >= this.data.byteLength;
  }

  byte(field: string): number {
    const value = this.data[this.offset];
    if (value === undefined) throw new CodecError("malformed-protobuf", `coalesced heartbeats end inside ${field}`);
    this.offset++;
    return value;
  }

  varint(field: string): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.byte(field);
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(value)) throw new CodecError("number-out-of-range", `${field} = ${value} exceeds 2^53 - 1`);
        return value;
      }
      scale *= 0x80;
    }
    throw new CodecError("number-out-of-range", `${field} is longer than 8 bytes`);
  }

  bytes(length: number, field: string): Uint8Array {
    if (this.offset + length > this.data.byteLength) throw new CodecError("malformed-protobuf", `coalesced heartbeats end inside ${field}`);
    const out = this.data.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }
}

/**
 * Expands a coalesced payload from peer `from` to this homeserver `to` into
 * per-group Heartbeat and HeartbeatResponse messages, checking every field
 * against `limits`. Throws {@link CodecError}; a bad payload yields nothing.
 */
export function decodeHeartbeats(payload: Uint8Array, from: NodeId, to: NodeId, limits: CodecLimits): Message[] {
  const r = new Reader(payload);
  if (r.byte("version") !== version) throw new CodecError("malformed-protobuf", `coalesced heartbeats version ${payload[0]}`);
  const messages: Message[] = [];
  const cap = Math.min(limits.maxMessagesPerBatch, heartbeatsPerNoticeMax);
  while (!r.done) {
    if (messages.length >= cap) throw new CodecError("too-many-messages", `more than ${cap} coalesced heartbeats`);
    const kind = r.byte("kind");
    if (kind !== BeatKind.Heartbeat && kind !== BeatKind.QuiesceHeartbeat && kind !== BeatKind.Response) {
      throw new CodecError("unknown-message-type", `coalesced heartbeat kind ${kind}`);
    }
    const idBytes = r.varint("group id length");
    if (idBytes === 0 || idBytes > limits.maxIdLength * 3) throw new CodecError("bad-id", `group id of ${idBytes} bytes`);
    let groupId: string;
    try {
      groupId = utf8Strict.decode(r.bytes(idBytes, "group id"));
    } catch (cause) {
      if (cause instanceof CodecError) throw cause;
      throw new CodecError("bad-id", "group id is not UTF-8", { cause });
    }
    if (groupId.length > limits.maxIdLength) throw new CodecError("bad-id", `group id has length ${groupId.length} (1..${limits.maxIdLength})`);
    const term = r.varint("term");
    const index = r.varint("index");
    if (kind === BeatKind.Response) {
      messages.push(message({ type: MessageType.HeartbeatResponse, groupId, from, to, term, index }));
    } else {
      const context = kind === BeatKind.QuiesceHeartbeat ? quiesceContext : new Uint8Array(0);
      messages.push(message({ type: MessageType.Heartbeat, groupId, from, to, term, commit: index, context }));
    }
  }
  return messages;
}
