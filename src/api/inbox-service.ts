/**
 * epochd.inbox.v1.InboxService: a device's own inbox on its sponsoring
 * homeserver (Subscribe, Fetch, Ack) and direct messages to any device
 * (SendDirect, through the cluster log). Every call is authenticated as a
 * device; see proto/epochd/inbox/v1/inbox.proto for the contract.
 */
import * as grpc from "@grpc/grpc-js";
import type { AuthenticatedDevice, ClientAuthenticator } from "../auth/client-authenticator.ts";
import { InboxService, SubscribeRequestSchema, SubscribeResponseSchema, type InboxStatus, type SubscribeRequest } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import { directMessageId, directNonceBytes, encodeDirectCommand } from "../inbox/direct-command.ts";
import type { DirectResult, InboxFanout } from "../inbox/inbox-fanout.ts";
import { inboxPageMax, inboxWindowDefault, inboxWindowMax } from "../inbox/inbox-limits.ts";
import { deliverablePage, type CertificateSource } from "../inbox/inbox-reader.ts";
import type { InboxPosition } from "../inbox/inbox-store.ts";
import { parseDeviceId } from "../mls/identity.ts";
import { RateLimiter } from "./rate-limiter.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError, toServiceError } from "./errors.ts";
import { decodeRequest, encodeMessage, serviceDefinition, unaryHandler } from "./grpc-service.ts";

/** Trailing metadata naming the homeserver that holds the caller's inbox, on FAILED_PRECONDITION. */
export const inboxHomeserverIdMetadataKey = "epochd-inbox-homeserver-id";
export const inboxHomeserverAddressMetadataKey = "epochd-inbox-homeserver-address";
/** Direct messages one sender may send: a burst, then a steady rate. */
export const directSendLimit = { burst: 100, perSecond: 50 };
/** A subscription with nothing to send rechecks its inbox this often (a missed wake-up costs at most this). */
const idleRecheckMs = 1_000;

/** What the inbox service needs from its homeserver. */
export interface InboxServiceDeps {
  readonly selfId: string;
  readonly authenticator: ClientAuthenticator;
  readonly fanout: InboxFanout;
  readonly certificates: CertificateSource;
  /** The client address of a homeserver, for the FAILED_PRECONDITION hint. */
  readonly clientAddressOf: (homeserverId: string) => string | undefined;
  /** Proposes an entry through whichever homeserver leads; false if it could not be sent. */
  readonly proposeAnywhere: (data: Uint8Array) => boolean;
}

function toStatus(position: InboxPosition): Omit<InboxStatus, "$typeName" | "$unknown"> {
  return { lastSequence: position.lastSequence, ackedSequence: position.ackedSequence, entries: BigInt(position.entries), bytes: BigInt(position.bytes) };
}

/** Waits for direct messages proposed here to be applied here. */
class DirectWaiters {
  private readonly waiting = new Map<string, Array<(result: DirectResult) => void>>();

  onApplied(messageId: string, result: DirectResult): void {
    for (const resolve of this.waiting.get(messageId) ?? []) resolve(result);
    this.waiting.delete(messageId);
  }

  wait(messageId: string): { done: Promise<DirectResult>; cancel: () => void } {
    let resolve!: (result: DirectResult) => void;
    const done = new Promise<DirectResult>((r) => (resolve = r));
    const list = this.waiting.get(messageId) ?? [];
    list.push(resolve);
    this.waiting.set(messageId, list);
    const cancel = () => {
      const left = (this.waiting.get(messageId) ?? []).filter((r) => r !== resolve);
      if (left.length === 0) this.waiting.delete(messageId);
      else this.waiting.set(messageId, left);
    };
    return { done, cancel };
  }
}

