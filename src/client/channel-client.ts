/**
 * ChannelClient: one device's connection to a cluster through one homeserver's client API. Every call but
 * the directory is authenticated as the device: a DeviceSession per homeserver address (a token is valid
 * only where it was issued) logs in with the device's DIR key, which `publishIdentity` publishes first. It
 * follows leader hints (FAILED_PRECONDITION with epochd-leader-address), retries UNAVAILABLE and
 * RESOURCE_EXHAUSTED with a bounded backoff (moving to another homeserver of the directory when one stays
 * unreachable), turns a lost commit race (FAILED_PRECONDITION with epochd-commit-conflict-bin) into a
 * value, and a refusal as a non-member (PERMISSION_DENIED) into NotAMemberError.
 */
import { fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  ChannelService,
  CommitConflictSchema,
  type ChannelState,
  type CommittedEpoch,
  type CreateChannelRequestSchema,
  type ListEventsRequestSchema,
  type ListEventsResponse,
  type SendMessageRequestSchema,
  type SubmitCommitRequestSchema,
  type SubmitProposalRequestSchema,
  type CommitConflict,
} from "../gen/epochd/channel/v1/channel_pb.ts";
import { IdentityService, type DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { callUnary, type UnaryMethod } from "./authed-call.ts";
import { importEd25519PublicKey } from "./certificate.ts";
import { generateInboxKeyPair, signIdentityRecord, type DeviceSigner } from "./identity-record.ts";
import { DeviceSession } from "./session.ts";
import { NotAMemberError, type ChannelTransport, type ClusterDirectory, type SubmitOutcome } from "./transport.ts";

/** Trailing metadata key carrying a binary CommitConflict on a lost commit race. */
export const commitConflictMetadataKey = "epochd-commit-conflict-bin";
/** Trailing metadata key naming the leader's homeserver id on a follower's answer. */
export const leaderIdMetadataKey = "epochd-leader-id";
/** Trailing metadata key with the leader's client address on a follower's answer. */
export const leaderAddressMetadataKey = "epochd-leader-address";

/** How to reach the cluster, and as which device. */
export interface ChannelClientOptions {
  /** The device every call is authenticated as (its DIR must be published: {@link ChannelClient.publishIdentity}). */
  readonly device: DeviceSigner;
  /** host:port of a homeserver's client API. */
  readonly address: string;
  /** The cluster CA certificate (PEM) for TLS, or "insecure" for plaintext. */
  readonly tls: { readonly caPem: Buffer } | "insecure";
  /** TLS server name to check the certificate against when it differs from the address's host. */
  readonly tlsServerName?: string;
  /** Per-call deadline. */
  readonly callDeadlineMs?: number;
  /** Retries of one call on UNAVAILABLE / RESOURCE_EXHAUSTED / leader hops, in total. */
  readonly attemptsMax?: number;
  /** First backoff delay; doubles per retry up to backoffMaxMs. */
  readonly backoffStartMs?: number;
  readonly backoffMaxMs?: number;
}

function metadataString(error: grpc.ServiceError, key: string): string | undefined {
  const value = error.metadata?.get(key)[0];
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : value.toString("utf8");
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as Partial<grpc.ServiceError>).code === "number";
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What publishIdentity states besides the device's id, homeserver and key. */
export interface PublishIdentityOptions {
  /** user@homeserver; default: the device id (a user of its own; devices of one user must link each other). */
  readonly userName?: string;
  /** Raw X25519 key for direct inbox messages; default: a fresh one (the private half is discarded). */
  readonly inboxPublicKey?: Uint8Array;
}

/** The answer to a standalone proposal. */
export type ProposalOutcome = { readonly kind: "accepted"; readonly sequence: bigint } | { readonly kind: "conflict"; readonly conflict: CommitConflict };

/** A device's authenticated gRPC ChannelTransport that follows leader hints and retries transient failures. */
export class ChannelClient implements ChannelTransport {
  private readonly sessions = new Map<string, DeviceSession>();
  private current: string;
  private cachedDirectory: ClusterDirectory | undefined;
  private readonly callDeadlineMs: number;
  private readonly attemptsMax: number;
  private readonly backoffStartMs: number;
  private readonly backoffMaxMs: number;
  /** Counters of what the client had to do: leader hints followed, transient retries, homeserver switches. */
  readonly stats = { leaderHops: 0, transientRetries: 0, addressSwitches: 0 };

  constructor(private readonly options: ChannelClientOptions) {
    this.current = options.address;
    this.callDeadlineMs = options.callDeadlineMs ?? 10_000;
    this.attemptsMax = options.attemptsMax ?? 12;
    this.backoffStartMs = options.backoffStartMs ?? 25;
    this.backoffMaxMs = options.backoffMaxMs ?? 1_000;
  }

  /** The address requests currently go to (the last known leader). */
  address(): string {
    return this.current;
  }

  /** A client for `options.device` whose first identity record is published (see {@link publishIdentity}). */
  static async registered(options: ChannelClientOptions, identity: PublishIdentityOptions = {}): Promise<ChannelClient> {
    const client = new ChannelClient(options);
    try {
      await client.publishIdentity(identity);
      return client;
    } catch (error) {
      client.close();
      throw error;
    }
  }

  /** The device this client acts for. */
  get deviceId(): string {
    return this.options.device.id;
  }

  /** The device's session (connection and token) with the homeserver at `address`, made on first use. */
  private session(address: string): DeviceSession {
    let session = this.sessions.get(address);
    if (session === undefined) {
      const device = this.options.device;
      const credentials = this.options.tls === "insecure" ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(this.options.tls.caPem);
      const channelOptions = this.options.tlsServerName === undefined ? {} : { "grpc.ssl_target_name_override": this.options.tlsServerName };
      session = new DeviceSession({ deviceId: device.id, sign: (message) => device.sign(message), address, credentials, channelOptions, callDeadlineMs: this.callDeadlineMs });
      this.sessions.set(address, session);
    }
    return session;
  }

  /** Calls `method` at `address` as the device (logging in there first when needed). */
  private authed<I extends DescMessage, O extends DescMessage>(address: string, method: UnaryMethod<I, O>, request: MessageInitShape<I>): Promise<MessageShape<O>> {
    const session = this.session(address);
    return session.call((metadata) => callUnary(session.channel, method, request, metadata, this.callDeadlineMs));
  }

  /** Another known client address than the current one, to try when the current one stays unreachable. */
  private nextAddress(): string {
    const known = [...new Set([this.options.address, ...(this.cachedDirectory?.clientAddresses.values() ?? [])])].filter((a) => a !== "");
    const at = known.indexOf(this.current);
    return known[(at + 1) % known.length] ?? this.current;
  }

  /** Where a follower's answer says the leader is, or undefined if it is not a leader hint. */
  private leaderHint(error: grpc.ServiceError): string | undefined {
    if (error.code !== grpc.status.FAILED_PRECONDITION) return undefined;
    const address = metadataString(error, leaderAddressMetadataKey);
    if (address !== undefined && address !== "") return address;
    const id = metadataString(error, leaderIdMetadataKey);
    return id === undefined ? undefined : this.cachedDirectory?.clientAddresses.get(id);
  }

  /**
   * Runs `call` against the current address: on a leader hint, moves there and retries at once; on
   * UNAVAILABLE, RESOURCE_EXHAUSTED (and DEADLINE_EXCEEDED when `idempotent`), backs off and retries,
   * switching homeserver after two UNAVAILABLE (or, when `idempotent`, DEADLINE_EXCEEDED) in a row.
   * Bounded by attemptsMax.
   */
  private async call<T>(call: (address: string) => Promise<T>, idempotent: boolean, seen?: { unanswered: number }): Promise<T> {
    let delayMs = this.backoffStartMs;
    let failuresHere = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await call(this.current);
      } catch (error) {
        if (!isServiceError(error) || attempt >= this.attemptsMax) throw error;
        const hint = this.leaderHint(error);
        if (hint !== undefined && hint !== this.current) {
          this.current = hint;
          this.stats.leaderHops++;
          failuresHere = 0;
          continue;
        }
        const transient = error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.RESOURCE_EXHAUSTED || (idempotent && error.code === grpc.status.DEADLINE_EXCEEDED);
        if (!transient && hint === undefined) throw error;
        failuresHere++;
        this.stats.transientRetries++;
        // Unreachable, or (for a call that may be repeated) not answered in time: a homeserver cut off
        // from its cluster's quorum cannot confirm a read, so another one is tried.
        const unanswered = error.code === grpc.status.UNAVAILABLE || (idempotent && error.code === grpc.status.DEADLINE_EXCEEDED);
        if (unanswered && seen !== undefined) seen.unanswered++;
        if (unanswered && failuresHere >= 2) {
          this.current = this.nextAddress();
          this.stats.addressSwitches++;
          failuresHere = 0;
        }
        await sleep(delayMs * (0.5 + Math.random()));
        delayMs = Math.min(this.backoffMaxMs, delayMs * 2);
      }
    }
  }

  /** The cluster directory (cached; `refresh` fetches it again). */
  async directory(refresh = false): Promise<ClusterDirectory> {
    if (this.cachedDirectory !== undefined && !refresh) return this.cachedDirectory;
    const response = await this.call((address) => callUnary(this.session(address).channel, ChannelService.method.listHomeservers, {}, new grpc.Metadata(), this.callDeadlineMs), true);
    const keys = new Map(response.homeservers.map((hs) => [hs.homeserverId, importEd25519PublicKey(hs.signingKey)] as const));
    const clientAddresses = new Map(response.homeservers.map((hs) => [hs.homeserverId, hs.clientAddress] as const));
    this.cachedDirectory = { clusterId: response.clusterId, keys, clientAddresses };
    return this.cachedDirectory;
  }

  /**
   * Publishes the device's first identity record (sequence 1) at its own homeserver, which sponsors it,
   * so that the device can log in anywhere in the cluster. Returns the sponsored record.
   */
  async publishIdentity(options: PublishIdentityOptions = {}): Promise<DeviceIdentityRecord> {
    const device = this.options.device;
    const directory = await this.directory();
    const own = directory.clientAddresses.get(device.homeserver);
    const address = own === undefined || own === "" ? this.current : own;
    const record = await signIdentityRecord(device, {
      clusterId: directory.clusterId,
      userName: options.userName ?? device.id,
      inboxPublicKey: options.inboxPublicKey ?? generateInboxKeyPair().publicKeyRaw,
      sequence: 1n,
      createdAtMs: Date.now(),
    });
    const answer = await this.call(() => callUnary(this.session(address).channel, IdentityService.method.publishIdentity, { records: [record] }, new grpc.Metadata(), this.callDeadlineMs), false);
    const sponsored = answer.records[0];
    if (sponsored === undefined || sponsored.sponsorSignature.length === 0) throw new Error("PublishIdentity answered without the sponsored record");
    return sponsored;
  }

  /**
   * Runs a call about `channelId`; a refusal as a non-member becomes
   * NotAMemberError, which says whether an earlier attempt of a call that
   * changes something went unanswered (and so may have been applied).
   */
  private async member<T>(channelId: string, call: (address: string) => Promise<T>, idempotent: boolean): Promise<T> {
    const seen = { unanswered: 0 };
    try {
      return await this.call(call, idempotent, seen);
    } catch (error) {
      if (isServiceError(error) && error.code === grpc.status.PERMISSION_DENIED) throw new NotAMemberError(channelId, !idempotent && seen.unanswered > 0);
      throw error;
    }
  }

  async createChannel(request: MessageInitShape<typeof CreateChannelRequestSchema>): Promise<ChannelState> {
    const response = await this.call((address) => this.authed(address, ChannelService.method.createChannel, request), false);
    if (response.channel === undefined) throw new Error("CreateChannel answered without a channel state");
    return response.channel;
  }

  async submitCommit(request: MessageInitShape<typeof SubmitCommitRequestSchema>): Promise<SubmitOutcome> {
    try {
      const response = await this.member(request.channelId ?? "", (address) => this.authed(address, ChannelService.method.submitCommit, request), true);
      return { kind: "accepted", epoch: response.epoch, certificate: response.certificate };
    } catch (error) {
      const raw = isServiceError(error) && error.code === grpc.status.FAILED_PRECONDITION ? error.metadata?.get(commitConflictMetadataKey)[0] : undefined;
      if (raw === undefined || typeof raw === "string") throw error;
      return { kind: "conflict", conflict: fromBinary(CommitConflictSchema, raw) };
    }
  }

  /**
   * Submits a standalone proposal (e.g. a self-Remove); a proposal built on a past epoch comes back as a
   * conflict (FAILED_PRECONDITION with the channel's current epoch), not an exception.
   */
  async submitProposal(request: MessageInitShape<typeof SubmitProposalRequestSchema>): Promise<ProposalOutcome> {
    try {
      const response = await this.member(request.channelId ?? "", (address) => this.authed(address, ChannelService.method.submitProposal, request), false);
      return { kind: "accepted", sequence: response.sequence };
    } catch (error) {
      const raw = isServiceError(error) && error.code === grpc.status.FAILED_PRECONDITION ? error.metadata?.get(commitConflictMetadataKey)[0] : undefined;
      if (raw === undefined || typeof raw === "string") throw error;
      return { kind: "conflict", conflict: fromBinary(CommitConflictSchema, raw) };
    }
  }

  async sendMessage(request: MessageInitShape<typeof SendMessageRequestSchema>): Promise<bigint> {
    const response = await this.member(request.channelId ?? "", (address) => this.authed(address, ChannelService.method.sendMessage, request), false);
    return response.sequence;
  }

  listEvents(request: MessageInitShape<typeof ListEventsRequestSchema>): Promise<ListEventsResponse> {
    return this.member(request.channelId ?? "", (address) => this.authed(address, ChannelService.method.listEvents, request), true);
  }

  async getCommit(channelId: string, epoch: bigint): Promise<CommittedEpoch | undefined> {
    try {
      const response = await this.member(channelId, (address) => this.authed(address, ChannelService.method.getCommit, { channelId, epoch }), true);
      return response.commit;
    } catch (error) {
      if (isServiceError(error) && error.code === grpc.status.NOT_FOUND) return undefined;
      throw error;
    }
  }

  /** Closes every connection. */
  close(): void {
    for (const session of this.sessions.values()) session.close();
    this.sessions.clear();
  }
}
