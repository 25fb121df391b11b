/**
 * epochd.channel.v1.ChannelService: each channel over its own Raft group
 * (see src/node/channel-groups.ts). Every write is a channel command through
 * the channel's group; the state machine's result becomes the reply.
 * SubmitCommit returns once the commit is certified and the channel's group
 * follows the members the commit left (an added member's homeserver votes);
 * SubmitCommitStream does the same for each item of a stream. Every call but
 * ListHomeservers is authenticated as a device and allowed only to a member of
 * the channel (CreateChannel: to the new channel's sole member), see
 * channel-access.ts.
 */
import { create, fromBinary, isMessage, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { encodeCommitStreamResult } from "../channel/record-codec.ts";
import { memberHomeservers, type ChannelStateMachine } from "../channel/channel-state-machine.ts";
import * as grpc from "@grpc/grpc-js";
import { requireChannelMember } from "../auth/channel-membership.ts";
import type { ClientAuthenticator } from "../auth/client-authenticator.ts";
import { isCertified } from "../channel/certificate.ts";
import type { ChannelResult } from "../channel/channel-state-machine.ts";
import {
  CertificateSchema,
  ChannelService,
  CommitConflictSchema,
  EventKind,
  SubmitCommitStreamRequestSchema,
  SubmitCommitStreamResponseSchema,
  type ItemStatusSchema,
  type SubmitCommitRequest,
  type SubmitCommitResponseSchema,
  type Certificate,
  type ChannelEvent,
  type ChannelStateSchema,
} from "../gen/epochd/channel/v1/channel_pb.ts";
import type { ChannelCommandSchema, ChannelRecord, EpochRecord } from "../gen/epochd/state/v1/channel_state_pb.ts";
import { inspectMessage, maxGroupInfoBytes, maxMessageBytes, maxWelcomeBytes } from "../mls/index.ts";
import type { CertificateLookup } from "../node/certificate-lookup.ts";
import { ChannelNotHostedError, type ChannelGroups } from "../node/channel-groups.ts";
import { ChannelTakenError } from "../node/channel-claim.ts";
import { isValidChannelId } from "../channel/channel-keys.ts";
import type { ClusterStateMachine } from "../node/cluster-state-machine.ts";
import type { LogIndex } from "../raft/types.ts";
import { channelAccess } from "./channel-access.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError, itemStatus } from "./errors.ts";
import { RateLimiter } from "./rate-limiter.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";
import { serveItemStream } from "./item-stream.ts";

/** Handshakes (commits and proposals) one sender may submit to one channel: a burst, then a steady rate. */
export const senderHandshakeLimit = { burst: 20, perSecond: 10 };
/** Handshakes all senders together may submit to one channel. */
export const channelHandshakeLimit = { burst: 200, perSecond: 100 };
/** Application messages one channel accepts (their sender is encrypted, so per channel only). */
export const channelMessageLimit = { burst: 1000, perSecond: 500 };
/** Metadata key with the milliseconds to wait before retrying a RESOURCE_EXHAUSTED call. */
export const retryAfterMetadataKey = "retry-after-ms";

/** Metadata key of the binary CommitConflict detail on a rejected commit. */
export const commitConflictMetadataKey = "epochd-commit-conflict-bin";
/** Largest page ListEvents returns. */
export const eventsPageMax = 1000;
/**
 * Longest a page of events waits for a listed commit's certificate to
 * complete (the log records certificates a few seconds after the fact, and
 * until then a homeserver serves the one it collected); a commit still
 * uncertified after that ends the page before it.
 */
export const eventsCertificateWaitMsMax = 5000;

type Command = NonNullable<MessageInitShape<typeof ChannelCommandSchema>["command"]>;

function checkSize(bytes: Uint8Array, max: number, field: string): void {
  if (bytes.byteLength > max) throw new ApiError(grpc.status.INVALID_ARGUMENT, `${field} is ${bytes.byteLength} bytes, at most ${max}`);
}

function channelState(record: ChannelRecord): MessageInitShape<typeof ChannelStateSchema> {
  return {
    channelId: record.channelId,
    groupId: record.groupId,
    epoch: record.epoch,
    contentType: record.contentType,
    handshakeMode: record.handshakeMode,
    members: record.members,
    homeservers: memberHomeservers(record),
    witnesses: record.witnesses,
    lastSequence: record.lastSequence,
  };
}

/** Takes one from `limiter` for `key`, or throws RESOURCE_EXHAUSTED with the wait in metadata. */
function throttle(limiter: RateLimiter, key: string, what: string): void {
  const waitMs = limiter.take(key);
  if (waitMs === 0) return;
  const metadata = new grpc.Metadata();
  metadata.set(retryAfterMetadataKey, String(waitMs));
  throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `${what}: rate limit reached, retry in ${waitMs} ms`, metadata);
}

