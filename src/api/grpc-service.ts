/**
 * The bridge between protobuf-es service descriptors and grpc-js: service
 * definitions for servers, and a typed client for the CLI, tests and SDK.
 * Messages travel as raw bytes and are decoded in the handler wrapper, so
 * malformed input becomes INVALID_ARGUMENT instead of a grpc-js internal error.
 */
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import { ApiError, toServiceError } from "./errors.ts";

const identity = (bytes: Buffer): Buffer => bytes;

/**
 * Channel options that retry a failed connection after `minMs`, growing to
 * `maxMs`, instead of grpc-js's 1 s growing to 2 minutes (every call fails
 * while a channel waits): for clients of homeservers that restart or fail over.
 */
export function reconnectBackoff(minMs: number, maxMs: number): grpc.ChannelOptions {
  return { "grpc.initial_reconnect_backoff_ms": minMs, "grpc.min_reconnect_backoff_ms": minMs, "grpc.max_reconnect_backoff_ms": maxMs };
}

/** The full gRPC path of a method, like `/epochd.kv.v1.KvService/Put`. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** A grpc-js service definition for `service`, carrying raw bytes. */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: methodPath(method),
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    };
  }
  return definition;
}

/** Decodes request bytes, or throws INVALID_ARGUMENT. */
export function decodeRequest<T extends DescMessage>(schema: T, bytes: Buffer): MessageShape<T> {
  try {
    return fromBinary(schema, bytes);
  } catch (error) {
    throw new ApiError(grpc.status.INVALID_ARGUMENT, `malformed ${schema.typeName}: ${(error as Error).message}`);
  }
}

/** Encodes a message for the wire. */
export function encodeMessage<T extends DescMessage>(schema: T, message: MessageInitShape<T>): Buffer {
  const bytes = toBinary(schema, create(schema, message));
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A unary handler over decoded messages: errors become gRPC statuses, never crashes. */
export function unaryHandler<I extends DescMessage, O extends DescMessage>(
  method: { input: I; output: O },
  handle: (request: MessageShape<I>, call: grpc.ServerUnaryCall<Buffer, Buffer>) => Promise<MessageInitShape<O>>,
): grpc.handleUnaryCall<Buffer, Buffer> {
  return (call, callback) => {
    let request: MessageShape<I>;
    try {
      request = decodeRequest(method.input, call.request);
    } catch (error) {
      callback(toServiceError(error));
      return;
    }
    handle(request, call).then(
      (response) => callback(null, encodeMessage(method.output, response)),
      (error: unknown) => callback(toServiceError(error)),
    );
  };
}

type UnaryMethodsOf<T extends GenServiceMethods> = {
  [K in keyof T as T[K]["methodKind"] extends "unary" ? K : never]: T[K];
};

/** Per-call options of a {@link UnaryClient}: a deadline, and metadata such as a bearer token. */
export interface UnaryCallOptions {
  readonly deadlineMs?: number;
  readonly metadata?: grpc.Metadata;
}

/** A promise-based unary client for a generated service. */
export type UnaryClient<T extends GenServiceMethods> = {
  [K in keyof UnaryMethodsOf<T>]: (
    request: MessageInitShape<T[K]["input"]>,
    options?: UnaryCallOptions,
  ) => Promise<MessageShape<T[K]["output"]>>;
} & { close(): void; channel: grpc.Client };

/** Opens a client for the unary methods of `service` at `address`. */
export function unaryClient<T extends GenServiceMethods>(
  service: GenService<T>,
  address: string,
  credentials: grpc.ChannelCredentials,
  channelOptions: grpc.ChannelOptions = {},
): UnaryClient<T> {
  const channel = new grpc.Client(address, credentials, channelOptions);
  const client: Record<string, unknown> = { close: () => channel.close(), channel };
  for (const method of service.methods) {
    if (method.methodKind !== "unary") continue;
    client[method.localName] = (request: MessageInitShape<DescMessage>, options: UnaryCallOptions = {}) =>
      new Promise((resolve, reject) => {
        const deadline = Date.now() + (options.deadlineMs ?? 10_000);
        channel.makeUnaryRequest(
          methodPath(method),
          identity,
          identity,
          encodeMessage(method.input, request),
          options.metadata?.clone() ?? new grpc.Metadata(),
          { deadline },
          (error, response) => {
            if (error !== null || response === undefined) reject(error ?? new Error("empty response"));
            else resolve(fromBinary(method.output, response));
          },
        );
      });
  }
  return client as UnaryClient<T>;
}
