/**
 * Sends one Snapshot message to a peer over PeerService.SendSnapshot: a
 * header, then the data as it is read from its source, in chunks, honoring
 * the call's backpressure, then an end with the data's length and CRC-32C.
 * The source is read only as fast as the peer takes it, so a snapshot of any
 * size streams in bounded memory.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Message } from "../raft/types.ts";
import { crc32cFinish, crc32cInit, crc32cUpdate } from "../storage/crc32c.ts";
import { encodeSnapshotChunk, encodeSnapshotEnd, encodeSnapshotHeader } from "./codec.ts";
import { peerServicePaths } from "./peer-service.ts";

const identity = (bytes: Buffer): Buffer => bytes;

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A snapshot transfer under way. */
export interface SnapshotTransfer {
  /** Resolves with the bytes of data sent once the receiver acknowledged them all; rejects with the call's (or the source's) error otherwise. */
  readonly done: Promise<number>;
  /** Abandons the transfer (`done` then rejects with CANCELLED). */
  cancel(): void;
}

/** Starts sending `message` (a Snapshot; its own data is not sent) on `client`, with the data read from `source`, in chunks of at most `chunkBytes`. */
export function startSnapshotTransfer(
  client: grpc.Client,
  message: Message,
  source: AsyncIterable<Uint8Array>,
  options: { readonly chunkBytes: number; readonly stallTimeoutMs: number; readonly metadata: grpc.Metadata },
): SnapshotTransfer {
  let finished = false;
  let sentBytes = 0;
  let sourceError: unknown;
  let wakeWriter: (() => void) | null = null;
  let call: grpc.ClientWritableStream<Buffer> | null = null;
  const done = new Promise<number>((resolve, reject) => {
    call = client.makeClientStreamRequest<Buffer, Buffer>(
      peerServicePaths.sendSnapshot, identity, identity, options.metadata, {},
      (error) => {
        finished = true;
        clearInterval(stallCheck);
        wakeWriter?.();
        if (error === null) resolve(sentBytes);
        else reject(sourceError ?? error);
      },
    );
  });
  const stream = call as unknown as grpc.ClientWritableStream<Buffer>;
  // No deadline for the whole transfer (its length grows with the state): it is cancelled when no
  // data has moved for stallTimeoutMs.
  let lastProgressMs = Date.now();
  const stallCheck = setInterval(() => {
    if (Date.now() - lastProgressMs <= options.stallTimeoutMs) return;
    sourceError ??= new Error(`snapshot transfer stalled: no data moved for ${options.stallTimeoutMs} ms`);
    stream.cancel();
  }, Math.max(10, Math.min(1000, options.stallTimeoutMs / 4)));
  stream.on("drain", () => wakeWriter?.());
  // Resolves false once the call has finished (failed), true when more may be written.
  const write = async (bytes: Uint8Array): Promise<boolean> => {
    if (finished) return false;
    if (!stream.write(toBuffer(bytes))) {
      await new Promise<void>((wake) => { wakeWriter = wake; });
      wakeWriter = null;
    }
    lastProgressMs = Date.now();
    return !finished;
  };
  const pump = async (): Promise<void> => {
    const iterator = source[Symbol.asyncIterator]();
    let crc = crc32cInit;
    let exhausted = false;
    try {
      if (!(await write(encodeSnapshotHeader(message)))) return;
      for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
        const data = next.value;
        for (let offset = 0; offset < data.length; offset += options.chunkBytes) {
          const chunk = data.subarray(offset, offset + options.chunkBytes);
          crc = crc32cUpdate(crc, chunk);
          sentBytes += chunk.length;
          if (!(await write(encodeSnapshotChunk(chunk)))) return;
        }
      }
      exhausted = true;
      if (!(await write(encodeSnapshotEnd(sentBytes, crc32cFinish(crc))))) return;
      stream.end();
    } finally {
      // Stopped early (the call failed): let the source release what it holds (a storage iterator).
      if (!exhausted) await iterator.return?.();
    }
  };
  pump().catch((error: unknown) => {
    sourceError ??= error;
    stream.cancel();
  });
  return { done, cancel: () => stream.cancel() };
}
