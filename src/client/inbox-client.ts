/**
 * InboxClient: the SDK side of a device's inbox. It subscribes from a cursor
 * on the device's homeserver, reconnects with backoff when the stream breaks
 * (a homeserver restart, a network cut), drops duplicates by message id,
 * hands entries to the app one at a time in inbox order, and acks what the
 * app handled so the homeserver deletes it.
 *
 * Acks also open the server's flow-control window (entries delivered and not
 * acked): once it is full the server sends nothing more until an ack arrives.
 * So an ack must never be lost for good: acks are sent when half the window
 * is handled, and a timer acks every `ackIntervalMs` while anything handled is
 * not acked (which also retries an ack sent to a homeserver that just died: no
 * new batch would come to trigger another). A device receiving a trickle thus
 * acks at most once per interval, not once per entry.
 */
import { randomBytes } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { encodeMessage } from "../api/grpc-service.ts";
import { InboxService, SubscribeRequestSchema, SubscribeResponseSchema, type InboxEntry, type InboxStatus } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import { inboxWindowDefault } from "../inbox/inbox-limits.ts";
import { callUnary, hasStatus } from "./authed-call.ts";
import type { DeviceSession } from "./session.ts";

/** Settings of an {@link InboxClient}. */
export interface InboxClientOptions {
  /** An authenticated session with the device's own (sponsoring) homeserver. */
  readonly session: DeviceSession;
  /** Called for each new entry, in order, once; the entry is acked after it resolves. */
  readonly onEntry: (entry: InboxEntry) => Promise<void> | void;
  /** Resume after this sequence (the last one the app persisted as handled); default 0. */
  readonly afterSequence?: bigint;
  /**
   * Ack once this many entries are handled and not acked (at most half the
   * window), and otherwise every ackIntervalMs (default 1000) while any are.
   */
  readonly ackEveryEntries?: number;
  readonly ackIntervalMs?: number;
  /** Flow-control window asked of the server (entries delivered and not acked). */
  readonly window?: number;
  readonly backoffStartMs?: number;
  readonly backoffMaxMs?: number;
  /** How many recent message ids are remembered for deduplication. */
  readonly seenIdsMax?: number;
}

/** Default of {@link InboxClientOptions.ackIntervalMs}. */
const defaultAckIntervalMs = 1000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const subscribePath = `/${InboxService.typeName}/${InboxService.method.subscribe.name}`;
const identity = (bytes: Buffer): Buffer => bytes;

/** Subscribes to a device's inbox and delivers each entry to the app exactly once (by id) in order. */
export class InboxClient {
  private handledSequence: bigint;
  private ackedSequence: bigint;
  private readonly seen = new Set<string>();
  private running = false;
  private loop: Promise<void> | undefined;
  private stream: grpc.ClientReadableStream<Buffer> | undefined;
  private acking: Promise<void> = Promise.resolve();
  private ackTimer: NodeJS.Timeout | undefined;
  /** What the client had to do: reconnects, duplicates dropped, entries handed to the app. */
  readonly stats = { reconnects: 0, duplicates: 0, delivered: 0, acks: 0 };

  constructor(private readonly options: InboxClientOptions) {
    this.handledSequence = options.afterSequence ?? 0n;
    this.ackedSequence = this.handledSequence;
  }

  /** The last sequence handed to the app (and the next subscription's cursor). */
  get handled(): bigint {
    return this.handledSequence;
  }

  /** The last sequence acked to the homeserver. */
  get acked(): bigint {
    return this.ackedSequence;
  }

