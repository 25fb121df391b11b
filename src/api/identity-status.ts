/**
 * The gRPC status of every refusal code the identity and KeyPackage state
 * machines return, in one place.
 */
import * as grpc from "@grpc/grpc-js";
import { ApiError } from "./errors.ts";

/** Refusal codes of src/identity and src/keypackages. */
export type RefusalCode = "invalid" | "unauthenticated" | "permission-denied" | "precondition" | "not-found";

const statuses: Record<RefusalCode, grpc.status> = {
  invalid: grpc.status.INVALID_ARGUMENT,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  "permission-denied": grpc.status.PERMISSION_DENIED,
  precondition: grpc.status.FAILED_PRECONDITION,
  "not-found": grpc.status.NOT_FOUND,
};

/** The ApiError for a refusal. */
export function refusalError(refusal: { readonly code: RefusalCode; readonly reason: string }): ApiError {
  return new ApiError(statuses[refusal.code], refusal.reason);
}
