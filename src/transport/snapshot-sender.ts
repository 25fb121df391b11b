/**
 * Sends one Snapshot message to a peer over PeerService.SendSnapshot: a
 * header, then the data in chunks, honoring the call's backpressure, so a
 * snapshot of any size streams with bounded memory beyond the snapshot itself.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Message } from "../raft/types.ts";
import { encodeSnapshotChunk, encodeSnapshotHeader } from "./codec.ts";
import { peerServicePaths } from "./peer-service.ts";

const identity = (bytes: Buffer): Buffer => bytes;

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A snapshot transfer under way. */
export interface SnapshotTransfer {
  /** Resolves once the receiver acknowledged the whole snapshot; rejects with the call's error otherwise. */
  readonly done: Promise<void>;
  /** Abandons the transfer (`done` then rejects with CANCELLED). */
  cancel(): void;
}

/** Starts sending `message` (a Snapshot with its data) on `client`, in chunks of `chunkBytes`. */
export function startSnapshotTransfer(
  client: grpc.Client,
  message: Message,
  options: { readonly chunkBytes: number; readonly timeoutMs: number; readonly metadata: grpc.Metadata },
): SnapshotTransfer {
  let finished = false;
  let wakeWriter: (() => void) | null = null;
  let call: grpc.ClientWritableStream<Buffer> | null = null;
  const done = new Promise<void>((resolve, reject) => {
    call = client.makeClientStreamRequest<Buffer, Buffer>(
      peerServicePaths.sendSnapshot, identity, identity, options.metadata,
      { deadline: Date.now() + options.timeoutMs },
      (error) => {
        finished = true;
        wakeWriter?.();
        if (error === null) resolve();
        else reject(error);
      },
    );
  });
  const stream = call as unknown as grpc.ClientWritableStream<Buffer>;
  stream.on("drain", () => wakeWriter?.());
  // Resolves false once the call has finished (failed), true when more may be written.
  const write = async (bytes: Uint8Array): Promise<boolean> => {
    if (finished) return false;
    if (!stream.write(toBuffer(bytes))) {
      await new Promise<void>((wake) => { wakeWriter = wake; });
      wakeWriter = null;
    }
    return !finished;
  };
  const pump = async (): Promise<void> => {
    const data = message.snapshot?.data ?? new Uint8Array(0);
    if (!(await write(encodeSnapshotHeader(message)))) return;
    for (let offset = 0; offset < data.length; offset += options.chunkBytes) {
      if (!(await write(encodeSnapshotChunk(data.subarray(offset, offset + options.chunkBytes))))) return;
    }
    stream.end();
  };
  pump().catch((error: unknown) => {
    stream.cancel();
    throw error;
  });
  return { done, cancel: () => stream.cancel() };
}
