/**
 * Why a DIR or identity command was refused. A value, not an exception: the
 * apply returns it (identically on every homeserver) and the API edge maps it
 * to a gRPC status in one place (src/api/identity-service.ts).
 */

/** The kinds of refusal, each with one gRPC status. */
export type IdentityRejectionCode = "invalid" | "unauthenticated" | "permission-denied" | "precondition";

/** A refused record or command. */
export interface IdentityRejection {
  readonly ok: false;
  readonly code: IdentityRejectionCode;
  readonly reason: string;
}

/** Builds a rejection. */
export function refuse(code: IdentityRejectionCode, reason: string): IdentityRejection {
  return { ok: false, code, reason };
}