/** Registers InboxService on `server`. */
export function addInboxService(server: grpc.Server, deps: InboxServiceDeps): void {
  const store = deps.fanout.store;
  const directs = new DirectWaiters();
  deps.fanout.onDirectApplied = (messageId, result) => directs.onApplied(messageId, result);
  const senders = new RateLimiter(directSendLimit);

  /** The caller, if its inbox is `requested` (empty = own) and lives here. */
  const owner = async (metadata: grpc.Metadata, requested: string): Promise<AuthenticatedDevice> => {
    const device = await deps.authenticator.authenticate(metadata);
    if (requested !== "" && requested !== device.deviceId) throw new ApiError(grpc.status.PERMISSION_DENIED, `${device.deviceId} may read only its own inbox, not ${requested}'s`);
    if (device.homeserverId !== deps.selfId) {
      const hint = new grpc.Metadata();
      hint.set(inboxHomeserverIdMetadataKey, device.homeserverId);
      const address = deps.clientAddressOf(device.homeserverId);
      if (address !== undefined && address !== "") hint.set(inboxHomeserverAddressMetadataKey, address);
      throw new ApiError(grpc.status.FAILED_PRECONDITION, `the inbox of ${device.deviceId} is on its homeserver ${device.homeserverId}, not ${deps.selfId}`, hint);
    }
    return device;
  };

  const sendDirect = async (device: AuthenticatedDevice, target: string, payload: Uint8Array, nonce: Uint8Array, waitMs: number) => {
    const parsed = parseDeviceId(new TextEncoder().encode(target));
    if (parsed === undefined) throw new ApiError(grpc.status.INVALID_ARGUMENT, "target_device_id is not a device id (name@homeserver)");
    if (payload.byteLength === 0 || payload.byteLength > store.limits.directBytesMax) {
      throw new ApiError(grpc.status.INVALID_ARGUMENT, `payload is ${payload.byteLength} bytes, must be 1 to ${store.limits.directBytesMax}`);
    }
    if (nonce.byteLength !== directNonceBytes) throw new ApiError(grpc.status.INVALID_ARGUMENT, `nonce must be ${directNonceBytes} bytes`);
    const waitRetryMs = senders.take(device.deviceId);
    if (waitRetryMs > 0) throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `direct messages from ${device.deviceId}: rate limit reached, retry in ${waitRetryMs} ms`);
    if (parsed.homeserver === deps.selfId && !store.hasRoom(target, payload.byteLength + 256)) {
      throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `the inbox of ${target} is full`);
    }
    const messageId = directMessageId(device.deviceId, nonce);
    const waiter = directs.wait(messageId);
    try {
      if (!deps.proposeAnywhere(encodeDirectCommand({ targetDeviceId: target, senderDeviceId: device.deviceId, payload, nonce }))) {
        throw new ApiError(grpc.status.UNAVAILABLE, "no leader to order the direct message: retry");
      }
      const result = await withDeadline(waiter.done, waitMs, "waiting for the direct message to be ordered");
      if (result.ok) return { messageId, queuedHere: result.queuedHere };
      if (result.code === "full") throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, result.reason);
      throw new ApiError(grpc.status.INVALID_ARGUMENT, result.reason);
    } finally {
      waiter.cancel();
    }
  };

  server.addService(serviceDefinition(InboxService), {
    subscribe: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      let request: SubscribeRequest;
      try {
        request = decodeRequest(SubscribeRequestSchema, call.request);
      } catch (error) {
        call.emit("error", toServiceError(error));
        return;
      }
      owner(call.metadata, request.deviceId)
        .then((device) => streamEntries(call, device.deviceId, request))
        .then(
          () => call.end(),
          (error: unknown) => {
            if (!call.cancelled) call.emit("error", toServiceError(error));
          },
        );
    },
    fetch: unaryHandler(InboxService.method.fetch, async (request, call) => {
      const device = await owner(call.metadata, request.deviceId);
      const limit = request.limit === 0 || request.limit > inboxPageMax ? inboxPageMax : request.limit;
      const page = await deliverablePage(store, deps.certificates, device.deviceId, request.afterSequence, limit);
      return { entries: page.entries, status: toStatus(store.position(device.deviceId)) };
    }),
    ack: unaryHandler(InboxService.method.ack, async (request, call) => {
      const device = await owner(call.metadata, request.deviceId);
      try {
        return { status: toStatus(await store.ack(device.deviceId, request.throughSequence)) };
      } catch (error) {
        if (error instanceof RangeError) throw new ApiError(grpc.status.INVALID_ARGUMENT, error.message);
        throw error;
      }
    }),
    sendDirect: unaryHandler(InboxService.method.sendDirect, async (request, call) => {
      const device = await deps.authenticator.authenticate(call.metadata);
      return sendDirect(device, request.targetDeviceId, request.payload, request.nonce, remainingMs(call.getDeadline()));
    }),
  } satisfies grpc.UntypedServiceImplementation);

  /**
   * Streams a device's entries after the request's cursor until the call ends:
   * pages of deliverable entries, then waits for new ones, for a pending
   * certificate, for an ack when the window is full, or for the transport to drain.
   */
  async function streamEntries(call: grpc.ServerWritableStream<Buffer, Buffer>, deviceId: string, request: SubscribeRequest): Promise<void> {
    const window = BigInt(request.window === 0 ? inboxWindowDefault : Math.min(request.window, inboxWindowMax));
    let cursor = request.afterSequence;
    let wake: () => void = () => undefined;
    const unwatch = store.watch(deviceId, () => wake());
    const cancelled = new Promise<void>((resolve) =>
      call.once("cancelled", () => {
        resolve();
        wake();
      }),
    );
    const pause = (extra?: Promise<unknown>) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, idleRecheckMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
        void extra?.then(wake, wake);
      });
    try {
      while (!call.cancelled) {
        const acked = store.position(deviceId).ackedSequence;
        const base = cursor > acked ? cursor : acked;
        const room = window - (base - acked);
        if (room <= 0n) {
          await pause();
          continue;
        }
        const limit = Number(room < BigInt(inboxPageMax) ? room : BigInt(inboxPageMax));
        const page = await deliverablePage(store, deps.certificates, deviceId, base, limit);
        if (page.entries.length > 0) {
          cursor = page.entries[page.entries.length - 1]!.sequence;
          if (!call.write(encodeMessage(SubscribeResponseSchema, { entries: page.entries }))) {
            await Promise.race([new Promise((resolve) => call.once("drain", resolve)), cancelled]);
          }
          continue;
        }
        const blocked = page.blockedOn;
        await pause(blocked === undefined ? undefined : deps.certificates.waitCertified(blocked.channelId, blocked.epoch));
      }
    } finally {
      unwatch();
    }
  }
}
