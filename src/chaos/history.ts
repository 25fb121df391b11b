/**
 * The history of a chaos run: every client operation with its invocation and completion (ok, fail or
 * unknown) and times, plus what each device received and what every homeserver holds at the end. Plain
 * JSON-able data (numbers, strings) so the checker is a pure function of it and a report can carry it.
 */

/** How an operation ended: `unknown` means no answer (timeout, connection lost): it may have taken effect. */
export type Outcome = "pending" | "ok" | "fail" | "unknown";

/** A certificate as the client received it. */
export interface CertificateSummary {
  readonly epoch: number;
  readonly commitHash: string;
  readonly logIndex: number;
  readonly signers: readonly string[];
  readonly voters: readonly string[];
}

/** One client operation. Times are milliseconds since the run started. */
export interface HistoryOp {
  readonly id: number;
  /** The device (or reader) that issued it; one operation at a time per process and channel. */
  readonly process: string;
  /** commit: SubmitCommit; message: SendMessage; read: GetChannel (the channel's current epoch); list: ListEvents. */
  readonly kind: "commit" | "message" | "read" | "list";
  readonly channel: string;
  readonly invokeMs: number;
  endMs?: number;
  outcome: Outcome;
  /** commit and message: the epoch it was built on / encrypted in; read: the epoch returned. */
  epoch?: number;
  /** commit: hex SHA-256 of the MLSMessage bytes; message: of the message. */
  hash?: string;
  /** ok commit: its certificate. */
  certificate?: CertificateSummary;
  /** fail commit with a conflict: the commit that won the epoch, when the answer named one. */
  winner?: { readonly epoch: number; readonly hash: string };
  /** ok message: its channel sequence. */
  sequence?: number;
  /** list: the commits the page returned. */
  commitsSeen?: ReadonlyArray<{ readonly epoch: number; readonly hash: string; readonly sequence: number }>;
  /** fail / unknown: why. */
  error?: string;
}

/** What one device's channel handle received from its syncs, in the order received. */
export interface Delivery {
  readonly device: string;
  readonly channel: string;
  /** The epoch the handle joined at (its first epoch as a member). */
  readonly joinedAtEpoch: number;
  readonly items: Array<{ readonly sequence: number; readonly kind: string; readonly epoch: number; readonly text?: string }>;
  /** True when the handle was still a member at the end and its last sync succeeded after the heal. */
  caughtUp: boolean;
}

/** One event as a homeserver holds it at the end of the run. */
export interface FinalEvent {
  readonly sequence: number;
  readonly kind: "commit" | "proposal" | "message";
  readonly epoch: number;
  readonly hash: string;
}

/** One homeserver's final view of the channels, or why it could not be read. */
export type HomeserverFinal =
  | { readonly ok: true; readonly channels: Readonly<Record<string, { readonly epoch: number; readonly events: readonly FinalEvent[] }>> }
  | { readonly ok: false; readonly error: string };

/** Everything the checker looks at. */
export interface RunHistory {
  readonly ops: readonly HistoryOp[];
  readonly deliveries: readonly Delivery[];
  /** Homeserver id -> its final state. */
  readonly final: Readonly<Record<string, HomeserverFinal>>;
  /** The text of every acknowledged message, by channel and sequence (for the delivered-content check). */
  readonly sentTexts: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

/** Collects operations as they happen; times are relative to `startedAtMs`. */
export class HistoryRecorder {
  readonly ops: HistoryOp[] = [];
  readonly deliveries: Delivery[] = [];
  readonly sentTexts: Record<string, Record<string, string>> = {};
  private nextId = 0;

  constructor(readonly startedAtMs: number = Date.now()) {}

  /** Milliseconds since the run started. */
  now(): number {
    return Date.now() - this.startedAtMs;
  }

  /** Records an invocation; complete it with `ok`, `fail` or `unknown`. */
  invoke(process: string, kind: HistoryOp["kind"], channel: string, fields: Partial<Pick<HistoryOp, "epoch" | "hash">> = {}): HistoryOp {
    const op: HistoryOp = { id: this.nextId++, process, kind, channel, invokeMs: this.now(), outcome: "pending", ...fields };
    this.ops.push(op);
    return op;
  }

  /** Completes `op` with `outcome` and extra fields. */
  complete(op: HistoryOp, outcome: Exclude<Outcome, "pending">, fields: Partial<HistoryOp> = {}): void {
    Object.assign(op, fields);
    op.outcome = outcome;
    op.endMs = this.now();
  }

  /** Remembers an acknowledged message's text. */
  sent(channel: string, sequence: number, text: string): void {
    (this.sentTexts[channel] ??= {})[String(sequence)] = text;
  }
}
