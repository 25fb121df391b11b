/**
 * gRPC write targets for the load generator, over raw-bytes grpc-js calls:
 * unary puts (epochd's KvService/Put and etcd's KV/Put share the request
 * layout {bytes key = 1; bytes value = 2;}) and epochd's PutStream, with many
 * writes in flight on one bidirectional stream matched by request_id.
 */
import * as grpc from "@grpc/grpc-js";
import { fromBinary } from "@bufbuild/protobuf";
import { PutStreamResponseSchema } from "../../src/gen/epochd/kv/v1/kv_pb.ts";
import type { WriteTarget } from "./load.ts";
import { decodeFields, encodeFields } from "./proto-wire.ts";

const identity = (bytes: Buffer): Buffer => bytes;

/** gRPC paths of the put methods the benchmark calls. */
export const epochdPutPath = "/epochd.kv.v1.KvService/Put";
export const epochdPutStreamPath = "/epochd.kv.v1.KvService/PutStream";
export const etcdPutPath = "/etcdserverpb.KV/Put";

/** Error of one write: its gRPC code and, for FAILED_PRECONDITION, the leader hint. */
export class WriteError extends Error {
  constructor(readonly code: number, message: string, readonly leaderAddress = "") {
    super(`${grpc.status[code] ?? code}: ${message}`);
    this.name = "WriteError";
  }
}

/** Encodes a put request {key = 1, value = 2}. */
export function encodePutRequest(key: Uint8Array, value: Uint8Array): Buffer {
  return encodeFields([{ field: 1, bytes: key }, { field: 2, bytes: value }]);
}

/** A target issuing one unary call per write on `channel`, each with a deadline of `deadlineMs`. */
export function unaryPutTarget(channel: grpc.Client, path: string, deadlineMs = 10_000): WriteTarget {
  return {
    write(key, value, done) {
      channel.makeUnaryRequest(path, identity, identity, encodePutRequest(key, value), new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (error) => {
        if (error === null) done(null);
        else done(new WriteError(error.code, error.details, String(error.metadata?.get("epochd-leader-address")[0] ?? "")));
      });
    },
  };
}

/** A PutStream target: every write is a message on one stream; `close` ends the stream. */
export interface StreamTarget extends WriteTarget {
  close(): void;
}

/** Opens one PutStream on `channel`. Writes pending when the stream fails are answered with its error. */
export function putStreamTarget(channel: grpc.Client): StreamTarget {
  const call = channel.makeBidiStreamRequest(epochdPutStreamPath, identity, identity, new grpc.Metadata());
  const pending = new Map<number, (error: Error | null) => void>();
  let nextRequestId = 1;
  let failure: Error | undefined;
  call.on("data", (bytes: Buffer) => {
    const fields = decodeFields(bytes);
    const requestId = fields.get(1);
    const done = typeof requestId === "number" ? pending.get(requestId) : undefined;
    if (done === undefined || typeof requestId !== "number") return;
    pending.delete(requestId);
    if (!fields.has(3)) {
      done(null);
      return;
    }
    const status = fromBinary(PutStreamResponseSchema, bytes).error;
    done(new WriteError(status?.code ?? grpc.status.UNKNOWN, status?.message ?? "", status?.leaderAddress ?? ""));
  });
  const fail = (error: Error) => {
    failure ??= error;
    const callbacks = [...pending.values()];
    pending.clear();
    for (const done of callbacks) done(failure);
  };
  call.on("error", (error: grpc.ServiceError) => fail(new WriteError(error.code, error.details)));
  call.on("end", () => fail(new WriteError(grpc.status.UNAVAILABLE, "stream ended")));
  return {
    write(key, value, done) {
      if (failure !== undefined) {
        setImmediate(() => done(failure ?? null));
        return;
      }
      const requestId = nextRequestId++;
      pending.set(requestId, done);
      call.write(encodeFields([{ field: 1, varint: requestId }, { field: 2, bytes: key }, { field: 3, bytes: value }]));
    },
    close() {
      call.end();
      call.cancel();
    },
  };
}