  /** Starts subscribing (in the background) until {@link stop}. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.ackTimer = setInterval(() => {
      if (this.handledSequence > this.ackedSequence) void this.ackNow().catch(() => undefined);
    }, this.options.ackIntervalMs ?? defaultAckIntervalMs);
    this.loop = this.run();
  }

  /** Stops the subscription and acks what was handled. */
  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.ackTimer);
    this.stream?.cancel();
    await this.loop;
    await this.ackNow().catch(() => undefined);
  }

  private async run(): Promise<void> {
    const startMs = this.options.backoffStartMs ?? 100;
    const maxMs = this.options.backoffMaxMs ?? 2_000;
    let delayMs = startMs;
    while (this.running) {
      const progressed = await this.subscribeOnce().catch((error: unknown) => {
        if (hasStatus(error, grpc.status.UNAUTHENTICATED)) this.options.session.invalidate();
        return false;
      });
      if (!this.running) break;
      this.stats.reconnects++;
      delayMs = progressed ? startMs : Math.min(maxMs, delayMs * 2);
      await sleep(delayMs);
    }
  }

  /** One subscription, until it ends or fails; true if it delivered anything. */
  private async subscribeOnce(): Promise<boolean> {
    const metadata = await this.options.session.metadata();
    const request = encodeMessage(SubscribeRequestSchema, { afterSequence: this.handledSequence, window: this.options.window ?? 0 });
    const stream = this.options.session.channel.makeServerStreamRequest(subscribePath, identity, identity, request, metadata, {});
    this.stream = stream;
    let progressed = false;
    let chain = Promise.resolve();
    return new Promise<boolean>((resolve, reject) => {
      let failed: unknown;
      stream.on("data", (bytes: Buffer) => {
        stream.pause();
        chain = chain
          .then(() => this.handleBatch(fromBinary(SubscribeResponseSchema, bytes).entries))
          .then(() => {
            progressed = true;
            stream.resume();
          });
        chain.catch((error: unknown) => {
          failed = error;
          stream.cancel();
        });
      });
      stream.on("error", (error) => {
        failed ??= error;
      });
      stream.on("status", () => {
        void chain.then(
          () => (failed !== undefined && !hasStatus(failed, grpc.status.CANCELLED) ? reject(failed) : resolve(progressed)),
          reject,
        );
      });
    });
  }

  private async handleBatch(entries: readonly InboxEntry[]): Promise<void> {
    for (const entry of entries) {
      if (entry.sequence <= this.handledSequence) continue;
      if (this.seen.has(entry.messageId)) {
        this.stats.duplicates++;
      } else {
        await this.options.onEntry(entry);
        this.remember(entry.messageId);
        this.stats.delivered++;
      }
      this.handledSequence = entry.sequence;
    }
    if (this.handledSequence - this.ackedSequence >= this.ackEvery()) void this.ackNow().catch(() => undefined);
  }

  /** Handled entries that trigger an ack: the option, but at most half the window so the window never fills. */
  private ackEvery(): bigint {
    const every = this.options.ackEveryEntries ?? 64;
    const window = this.options.window === undefined || this.options.window === 0 ? inboxWindowDefault : this.options.window;
    return BigInt(Math.max(1, Math.min(every, Math.floor(window / 2))));
  }

  private remember(messageId: string): void {
    this.seen.add(messageId);
    const max = this.options.seenIdsMax ?? 100_000;
    if (this.seen.size <= max) return;
    const oldest = this.seen.values().next().value;
    if (oldest !== undefined) this.seen.delete(oldest);
  }

  /** Acks everything handled so far (the homeserver deletes it); serialized with other acks. */
  ackNow(): Promise<void> {
    this.acking = this.acking.catch(() => undefined).then(async () => {
      const through = this.handledSequence;
      if (through <= this.ackedSequence) return;
      await this.options.session.call((metadata) => callUnary(this.options.session.channel, InboxService.method.ack, { throughSequence: through }, metadata, this.options.session.callDeadlineMs));
      if (through > this.ackedSequence) this.ackedSequence = through;
      this.stats.acks++;
    });
    return this.acking;
  }

  /** The inbox's position on the homeserver. */
  async status(): Promise<InboxStatus | undefined> {
    const session = this.options.session;
    const page = await session.call((metadata) => callUnary(session.channel, InboxService.method.fetch, { afterSequence: 0n, limit: 1 }, metadata, session.callDeadlineMs));
    return page.status;
  }
}

/**
 * Sends a direct message (bytes the caller encrypted to the target's inbox
 * key) through the device's homeserver; retries with the same nonce are
 * deduplicated by the target. Resolves with the message id.
 */
export async function sendDirect(session: DeviceSession, targetDeviceId: string, payload: Uint8Array, nonce: Uint8Array = new Uint8Array(randomBytes(16))): Promise<string> {
  const answer = await session.call((metadata) => callUnary(session.channel, InboxService.method.sendDirect, { targetDeviceId, payload, nonce }, metadata, session.callDeadlineMs));
  return answer.messageId;
}
