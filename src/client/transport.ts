/**
 * What a Channel needs from the cluster, as an interface: ChannelClient implements it over gRPC; a unit
 * test may implement it in memory. Expected outcomes (a lost commit race) are values, not exceptions.
 */
import type { KeyObject } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  Certificate,
  ChannelState,
  CommitConflict,
  CommittedEpoch,
  CreateChannelRequestSchema,
  ListEventsRequestSchema,
  ListEventsResponse,
  SendMessageRequestSchema,
  SubmitCommitRequestSchema,
} from "../gen/epochd/channel/v1/channel_pb.ts";

/** The cluster directory: its id and every homeserver's certificate-signing key and client address. */
export interface ClusterDirectory {
  readonly clusterId: string;
  readonly keys: ReadonlyMap<string, KeyObject>;
  readonly clientAddresses: ReadonlyMap<string, string>;
}

/** The answer to a commit submission. */
export type SubmitOutcome =
  | { readonly kind: "accepted"; readonly epoch: bigint; readonly certificate: Certificate | undefined }
  | { readonly kind: "conflict"; readonly conflict: CommitConflict };

/** The calls a Channel makes. Implementations retry transient failures themselves. */
export interface ChannelTransport {
  /** The cluster directory; `refresh` asks for a fresh copy (a homeserver joined). */
  directory(refresh?: boolean): Promise<ClusterDirectory>;
  createChannel(request: MessageInitShape<typeof CreateChannelRequestSchema>): Promise<ChannelState>;
  /**
   * Submits a commit. Resubmitting the same bytes is safe: if the first try was accepted, the second
   * comes back as a conflict whose winner is that same commit.
   */
  submitCommit(request: MessageInitShape<typeof SubmitCommitRequestSchema>): Promise<SubmitOutcome>;
  /** Sends an application message; returns its sequence in the channel. */
  sendMessage(request: MessageInitShape<typeof SendMessageRequestSchema>): Promise<bigint>;
  listEvents(request: MessageInitShape<typeof ListEventsRequestSchema>): Promise<ListEventsResponse>;
  /** The commit that ended `epoch`, or undefined if there is none (yet). */
  getCommit(channelId: string, epoch: bigint): Promise<CommittedEpoch | undefined>;
}

/** A commit or certificate the client refuses to apply (P3): the channel state is left unchanged. */
export class CertificateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CertificateError";
  }
}

/** The cluster's history disagrees with what this client applied: a fork or a misbehaving server. */
export class ForkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ForkError";
  }
}

/** The commit lost its epoch too many times in a row. */
export class CommitRetriesExhaustedError extends Error {
  constructor(readonly attempts: number) {
    super(`commit lost its epoch ${attempts} times in a row`);
    this.name = "CommitRetriesExhaustedError";
  }
}

/**
 * This device is no longer a member of the channel. With `outcomeUnknown`,
 * the refused call had been tried before without an answer (UNAVAILABLE: for
 * example the homeserver left the channel's group with the call in flight),
 * and that attempt may have been applied before the device was removed: a
 * message sent so may be in the channel.
 */
export class NotAMemberError extends Error {
  constructor(
    channelId: string,
    readonly outcomeUnknown = false,
  ) {
    super(`this device is no longer a member of channel ${JSON.stringify(channelId)}${outcomeUnknown ? " (an earlier attempt went unanswered and may have been applied)" : ""}`);
    this.name = "NotAMemberError";
  }
}
