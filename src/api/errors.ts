/**
 * Maps every error a handler can meet to a canonical gRPC status, in one place.
 * Expected rejections keep their meaning (FAILED_PRECONDITION with a leader
 * hint, RESOURCE_EXHAUSTED, ...); anything else is INTERNAL, never a crash.
 */
import * as grpc from "@grpc/grpc-js";
import { NotLeaderError, OutcomeUnknownError, ProposalDroppedError, ProposalRefusedError, UnknownGroupError } from "../multiraft/errors.ts";

/** Metadata key naming the current leader's homeserver id on a not-leader answer. */
export const leaderIdMetadataKey = "epochd-leader-id";
/** Metadata key with the leader's client address (host:port), when known. */
export const leaderAddressMetadataKey = "epochd-leader-address";

/** An error that is already a gRPC status. */
export class ApiError extends Error {
  constructor(readonly code: grpc.status, message: string, readonly metadata: grpc.Metadata = new grpc.Metadata()) {
    super(message);
    this.name = "ApiError";
  }
}

/** The gRPC status for `error`. */
export function toServiceError(error: unknown): Partial<grpc.ServiceError> {
  if (error instanceof ApiError) return { code: error.code, details: error.message, metadata: error.metadata };
  if (error instanceof NotLeaderError) {
    if (error.leader === "") return { code: grpc.status.UNAVAILABLE, details: error.message };
    const metadata = new grpc.Metadata();
    metadata.set(leaderIdMetadataKey, error.leader);
    if (error.leaderAddress !== "") metadata.set(leaderAddressMetadataKey, error.leaderAddress);
    return { code: grpc.status.FAILED_PRECONDITION, details: error.message, metadata };
  }
  if (error instanceof ProposalRefusedError) {
    // Too much uncommitted data is back-pressure; a hand-over or a membership change in flight passes.
    return { code: error.reason === "overloaded" ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.UNAVAILABLE, details: error.message };
  }
  if (error instanceof ProposalDroppedError || error instanceof OutcomeUnknownError) return { code: grpc.status.UNAVAILABLE, details: error.message };
  if (error instanceof UnknownGroupError) return { code: grpc.status.NOT_FOUND, details: error.message };
  if (error instanceof DeadlineError) return { code: grpc.status.DEADLINE_EXCEEDED, details: error.message };
  return { code: grpc.status.INTERNAL, details: error instanceof Error ? error.message : String(error) };
}

/** The status of one item of a stream: a unary call's code and message, and the leader hint its metadata would carry. */
export interface ItemStatusFields {
  readonly code: number;
  readonly message: string;
  readonly leaderId: string;
  readonly leaderAddress: string;
}

/** The status of one failed item of a stream, as {@link toServiceError} maps `error`, with the metadata it comes with. */
export function itemStatus(error: unknown): { readonly status: ItemStatusFields; readonly metadata: grpc.Metadata | undefined } {
  const serviceError = toServiceError(error);
  const metadata = serviceError.metadata;
  const first = (key: string) => String(metadata?.get(key)[0] ?? "");
  return {
    status: { code: serviceError.code ?? grpc.status.INTERNAL, message: serviceError.details ?? "", leaderId: first(leaderIdMetadataKey), leaderAddress: first(leaderAddressMetadataKey) },
    metadata,
  };
}

/** The caller's deadline passed before the work finished. */
export class DeadlineError extends Error {
  constructor(what: string) {
    super(`deadline exceeded while ${what}`);
    this.name = "DeadlineError";
  }
}
