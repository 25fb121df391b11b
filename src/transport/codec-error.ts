/** The error of the peer codec (codec.ts, protowire.ts): its own file, so both can throw it. */

/** Why a peer's input was refused. Stable strings: they appear in logs and counters. */
export type CodecErrorCode =
  | "malformed-protobuf"
  | "unknown-message-type"
  | "unknown-entry-type"
  | "bad-id"
  | "number-out-of-range"
  | "too-many-messages"
  | "too-many-entries"
  | "too-many-members"
  | "entry-too-large"
  | "context-too-large"
  | "entries-not-contiguous"
  | "entry-terms-out-of-order"
  | "snapshot-misplaced"
  | "missing-field"
  | "too-many-notices"
  | "notice-too-large";

/** A peer sent bytes that are not a valid Raft message. Expected input, not a bug: drop it and log. */
export class CodecError extends Error {
  constructor(
    readonly code: CodecErrorCode,
    message: string,
    options?: { cause: unknown },
  ) {
    super(`${code}: ${message}`, options);
    this.name = "CodecError";
  }
}