/**
 * Checks the framing of an MLSMessage at the edge (no Raft round for bytes
 * that are not even the right kind of message); returns the visible sender leaf.
 */
function checkFraming(bytes: Uint8Array, contentType: "commit" | "proposal" | "application", field: string): number | undefined {
  const inspected = inspectMessage(bytes);
  if (!inspected.ok) throw new ApiError(grpc.status.INVALID_ARGUMENT, `${field}: ${inspected.reason}`);
  if (inspected.contentType !== contentType) throw new ApiError(grpc.status.INVALID_ARGUMENT, `${field}: not an MLS ${contentType} message`);
  return inspected.senderLeafIndex;
}

/** Limits handshakes per sender and per channel; the sender is the PublicMessage's (unverified) leaf, if visible. */
function handshakeThrottle(): (channelId: string, bytes: Uint8Array, contentType: "commit" | "proposal") => void {
  const perSender = new RateLimiter(senderHandshakeLimit);
  const perChannel = new RateLimiter(channelHandshakeLimit);
  return (channelId, bytes, contentType) => {
    const leaf = checkFraming(bytes, contentType, contentType);
    const sender = leaf === undefined ? "?" : String(leaf);
    throttle(perSender, `${channelId}#${sender}`, `handshakes from leaf ${sender} in ${channelId}`);
    throttle(perChannel, channelId, `handshakes in ${channelId}`);
  };
}

/** Reports, at each call, the time since the previous call (or since it was made) as the named stage. */
function stageTimer(report: ((stage: CommitStage, seconds: number) => void) | undefined): (stage: CommitStage) => void {
  if (report === undefined) return () => {};
  let last = performance.now();
  return (stage) => {
    const now = performance.now();
    report(stage, (now - last) / 1000);
    last = now;
  };
}

/** Most commits one SubmitCommitStream may have in flight; more are refused with RESOURCE_EXHAUSTED. */
export const commitStreamInflightMax = 1024;

/** The status of a refused stream item, with the details a unary call carries in metadata. */
function commitItemStatus(error: unknown): MessageInitShape<typeof ItemStatusSchema> {
  const { status, metadata } = itemStatus(error);
  const retryAfter = metadata?.get(retryAfterMetadataKey)[0];
  const conflict = metadata?.get(commitConflictMetadataKey)[0];
  return {
    ...status,
    ...(retryAfter === undefined ? {} : { retryAfterMs: BigInt(String(retryAfter)) }),
    ...(Buffer.isBuffer(conflict) ? { conflict: fromBinary(CommitConflictSchema, conflict) } : {}),
  };
}

/**
 * Serves one SubmitCommitStream with `submit` (SubmitCommit's own steps):
 * each item as the stream's metadata authenticates it, bounded by the
 * stream's deadline and by the longest wait of any call; see item-stream.ts.
 */
function serveCommitStream(
  call: grpc.ServerDuplexStream<Buffer, Buffer>,
  submit: (request: SubmitCommitRequest, metadata: grpc.Metadata, deadline: grpc.Deadline) => Promise<MessageInitShape<typeof SubmitCommitResponseSchema>>,
): void {
  serveItemStream(call, {
    request: SubmitCommitStreamRequestSchema,
    response: SubmitCommitStreamResponseSchema,
    items: "commits",
    inflightMax: commitStreamInflightMax,
    requestIdOf: (item) => item.requestId,
    async handle(item) {
      if (item.commit === undefined) throw new ApiError(grpc.status.INVALID_ARGUMENT, "an item needs a commit");
      return { requestId: item.requestId, result: await submit(item.commit, call.metadata, Date.now() + remainingMs(call.getDeadline())) };
    },
    refusal: (requestId, error) => ({ requestId, error: commitItemStatus(error) }),
    encode: encodeCommitItem,
  });
}

