/**
 * The outbound half of a peer pair: one long-lived PeerService.Stream to one
 * peer, a bounded byte queue in front of it, batching, backpressure, and
 * reconnection with backoff. Snapshots go on a separate channel so a
 * multi-megabyte transfer never delays heartbeats on the stream.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MessageType, type GroupId, type Message, type NodeId } from "../raft/types.ts";
import { backoffDelayMs, type BackoffPolicy } from "./backoff.ts";
import { CodecError, decodeStreamResponse, encodeBatch, estimateMessageBytes, type PeerNotice } from "./codec.ts";
import { coalescedBytes, encodeHeartbeats, heartbeatsPerNoticeMax, heartbeatTopic, isCoalescable } from "./heartbeat-codec.ts";
import type { MutableCounters } from "./counters.ts";
import { peerChannelCredentials } from "./credentials.ts";
import { insecureNodeIdMetadataKey, peerClientOptions, peerServicePaths } from "./peer-service.ts";
import { startSnapshotTransfer, type SnapshotTransfer } from "./snapshot-sender.ts";
import type { PeerCredentials } from "./tls.ts";

/** The state of an outbound stream, as operators see it. */
export type PeerStreamState = "connected" | "connecting" | "backoff";

/** Everything a link needs; the transport builds one per peer. */
export interface PeerLinkOptions {
  readonly selfId: NodeId;
  readonly peerId: NodeId;
  readonly address: string;
  readonly credentials: PeerCredentials;
  readonly logger: Logger;
  readonly counters: MutableCounters;
  readonly maxBatchBytes: number;
  readonly maxMessagesPerBatch: number;
  /** Most notices in one batch (the receiver's codec limit). */
  readonly maxNoticesPerBatch: number;
  readonly maxQueuedBytes: number;
  readonly maxGrpcMessageBytes: number;
  readonly snapshotChunkBytes: number;
  readonly snapshotStallTimeoutMs: number;
  readonly maxSnapshotsInFlight: number;
  readonly backoff: BackoffPolicy;
  readonly random: () => number;
  readonly onUnreachable: (to: NodeId) => void;
  readonly onSnapshotStatus: (to: NodeId, groupId: GroupId, ok: boolean) => void;
  /** Whether the peer holds a stream open to us now (it is up, whatever our attempts say). */
  readonly peerStreamsToUs?: () => boolean;
}

const identity = (bytes: Buffer): Buffer => bytes;

/**
 * One peer's outbound link. Invariant: `call !== null` exactly when the state
 * is "connecting" or "connected"; in "backoff" a timer re-opens the stream.
 */
export class PeerLink {
  private streamState: PeerStreamState = "connecting";
  private client: grpc.Client;
  private snapshotClient: grpc.Client | null = null;
  private call: grpc.ClientDuplexStream<Buffer, Buffer> | null = null;
  private queue: Message[] = [];
  /** Heartbeats and responses waiting to go out as one coalesced notice with the next batch. */
  private beats: Message[] = [];
  private beatBytes = 0;
  private notices: PeerNotice[] = [];
  private queuedBytes = 0;
  private waitingForDrain = false;
  private flushScheduled = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private failedAttempts = 0;
  private peerDroppedBatches = 0;
  private closed = false;
  private readonly snapshots = new Set<SnapshotTransfer>();
  private readonly log: Logger;

  constructor(private readonly options: PeerLinkOptions) {
    this.log = options.logger.child({ peer: options.peerId });
    this.client = this.newClient();
    this.openStream();
  }

  /** The stream's current state. */
  get state(): PeerStreamState {
    return this.streamState;
  }

  /** A channel to the peer with a subchannel of its own: a fresh one connects at once, and a snapshot's never shares the stream's. */
  private newClient(): grpc.Client {
    return new grpc.Client(this.options.address, peerChannelCredentials(this.options.credentials, this.options.peerId), { ...this.channelOptions(), "grpc.use_local_subchannel_pool": 1 });
  }

  private channelOptions(): grpc.ChannelOptions {
    const { maxGrpcMessageBytes, backoff, credentials, peerId } = this.options;
    const options = peerClientOptions(maxGrpcMessageBytes, backoff.minMs, backoff.maxMs);
    // TLS names the server by homeserver id (its certificate's DNS SAN), not by the address's IP.
    return credentials.kind === "tls" ? { ...options, "grpc.ssl_target_name_override": peerId } : options;
  }

