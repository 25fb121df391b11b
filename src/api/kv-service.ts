/**
 * epochd.kv.v1.KvService: the replicated key-value API. Writes go through the
 * cluster group's leader; reads are linearizable through ReadIndex.
 */
import * as grpc from "@grpc/grpc-js";
import { KvService, PutStreamRequestSchema, PutStreamResponseSchema } from "../gen/epochd/kv/v1/kv_pb.ts";
import { encodePut, keyBytesMax, valueBytesMax } from "../kv/kv-command.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { ClusterResult, ClusterStateMachine } from "../node/cluster-state-machine.ts";
import type { GroupId } from "../raft/types.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError, itemStatus } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";
import { serveItemStream } from "./item-stream.ts";

/** Most writes one PutStream may have in flight; more are refused with RESOURCE_EXHAUSTED. */
export const streamInflightMax = 4096;

function checkPut(key: Uint8Array, value: Uint8Array): void {
  if (key.byteLength === 0 || key.byteLength > keyBytesMax) throw new ApiError(grpc.status.INVALID_ARGUMENT, `key must be 1 to ${keyBytesMax} bytes`);
  if (value.byteLength > valueBytesMax) throw new ApiError(grpc.status.INVALID_ARGUMENT, `value must be at most ${valueBytesMax} bytes`);
}

/** Registers KvService on `server`, serving group `groupId` of `driver`. */
export function addKvService(server: grpc.Server, driver: RaftDriver, groupId: GroupId, stateMachine: ClusterStateMachine): void {
  /** Writes through Raft; with `waitMs` the wait is bounded (unary calls), without it the stream's own life bounds it. */
  const put = async (key: Uint8Array, value: Uint8Array, waitMs?: number) => {
    checkPut(key, value);
    // Gets wait for a read index, which the write's apply batch reaches only once written.
    const proposal = driver.propose(groupId, encodePut(key, value), { answerBeforeWrite: true });
    const applied = await (waitMs === undefined ? proposal : withDeadline(proposal, waitMs, "waiting for the write to commit"));
    const result = applied.result as ClusterResult | undefined;
    if (result !== undefined && !result.ok) throw new ApiError(grpc.status.INVALID_ARGUMENT, result.reason);
    return { index: BigInt(applied.index), term: BigInt(applied.term) };
  };

  server.addService(serviceDefinition(KvService), {
    put: unaryHandler(KvService.method.put, (request, call) => put(request.key, request.value, remainingMs(call.getDeadline()))),
    get: unaryHandler(KvService.method.get, async (request, call) => {
      if (request.key.byteLength === 0 || request.key.byteLength > keyBytesMax) throw new ApiError(grpc.status.INVALID_ARGUMENT, `key must be 1 to ${keyBytesMax} bytes`);
      const readIndex = await withDeadline(driver.readIndex(groupId), remainingMs(call.getDeadline()), "confirming the read index");
      const value = await stateMachine.get(request.key);
      return { found: value !== undefined, value: value ?? new Uint8Array(0), readIndex: BigInt(readIndex) };
    }),
    putStream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
      serveItemStream(call, {
        request: PutStreamRequestSchema,
        response: PutStreamResponseSchema,
        items: "writes",
        inflightMax: streamInflightMax,
        requestIdOf: (item) => item.requestId,
        handle: async (item) => ({ requestId: item.requestId, result: await put(item.key, item.value) }),
        refusal: (requestId, error) => ({ requestId, error: itemStatus(error).status }),
      }),
  } satisfies grpc.UntypedServiceImplementation);
}