/** An accepted item's answer, by hand (see record-codec.ts); undefined for the rest, which protobuf-es encodes. */
function encodeCommitItem({ requestId, result, error }: MessageInitShape<typeof SubmitCommitStreamResponseSchema>): Uint8Array | undefined {
  if (error !== undefined || result === undefined || requestId === undefined || result.epoch === undefined) return undefined;
  const certificate = result.certificate;
  if (certificate !== undefined && !isMessage(certificate, CertificateSchema)) return undefined;
  return encodeCommitStreamResult(requestId, result.epoch, certificate);
}

/** What ChannelService needs from its homeserver. */
export interface ChannelServiceContext {
  readonly selfId: string;
  /** The cluster group's state: its id and directory (ListHomeservers). */
  readonly machine: ClusterStateMachine;
  /**
   * Resolves once this homeserver has applied everything the cluster group
   * committed before the call (a read index confirmed by a quorum), so a
   * directory answer is never older than a certificate the client holds.
   */
  readonly confirmDirectoryRead: () => Promise<unknown>;
  /** The channel groups hosted here. */
  readonly groups: ChannelGroups;
  /** The records of the channels hosted here. */
  readonly channels: ChannelStateMachine;
  readonly certificates: CertificateLookup;
  /** The homeserver's TokenAuthenticator: which device calls. */
  readonly authenticator: ClientAuthenticator;
  readonly clientAddressOf: (homeserverId: string) => string | undefined;
  /** Told how long each stage of a SubmitCommit took (for metrics). */
  readonly onCommitStage?: (stage: CommitStage, seconds: number) => void;
}

/** The stages of a SubmitCommit, in order. */
export type CommitStage = "admit" | "order" | "certify" | "settle";

