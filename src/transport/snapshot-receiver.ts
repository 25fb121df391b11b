/**
 * The receiving half of one SendSnapshot call: checks each request in turn
 * (header first, from the calling peer to us; data within the size limit;
 * an end whose length and CRC-32C match what came) and hands the data to a
 * {@link SnapshotSink} as it arrives, so that a snapshot never has to fit in
 * memory. The message delivered at the end carries what the sink gives back
 * (for the storage sink, a small descriptor of the staged data).
 */
import * as grpc from "@grpc/grpc-js";
import type { GroupId, Message, NodeId } from "../raft/types.ts";
import { crc32cFinish, crc32cInit, crc32cUpdate } from "../storage/crc32c.ts";
import { CodecError, decodeSnapshotRequest, type CodecLimits } from "./codec.ts";
import type { MutableCounters } from "./counters.ts";

/** Where a snapshot's data goes as it arrives. */
export interface SnapshotSink {
  /** Takes the next chunk; the call reads no further request until it resolves. */
  add(chunk: Uint8Array): Promise<void>;
  /** All data arrived and checked: the bytes the Snapshot message is to carry. */
  finish(): Promise<Uint8Array>;
  /** The transfer failed: drops what was taken. */
  abort(): Promise<void>;
}

/** Opens a sink for a snapshot of `groupId`. */
export type SnapshotSinkFactory = (groupId: GroupId) => SnapshotSink;

/** A sink that keeps the data in memory and hands it over whole: for transports without storage (tests). */
export function memorySnapshotSink(): SnapshotSink {
  const chunks: Uint8Array[] = [];
  return {
    add: (chunk) => {
      chunks.push(chunk);
      return Promise.resolve();
    },
    finish: () => Promise.resolve(Buffer.concat(chunks)),
    abort: () => {
      chunks.length = 0;
      return Promise.resolve();
    },
  };
}

/** Why a transfer is refused: the status the sender's call ends with. */
export type Refusal = { readonly code: grpc.status; readonly details: string };

/** What the receiver needs to check a transfer. */
export interface SnapshotReceiverOptions {
  readonly selfId: NodeId;
  readonly limits: CodecLimits;
  readonly counters: MutableCounters;
  /** Largest snapshot data accepted, in bytes. */
  readonly maxSnapshotBytes: number;
  readonly openSink: SnapshotSinkFactory;
}

/** One transfer from `peerId`, request by request. */
export class SnapshotReceiver {
  private header: Message | null = null;
  private sink: SnapshotSink | null = null;
  private receivedBytes = 0;
  private crc = crc32cInit;
  private end: { dataBytes: number; crc32c: number } | null = null;

  constructor(private readonly peerId: NodeId, private readonly options: SnapshotReceiverOptions) {}

  /** Bytes of data taken so far. */
  get bytes(): number {
    return this.receivedBytes;
  }

  /** Takes one request; resolves with why the transfer must stop, or null. */
  async add(bytes: Buffer): Promise<Refusal | null> {
    let request;
    try {
      request = decodeSnapshotRequest(bytes, this.options.limits);
    } catch (error) {
      if (!(error instanceof CodecError)) throw error;
      return { code: grpc.status.INVALID_ARGUMENT, details: error.message };
    }
    if (this.end !== null) return { code: grpc.status.INVALID_ARGUMENT, details: "snapshot request after its end" };
    if (request.kind === "header") {
      if (this.header !== null) return { code: grpc.status.INVALID_ARGUMENT, details: "second snapshot header" };
      const { message } = request;
      if (message.from !== this.peerId || message.to !== this.options.selfId) {
        this.options.counters.messagesForged += message.from === this.peerId ? 0 : 1;
        return { code: grpc.status.PERMISSION_DENIED, details: `snapshot from ${message.from} to ${message.to} on a call from ${this.peerId}` };
      }
      this.header = message;
      this.sink = this.options.openSink(message.groupId);
      return null;
    }
    if (this.sink === null) return { code: grpc.status.INVALID_ARGUMENT, details: `snapshot ${request.kind} before its header` };
    if (request.kind === "end") {
      this.end = request;
      return null;
    }
    this.receivedBytes += request.data.length;
    if (this.receivedBytes > this.options.maxSnapshotBytes) {
      return { code: grpc.status.RESOURCE_EXHAUSTED, details: `snapshot of more than ${this.options.maxSnapshotBytes} bytes` };
    }
    this.crc = crc32cUpdate(this.crc, request.data);
    await this.sink.add(request.data);
    return null;
  }

  /** The whole Snapshot message once the call ended, or why the transfer was incomplete. */
  async finish(): Promise<Message | Refusal> {
    const header = this.header;
    const metadata = header?.snapshot?.metadata;
    if (header === null || this.sink === null || metadata === undefined) return { code: grpc.status.INVALID_ARGUMENT, details: "snapshot call without a header" };
    if (this.end === null) return { code: grpc.status.INVALID_ARGUMENT, details: `snapshot data ended at ${this.receivedBytes} bytes without its end` };
    if (this.end.dataBytes !== this.receivedBytes) {
      return { code: grpc.status.INVALID_ARGUMENT, details: `snapshot data ended at ${this.receivedBytes} of ${this.end.dataBytes} bytes` };
    }
    if (this.end.crc32c !== crc32cFinish(this.crc)) return { code: grpc.status.INVALID_ARGUMENT, details: "snapshot data does not match its CRC-32C" };
    const data = await this.sink.finish();
    this.sink = null;
    return { ...header, snapshot: { metadata, data } };
  }

  /** Drops whatever the sink took (the transfer failed or was cancelled). */
  async abort(): Promise<void> {
    const sink = this.sink;
    this.sink = null;
    await sink?.abort();
  }
}
