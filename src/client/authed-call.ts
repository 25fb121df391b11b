/**
 * Unary calls that carry call metadata (the bearer token), for the SDK's
 * authenticated services. Messages travel as protobuf-es encoded bytes, like
 * src/api/grpc-service.ts's unaryClient, which sends no metadata.
 */
import { fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { encodeMessage } from "../api/grpc-service.ts";

const identity = (bytes: Buffer): Buffer => bytes;

/** A unary method descriptor of a generated service. */
export interface UnaryMethod<I extends DescMessage, O extends DescMessage> {
  readonly input: I;
  readonly output: O;
  readonly name: string;
  readonly parent: { readonly typeName: string };
}

/** Calls `method` on `channel` with `metadata`; rejects with the grpc ServiceError on failure. */
export function callUnary<I extends DescMessage, O extends DescMessage>(
  channel: grpc.Client,
  method: UnaryMethod<I, O>,
  request: MessageInitShape<I>,
  metadata: grpc.Metadata,
  deadlineMs: number,
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    channel.makeUnaryRequest(
      `/${method.parent.typeName}/${method.name}`,
      identity,
      identity,
      encodeMessage(method.input, request),
      metadata,
      { deadline: Date.now() + deadlineMs },
      (error, response) => {
        if (error !== null || response === undefined) reject(error ?? new Error("empty response"));
        else {
          try {
            resolve(fromBinary(method.output, response));
          } catch (decodeError) {
            reject(decodeError);
          }
        }
      },
    );
  });
}

/** Whether `error` is a gRPC error with status `code`. */
export function hasStatus(error: unknown, code: grpc.status): boolean {
  return error instanceof Error && (error as Partial<grpc.ServiceError>).code === code;
}
