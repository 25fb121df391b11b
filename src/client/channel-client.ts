/**
 * ChannelClient: the SDK's connection to a cluster through one homeserver's client API. It follows leader
 * hints (FAILED_PRECONDITION with epochd-leader-address), retries UNAVAILABLE and RESOURCE_EXHAUSTED with
 * a bounded backoff (moving to another homeserver of the directory when one stays unreachable), and turns a
 * lost commit race (FAILED_PRECONDITION with epochd-commit-conflict-bin) into a value.
 */
import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { unaryClient, type UnaryClient } from "../api/grpc-service.ts";
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
} from "../gen/epochd/channel/v1/channel_pb.ts";
import { importEd25519PublicKey } from "./certificate.ts";
import type { ChannelTransport, ClusterDirectory, SubmitOutcome } from "./transport.ts";

/** Trailing metadata key carrying a binary CommitConflict on a lost commit race. */
export const commitConflictMetadataKey = "epochd-commit-conflict-bin";
/** Trailing metadata key naming the leader's homeserver id on a follower's answer. */
export const leaderIdMetadataKey = "epochd-leader-id";
/** Trailing metadata key with the leader's client address on a follower's answer. */
export const leaderAddressMetadataKey = "epochd-leader-address";

type ChannelRpc = UnaryClient<(typeof ChannelService)["method"]>;

/** How to reach the cluster. */
export interface ChannelClientOptions {
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

/** A gRPC ChannelTransport that follows leader hints and retries transient failures. */
export class ChannelClient implements ChannelTransport {
  private readonly rpcs = new Map<string, ChannelRpc>();
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

  private rpc(address: string): ChannelRpc {
    let rpc = this.rpcs.get(address);
    if (rpc === undefined) {
      const credentials = this.options.tls === "insecure" ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(this.options.tls.caPem);
      const channelOptions = this.options.tlsServerName === undefined ? {} : { "grpc.ssl_target_name_override": this.options.tlsServerName };
      rpc = unaryClient(ChannelService, address, credentials, channelOptions);
      this.rpcs.set(address, rpc);
    }
    return rpc;
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
   * switching homeserver after two failures in a row. Bounded by attemptsMax.
   */
  private async call<T>(call: (rpc: ChannelRpc) => Promise<T>, idempotent: boolean): Promise<T> {
    let delayMs = this.backoffStartMs;
    let failuresHere = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await call(this.rpc(this.current));
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
        if (error.code === grpc.status.UNAVAILABLE && failuresHere >= 2) {
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
    const response = await this.call((rpc) => rpc.listHomeservers({}, { deadlineMs: this.callDeadlineMs }), true);
    const keys = new Map(response.homeservers.map((hs) => [hs.homeserverId, importEd25519PublicKey(hs.signingKey)] as const));
    const clientAddresses = new Map(response.homeservers.map((hs) => [hs.homeserverId, hs.clientAddress] as const));
    this.cachedDirectory = { clusterId: response.clusterId, keys, clientAddresses };
    return this.cachedDirectory;
  }

  async createChannel(request: MessageInitShape<typeof CreateChannelRequestSchema>): Promise<ChannelState> {
    const response = await this.call((rpc) => rpc.createChannel(request, { deadlineMs: this.callDeadlineMs }), false);
    if (response.channel === undefined) throw new Error("CreateChannel answered without a channel state");
    return response.channel;
  }

  async submitCommit(request: MessageInitShape<typeof SubmitCommitRequestSchema>): Promise<SubmitOutcome> {
    try {
      const response = await this.call((rpc) => rpc.submitCommit(request, { deadlineMs: this.callDeadlineMs }), true);
      return { kind: "accepted", epoch: response.epoch, certificate: response.certificate };
    } catch (error) {
      const raw = isServiceError(error) && error.code === grpc.status.FAILED_PRECONDITION ? error.metadata?.get(commitConflictMetadataKey)[0] : undefined;
      if (raw === undefined || typeof raw === "string") throw error;
      return { kind: "conflict", conflict: fromBinary(CommitConflictSchema, raw) };
    }
  }

  async sendMessage(request: MessageInitShape<typeof SendMessageRequestSchema>): Promise<bigint> {
    const response = await this.call((rpc) => rpc.sendMessage(request, { deadlineMs: this.callDeadlineMs }), false);
    return response.sequence;
  }

  listEvents(request: MessageInitShape<typeof ListEventsRequestSchema>): Promise<ListEventsResponse> {
    return this.call((rpc) => rpc.listEvents(request, { deadlineMs: this.callDeadlineMs }), true);
  }

  async getCommit(channelId: string, epoch: bigint): Promise<CommittedEpoch | undefined> {
    try {
      const response = await this.call((rpc) => rpc.getCommit({ channelId, epoch }, { deadlineMs: this.callDeadlineMs }), true);
      return response.commit;
    } catch (error) {
      if (isServiceError(error) && error.code === grpc.status.NOT_FOUND) return undefined;
      throw error;
    }
  }

  /** Closes every connection. */
  close(): void {
    for (const rpc of this.rpcs.values()) rpc.close();
    this.rpcs.clear();
  }
}