  private callMetadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    metadata.set(insecureNodeIdMetadataKey, this.options.selfId);
    return metadata;
  }

  private openStream(): void {
    this.streamState = "connecting";
    const call = this.client.makeBidiStreamRequest<Buffer, Buffer>(peerServicePaths.stream, identity, identity, this.callMetadata());
    this.call = call;
    call.on("data", (bytes: Buffer) => this.onResponse(call, bytes));
    call.on("error", () => {}); // the status event below handles every ending
    call.on("status", (status: grpc.StatusObject) => this.onStreamEnded(call, status));
    call.on("drain", () => {
      this.waitingForDrain = false;
      this.flush();
    });
    this.scheduleFlush();
  }

  private onResponse(call: grpc.ClientDuplexStream<Buffer, Buffer>, bytes: Buffer): void {
    let response: { nodeId: string; droppedBatches: number };
    try {
      response = decodeStreamResponse(bytes);
    } catch (error) {
      if (!(error instanceof CodecError)) throw error;
      this.log.warn({ err: error }, "malformed stream response from peer; reconnecting");
      call.cancel();
      return;
    }
    if (response.nodeId !== "" && response.nodeId !== this.options.peerId) {
      this.log.error({ answeredAs: response.nodeId, address: this.options.address }, "peer address reaches another homeserver; reconnecting");
      call.cancel();
      return;
    }
    if (response.droppedBatches > this.peerDroppedBatches) {
      this.log.warn({ droppedBatches: response.droppedBatches }, "peer dropped malformed batches from us");
      this.peerDroppedBatches = response.droppedBatches;
    }
    if (this.streamState === "connecting" && this.call === call) {
      this.streamState = "connected";
      this.failedAttempts = 0;
      this.log.info({ address: this.options.address }, "peer stream connected");
    }
  }

  /**
   * Reconnects at once if the link waits out a backoff (the peer is known to
   * be up: it just opened a stream to us), with the backoff reset.
   */
  reconnectNow(): void {
    if (this.closed || this.reconnectTimer === null) return;
    clearTimeout(this.reconnectTimer);
    this.failedAttempts = 0;
    this.reconnect();
  }

  /**
   * Opens the stream again once the backoff timer fired (or was cut short),
   * over a fresh channel: the old one keeps a backoff of its own towards the
   * peer, failing every call until it runs out, on top of the link's.
   */
  private reconnect(): void {
    this.reconnectTimer = null;
    this.options.counters.reconnects += 1;
    this.client.close();
    this.client = this.newClient();
    this.openStream();
  }

  private onStreamEnded(call: grpc.ClientDuplexStream<Buffer, Buffer>, status: grpc.StatusObject): void {
    if (this.call !== call || this.closed) return;
    this.call = null;
    this.waitingForDrain = false;
    const wasConnected = this.streamState === "connected";
    this.streamState = "backoff";
    this.dropQueue();
    // A peer with a stream open to us is up (perhaps its server is not listening yet, as it starts): try again
    // soon rather than after a backoff grown while it was down. (After a restart the peer connected to us
    // before it listened; our hint-driven attempt was refused, the next came 1.4 s later, and our answers to
    // its election meanwhile were dropped: a failover took 1.7 s.)
    const attempts = this.options.peerStreamsToUs?.() === true ? Math.min(this.failedAttempts, 2) : this.failedAttempts;
    const delayMs = backoffDelayMs(this.options.backoff, attempts, this.options.random);
    this.failedAttempts += 1;
    const fields = { code: grpc.status[status.code], details: status.details, attempt: this.failedAttempts, retryInMs: Math.round(delayMs) };
    // Every loss, and failed attempts at 1, 2, 4, 8, ...: a peer that stays down or refuses us is logged, boundedly.
    if (wasConnected) this.log.warn(fields, "peer stream lost");
    else if ((this.failedAttempts & (this.failedAttempts - 1)) === 0) this.log.warn(fields, "peer stream attempt failed");
    else this.log.debug(fields, "peer stream attempt failed");
    this.reconnectTimer = setTimeout(() => this.reconnect(), delayMs);
    this.reconnectTimer.unref();
    this.options.onUnreachable(this.options.peerId);
  }

  private dropQueue(): void {
    this.options.counters.messagesDropped += this.queue.length + this.notices.length + this.beats.length;
    this.queue = [];
    this.notices = [];
    this.beats = [];
    this.beatBytes = 0;
    this.queuedBytes = 0;
  }

  /**
   * Queues a notice for the next batch, with the same rules as {@link enqueue}:
   * best effort, dropped (counted) in backoff or over the queue's byte limit.
   */
  enqueueNotice(notice: PeerNotice): void {
    const bytes = notice.payload.byteLength + notice.topic.length + 8;
    if (this.closed || this.streamState === "backoff" || this.queuedBytes + bytes > this.options.maxQueuedBytes) {
      this.options.counters.messagesDropped += 1;
      return;
    }
    this.notices.push(notice);
    this.queuedBytes += bytes;
    this.scheduleFlush();
  }

  /**
   * Queues `message` for the next batch. Never blocks: drops it (counted)
   * when the link is in backoff or the queue is over its byte limit. The
   * batch leaves on the next turn of the event loop, or at once on
   * {@link flush}.
   */
  enqueue(message: Message, scheduleFlush = true): void {
    const coalesce = isCoalescable(message);
    const bytes = coalesce ? coalescedBytes(message) : estimateMessageBytes(message);
    if (this.closed || this.streamState === "backoff" || this.queuedBytes + bytes > this.options.maxQueuedBytes) {
      this.options.counters.messagesDropped += 1;
      return;
    }
    if (coalesce) {
      this.beats.push(message);
      this.beatBytes += bytes;
    } else this.queue.push(message);
    this.queuedBytes += bytes;
    if (scheduleFlush) this.scheduleFlush();
  }

  /** Turns the waiting heartbeats into coalesced notices (one per {@link heartbeatsPerNoticeMax}). */
  private coalesceBeats(): void {
    if (this.beats.length === 0) return;
    this.queuedBytes -= this.beatBytes;
    for (let start = 0; start < this.beats.length; start += heartbeatsPerNoticeMax) {
      const payload = encodeHeartbeats(this.beats.slice(start, start + heartbeatsPerNoticeMax));
      this.notices.push({ topic: heartbeatTopic, payload });
      this.queuedBytes += payload.byteLength + heartbeatTopic.length + 8;
    }
    this.options.counters.heartbeatsCoalesced += this.beats.length;
    this.beats = [];
    this.beatBytes = 0;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /**
   * Writes queued messages as batches until the queue is empty or the stream
   * pushes back. The transport calls it after queueing all the messages of
   * one Ready, which already form a batch (a turn saved on every hop).
   */
  flush(): void {
    const call = this.call;
    if (call !== null && !this.waitingForDrain) this.coalesceBeats();
    while (call !== null && !this.waitingForDrain && (this.queue.length > 0 || this.notices.length > 0)) {
      const batch = this.takeBatch();
      const notices = this.takeNotices();
      const bytes = encodeBatch(batch, notices);
      if (bytes.length > this.options.maxGrpcMessageBytes) {
        this.log.error({ bytes: bytes.length, messages: batch.length }, "batch over the gRPC message limit; dropped");
        this.options.counters.messagesDropped += batch.length + notices.length;
        continue;
      }
      const counters = this.options.counters;
      counters.messagesSent += batch.length + notices.length;
      counters.bytesSent += bytes.length;
      counters.batchesSent += 1;
      if (!call.write(bytes)) this.waitingForDrain = true;
    }
  }

  /** Removes the notices that go with the next batch, up to the batch byte and count limits. */
  private takeNotices(): PeerNotice[] {
    let bytes = 0;
    let count = 0;
    while (count < this.notices.length && count < this.options.maxNoticesPerBatch) {
      const size = this.notices[count]!.payload.byteLength + this.notices[count]!.topic.length + 8;
      if (count > 0 && bytes + size > this.options.maxBatchBytes) break;
      bytes += size;
      count += 1;
    }
    this.queuedBytes -= bytes;
    return this.notices.splice(0, count);
  }

  /** Removes the next batch from the queue: up to the batch byte and count limits (at least one message if any). */
  private takeBatch(): Message[] {
    let bytes = 0;
    let count = 0;
    while (count < this.queue.length && count < this.options.maxMessagesPerBatch) {
      const size = estimateMessageBytes(this.queue[count]!);
      if (count > 0 && bytes + size > this.options.maxBatchBytes) break;
      bytes += size;
      count += 1;
    }
    this.queuedBytes -= bytes;
    return this.queue.splice(0, count);
  }

  /** Sends a Snapshot message on the snapshot channel, its data read from `chunks`; reports the outcome through `onSnapshotStatus`. */
  sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): void {
    const report = (ok: boolean): void => this.options.onSnapshotStatus(this.options.peerId, message.groupId, ok);
    if (this.closed || this.snapshots.size >= this.options.maxSnapshotsInFlight) {
      this.log.warn({ group: message.groupId, inFlight: this.snapshots.size }, "snapshot not sent: too many in flight");
      this.options.counters.snapshotsFailed += 1;
      void chunks[Symbol.asyncIterator]().return?.();
      setImmediate(() => report(false));
      return;
    }
    this.snapshotClient ??= this.newClient();
    const transfer = startSnapshotTransfer(this.snapshotClient, message, chunks, {
      chunkBytes: this.options.snapshotChunkBytes, stallTimeoutMs: this.options.snapshotStallTimeoutMs, metadata: this.callMetadata(),
    });
    this.snapshots.add(transfer);
    this.log.info({ group: message.groupId, index: message.snapshot?.metadata.index }, "sending snapshot");
    transfer.done.then(
      (bytes) => {
        this.options.counters.snapshotsSent += 1;
        this.log.info({ group: message.groupId, bytes }, "snapshot sent");
        return true;
      },
      (error: unknown) => {
        this.options.counters.snapshotsFailed += 1;
        this.log.warn({ group: message.groupId, err: error }, "snapshot send failed");
        return false;
      },
    ).then((ok) => {
      this.snapshots.delete(transfer);
      if (!this.closed) report(ok);
    });
  }

  /** Stops the link: cancels the stream and transfers, drops the queue, closes the channels. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.dropQueue();
    this.call?.cancel();
    this.call = null;
    for (const transfer of this.snapshots) transfer.cancel();
    this.client.close();
    this.snapshotClient?.close();
  }

  /** True for messages that go through {@link sendSnapshot} instead of the stream. */
  static isSnapshot(message: Message): boolean {
    return message.type === MessageType.Snapshot;
  }
}
