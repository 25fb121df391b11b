/**
 * A bidirectional stream of independent items (KvService.PutStream,
 * ChannelService.SubmitCommitStream): each item is decoded and handled on its
 * own and answered, in completion order, with its result or its status. A
 * malformed or refused item gets its status and the stream goes on. At most
 * `inflightMax` items are handled at once (more are refused with
 * RESOURCE_EXHAUSTED); a client that sends without reading stops being read
 * until it catches up; the stream ends once the client ended it and every
 * item is answered.
 */
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ApiError } from "./errors.ts";
import { decodeRequest, encodeMessage } from "./grpc-service.ts";

/** How one kind of item stream decodes, handles and answers its items. */
export interface ItemStreamOptions<I extends DescMessage, O extends DescMessage> {
  readonly request: I;
  readonly response: O;
  /** What the stream carries, for the RESOURCE_EXHAUSTED message ("writes", "commits"). */
  readonly items: string;
  readonly inflightMax: number;
  /** The item's request id, echoed in its answer. */
  requestIdOf(item: MessageShape<I>): bigint;
  /** The answer to a handled item; throwing (or rejecting) refuses it. */
  handle(item: MessageShape<I>): Promise<MessageInitShape<O>>;
  /** The answer to a refused item (`requestId` 0 when the item could not be decoded). */
  refusal(requestId: bigint, error: unknown): MessageInitShape<O>;
  /** A faster encoding of an answer than protobuf-es's, the same bytes; undefined leaves it to protobuf-es. */
  encode?(message: MessageInitShape<O>): Uint8Array | undefined;
}

/** Serves `call` with `options` (see the module comment). */
export function serveItemStream<I extends DescMessage, O extends DescMessage>(call: grpc.ServerDuplexStream<Buffer, Buffer>, options: ItemStreamOptions<I, O>): void {
  let inflight = 0;
  let ended = false;
  const respond = (message: MessageInitShape<O>, byHand = true) => {
    if (call.writableEnded || call.destroyed) return;
    const bytes = byHand ? options.encode?.(message) : undefined;
    const encoded = bytes === undefined ? encodeMessage(options.response, message) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (!call.write(encoded) && !call.isPaused()) {
      call.pause();
      call.once("drain", () => call.resume());
    }
  };
  const refuse = (requestId: bigint, error: unknown) => {
    try {
      respond(options.refusal(requestId, error));
    } catch {
      respond(options.refusal(requestId, new ApiError(grpc.status.INTERNAL, "the item's status could not be encoded")), false);
    }
  };
  /** An item's answer; one that cannot be encoded becomes INTERNAL (a throw here would go unhandled and stop the process). */
  const answer = (requestId: bigint, message: MessageInitShape<O>) => {
    try {
      respond(message);
    } catch {
      refuse(requestId, new ApiError(grpc.status.INTERNAL, "the item's answer could not be encoded"));
    }
  };
  const finishIfDone = () => {
    if (ended && inflight === 0 && !call.writableEnded && !call.destroyed) call.end();
  };
  call.on("data", (bytes: Buffer) => {
    let requestId = 0n;
    try {
      const item = decodeRequest(options.request, bytes);
      requestId = options.requestIdOf(item);
      if (inflight >= options.inflightMax) throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `at most ${options.inflightMax} ${options.items} in flight per stream`);
      inflight++;
      options
        .handle(item)
        .then(
          (message) => answer(requestId, message),
          (error: unknown) => refuse(requestId, error),
        )
        .finally(() => {
          inflight--;
          finishIfDone();
        });
    } catch (error) {
      refuse(requestId, error);
    }
  });
  call.on("end", () => {
    ended = true;
    finishIfDone();
  });
  call.on("error", () => undefined);
}