/** Registers ChannelService on `server`. */
export function addChannelService(server: grpc.Server, context: ChannelServiceContext): void {
  const { machine, groups, channels, certificates } = context;
  const access = channelAccess({ selfId: context.selfId, authenticator: context.authenticator, channels: groups, clientAddressOf: context.clientAddressOf, isHomeserver: (id) => machine.signingKeyOf(id) !== undefined });
  const throttleHandshake = handshakeThrottle();
  const messageLimiter = new RateLimiter(channelMessageLimit);

  const run = async (channelId: string, command: Command, waitMs: number): Promise<{ result: ChannelResult; index: LogIndex }> => {
    try {
      return await withDeadline(
        command.case === "createChannel" ? groups.create(channelId, command, waitMs) : groups.propose(channelId, command, waitMs),
        waitMs,
        "waiting for the channel command to commit",
      );
    } catch (error) {
      if (error instanceof ChannelNotHostedError) throw new ApiError(grpc.status.UNAVAILABLE, `${error.message} any more: retry`);
      if (error instanceof ChannelTakenError) throw new ApiError(grpc.status.ALREADY_EXISTS, error.message);
      throw error;
    }
  };

  /** The stored record of the commit that ended `epoch`, with the complete certificate from wherever it is. */
  const recordOf = async (channelId: string, epoch: bigint): Promise<EpochRecord | undefined> => {
    const record = await channels.epochRecord((k) => groups.channelGet(channelId, k), channelId, epoch);
    if (record === undefined || (record.certificate !== undefined && isCertified(record.certificate))) return record;
    const collected = certificates.collected(channelId, epoch);
    return collected === undefined ? record : { ...record, certificate: collected };
  };

  /** Waits until the commit that ended `epoch` is certified; resolves with its complete certificate. */
  const certified = async (channelId: string, epoch: bigint, waitMs: number): Promise<Certificate | undefined> => {
    await withDeadline(certificates.waitComplete(channelId, epoch), waitMs, "waiting for the channel's homeservers to co-sign the commit");
    return certificates.complete(channelId, epoch);
  };

  /**
   * `certificate` if it is complete, else the complete one once a quorum has
   * signed (waiting up to `waitMs`): clients apply no commit without one, and
   * the log records certificates a few seconds after the fact.
   */
  const completeCertificate = async (channelId: string, epoch: bigint, certificate: Certificate | undefined, waitMs: number) =>
    certificate !== undefined && isCertified(certificate) ? certificate : certified(channelId, epoch, waitMs);

  /** Waits until the commit that ended `epoch` is certified, then returns its record. */
  const certifiedRecord = async (channelId: string, epoch: bigint, waitMs: number) => {
    await certified(channelId, epoch, waitMs);
    return recordOf(channelId, epoch);
  };

  const fail = async (result: Extract<ChannelResult, { ok: false }>, waitMs: number): Promise<never> => {
    if (result.code === "not-found") throw new ApiError(grpc.status.NOT_FOUND, result.reason);
    if (result.code === "exists") throw new ApiError(grpc.status.ALREADY_EXISTS, result.reason);
    if (result.code === "busy") throw new ApiError(grpc.status.UNAVAILABLE, result.reason);
    if (result.code === "invalid") throw new ApiError(grpc.status.INVALID_ARGUMENT, result.reason);
    if (result.code !== "conflict") throw new ApiError(grpc.status.INTERNAL, result.reason);
    const metadata = new grpc.Metadata();
    // The winner goes back with a complete certificate: clients apply no commit without one. Results
    // come as soon as applied, before the apply batch is written; a read index waits for the write.
    let winner: EpochRecord | undefined;
    if (result.builtOn < result.currentEpoch) {
      await withDeadline(groups.readIndex(result.channelId), waitMs, "confirming the read index");
      winner = await certifiedRecord(result.channelId, result.builtOn, waitMs);
    }
    const conflict = create(CommitConflictSchema, {
      channelId: result.channelId,
      currentEpoch: result.currentEpoch,
      ...(winner === undefined ? {} : { winner: { epoch: winner.epoch, commit: winner.commit, welcome: winner.welcome, ...(winner.certificate === undefined ? {} : { certificate: winner.certificate }) } }),
    });
    metadata.set(commitConflictMetadataKey, Buffer.from(toBinary(CommitConflictSchema, conflict)));
    throw new ApiError(grpc.status.FAILED_PRECONDITION, result.reason, metadata);
  };

  /** The channel's record after a read index, for a member of it (anyone else: PERMISSION_DENIED, even for no channel). */
  const readable = async (call: grpc.ServerUnaryCall<Buffer, Buffer>, channelId: string): Promise<ChannelRecord> => {
    const device = await access.member(call.metadata, channelId, remainingMs(call.getDeadline()));
    await withDeadline(groups.readIndex(channelId), remainingMs(call.getDeadline()), "confirming the read index");
    requireChannelMember(channels, channelId, device);
    const record = await channels.wholeRecord(channelId, (key) => groups.channelGet(channelId, key));
    if (record === undefined) throw new ApiError(grpc.status.NOT_FOUND, `no channel ${channelId}`);
    return record;
  };

  /** A SubmitCommit, by the device `metadata` authenticates: answered once accepted and certified, by `deadline`. */
  const submitCommit = async (request: SubmitCommitRequest, metadata: grpc.Metadata, deadline: grpc.Deadline): Promise<MessageInitShape<typeof SubmitCommitResponseSchema>> => {
    const stage = stageTimer(context.onCommitStage);
    checkSize(request.commit, maxMessageBytes, "commit");
    checkSize(request.nextGroupInfo, maxGroupInfoBytes, "next_group_info");
    checkSize(request.welcome, maxWelcomeBytes, "welcome");
    await access.member(metadata, request.channelId, remainingMs(deadline));
    throttleHandshake(request.channelId, request.commit, "commit");
    stage("admit");
    const { result } = await run(request.channelId, { case: "submitCommit", value: request }, remainingMs(deadline));
    if (!result.ok) return fail(result, remainingMs(deadline));
    if (result.kind !== "commit-accepted") throw new ApiError(grpc.status.INTERNAL, "unexpected result");
    stage("order");
    const certificate = await certified(result.channelId, result.epoch, remainingMs(deadline));
    stage("certify");
    // An added member's homeserver votes (and a removed one's no longer) before the commit is acknowledged.
    await groups.waitSettled(result.channelId, remainingMs(deadline));
    stage("settle");
    return { epoch: result.epoch + 1n, ...(certificate === undefined ? {} : { certificate }) };
  };

  server.addService(serviceDefinition(ChannelService), {
    listHomeservers: unaryHandler(ChannelService.method.listHomeservers, async (_request, call) => {
      // Linearizable: a client that found a signer missing from its copy asks again, and a
      // follower's applied state may not yet hold a key the leader's cluster group committed.
      await withDeadline(context.confirmDirectoryRead(), remainingMs(call.getDeadline()), "confirming the directory's read index");
      return {
        clusterId: machine.clusterId,
        homeservers: [...machine.homeservers().values()].map((h) => ({ homeserverId: h.id, clientAddress: h.clientAddress, signingKey: new Uint8Array(Buffer.from(h.signingKey, "base64")) })),
      };
    }),
    createChannel: unaryHandler(ChannelService.method.createChannel, async (request, call) => {
      checkSize(request.groupInfo, maxGroupInfoBytes, "group_info");
      if (!isValidChannelId(request.channelId)) throw new ApiError(grpc.status.INVALID_ARGUMENT, "channel_id must be 1 to 128 characters of [A-Za-z0-9._-]");
      await access.creator(call.metadata, request.groupInfo);
      const { result } = await run(request.channelId, { case: "createChannel", value: request }, remainingMs(call.getDeadline()));
      if (!result.ok) return fail(result, remainingMs(call.getDeadline()));
      // A channel naming witnesses is acknowledged once they vote in its group.
      await groups.waitSettled(request.channelId, remainingMs(call.getDeadline()));
      return { channel: channelState(channels.channel(request.channelId)!) };
    }),
    submitCommit: unaryHandler(ChannelService.method.submitCommit, (request, call) => submitCommit(request, call.metadata, call.getDeadline())),
    submitCommitStream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => serveCommitStream(call, submitCommit),
    submitProposal: unaryHandler(ChannelService.method.submitProposal, async (request, call) => {
      checkSize(request.proposal, maxMessageBytes, "proposal");
      await access.member(call.metadata, request.channelId, remainingMs(call.getDeadline()));
      throttleHandshake(request.channelId, request.proposal, "proposal");
      const { result } = await run(request.channelId, { case: "submitProposal", value: request }, remainingMs(call.getDeadline()));
      if (!result.ok) return fail(result, remainingMs(call.getDeadline()));
      return { sequence: result.kind === "proposal-accepted" ? result.sequence : 0n };
    }),
    sendMessage: unaryHandler(ChannelService.method.sendMessage, async (request, call) => {
      checkSize(request.message, maxMessageBytes, "message");
      await access.member(call.metadata, request.channelId, remainingMs(call.getDeadline()));
      checkFraming(request.message, "application", "message");
      throttle(messageLimiter, request.channelId, `messages in ${request.channelId}`);
      const { result } = await run(request.channelId, { case: "sendMessage", value: request }, remainingMs(call.getDeadline()));
      if (!result.ok) return fail(result, remainingMs(call.getDeadline()));
      return { sequence: result.kind === "message-accepted" ? result.sequence : 0n };
    }),
    getChannel: unaryHandler(ChannelService.method.getChannel, async (request, call) => ({
      channel: channelState(await readable(call, request.channelId)),
    })),
    getGroupInfo: unaryHandler(ChannelService.method.getGroupInfo, async (request, call) => {
      const record = await readable(call, request.channelId);
      return { epoch: record.epoch, groupInfo: record.groupInfo };
    }),
    getCommit: unaryHandler(ChannelService.method.getCommit, async (request, call) => {
      await readable(call, request.channelId);
      const record = await recordOf(request.channelId, request.epoch);
      if (record === undefined) throw new ApiError(grpc.status.NOT_FOUND, `no commit ended epoch ${request.epoch} of ${request.channelId}`);
      const certificate = await completeCertificate(request.channelId, request.epoch, record.certificate, remainingMs(call.getDeadline()));
      return { commit: { epoch: record.epoch, commit: record.commit, welcome: record.welcome, ...(certificate === undefined ? {} : { certificate }) } };
    }),
    listEvents: unaryHandler(ChannelService.method.listEvents, async (request, call) => {
      const record = await readable(call, request.channelId);
      const limit = request.limit === 0 || request.limit > eventsPageMax ? eventsPageMax : request.limit;
      const events = await channels.events(
        (prefix, from, max) => groups.channelScan(request.channelId, prefix, from, max),
        (k) => groups.channelGet(request.channelId, k),
        request.channelId,
        request.afterSequence,
        limit,
      );
      // Commits go out with complete certificates only; a commit still uncertified after a brief wait ends the page.
      const waitUntil = Date.now() + Math.min(remainingMs(call.getDeadline()), eventsCertificateWaitMsMax);
      const page: ChannelEvent[] = [];
      for (const event of events) {
        if (event.kind === EventKind.COMMIT) {
          const certificate = await completeCertificate(request.channelId, event.epoch, event.certificate, waitUntil - Date.now()).catch(() => undefined);
          if (certificate === undefined) break;
          event.certificate = certificate;
        }
        page.push(event);
      }
      return { events: page, lastSequence: record.lastSequence };
    }),
  } satisfies grpc.UntypedServiceImplementation);
}
