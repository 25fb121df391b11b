/**
 * An item stream answers every item, in completion order, with its result or its status, over a real
 * gRPC server on 127.0.0.1: also an item whose answer cannot be encoded (INTERNAL), which before went
 * unhandled and would have stopped the process.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ApiError } from "../../src/api/errors.ts";
import { serveItemStream } from "../../src/api/item-stream.ts";
import { SubmitCommitStreamRequestSchema, SubmitCommitStreamResponseSchema, type SubmitCommitStreamResponse } from "../../src/gen/epochd/channel/v1/channel_pb.ts";

const path = "/test.Items/Stream";
const identity = (bytes: Buffer) => bytes;
let server: grpc.Server | undefined;
let client: grpc.Client | undefined;

afterEach(() => {
  client?.close();
  server?.forceShutdown();
});

/** A server whose items answer with epoch = request id; item 2's answer fails to encode, item 3 is refused. */
async function start(): Promise<string> {
  server = new grpc.Server();
  const definition: grpc.ServiceDefinition = {
    Stream: { path, requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
  };
  server.addService(definition, {
    Stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
      serveItemStream(call, {
        request: SubmitCommitStreamRequestSchema,
        response: SubmitCommitStreamResponseSchema,
        items: "items",
        inflightMax: 8,
        requestIdOf: (item) => item.requestId,
        handle: async (item) => {
          if (item.requestId === 3n) throw new ApiError(grpc.status.FAILED_PRECONDITION, "item 3 is refused");
          return { requestId: item.requestId, result: { epoch: item.requestId } };
        },
        refusal: (requestId, error) => ({ requestId, error: { code: error instanceof ApiError ? error.code : grpc.status.INTERNAL, message: String((error as Error).message) } }),
        encode: (message) => {
          if (message.requestId === 2n) throw new Error("cannot encode item 2");
          return undefined;
        },
      }),
  });
  const port = await new Promise<number>((resolve, reject) => server!.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))));
  return `127.0.0.1:${port}`;
}

describe("serveItemStream", () => {
  it("answers every item: a result, a refusal's status, and INTERNAL for an answer that cannot be encoded", async () => {
    const address = await start();
    client = new grpc.Client(address, grpc.credentials.createInsecure());
    const call = client.makeBidiStreamRequest(path, identity, identity, new grpc.Metadata(), { deadline: Date.now() + 10_000 });
    const answers: SubmitCommitStreamResponse[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      call.on("data", (bytes: Buffer) => answers.push(fromBinary(SubmitCommitStreamResponseSchema, bytes)));
      call.on("end", resolve);
      call.on("error", reject);
    });
    for (const requestId of [1n, 2n, 3n, 4n]) call.write(Buffer.from(toBinary(SubmitCommitStreamRequestSchema, create(SubmitCommitStreamRequestSchema, { requestId, commit: {} }))));
    call.end();
    await ended;
    const byId = new Map(answers.map((a) => [a.requestId, a]));
    expect([...byId.keys()].sort()).toEqual([1n, 2n, 3n, 4n]);
    expect(byId.get(1n)?.result?.epoch).toBe(1n);
    expect(byId.get(4n)?.result?.epoch).toBe(4n);
    expect(byId.get(2n)?.error?.code).toBe(grpc.status.INTERNAL);
    expect(byId.get(3n)?.error?.code).toBe(grpc.status.FAILED_PRECONDITION);
  });
});
