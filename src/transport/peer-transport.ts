/**
 * The Raft transport between homeservers: one long-lived outbound stream per
 * peer carrying batched messages of all groups, a server half that receives
 * every peer's stream, and chunked snapshot transfers. Mutual TLS names each
 * peer; a message whose `from` is not the authenticated peer is dropped.
 *
 * Delivery is best effort, as Raft expects: `send` never blocks and drops
 * (counting) what it cannot queue; Raft retransmits.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { GroupId, Message, NodeId, Transport } from "../raft/types.ts";
import { assert } from "../raft/assert.ts";
import { defaultBackoffPolicy, type BackoffPolicy } from "./backoff.ts";
import { defaultCodecLimits, type CodecLimits, type PeerNotice } from "./codec.ts";

export type { PeerNotice } from "./codec.ts";
import { zeroCounters, type MutableCounters, type TransportCounters } from "./counters.ts";
import { InboundService } from "./inbound.ts";
import { PeerLink, type PeerStreamState } from "./peer-link.ts";
import type { SnapshotSinkFactory } from "./snapshot-receiver.ts";
import { defaultMaxGrpcMessageBytes, peerServiceDefinition } from "./peer-service.ts";
import type { PeerCredentials } from "./tls.ts";

export type { PeerStreamState } from "./peer-link.ts";

/** Options of a {@link PeerTransport}. Only the first six are required. */
export interface PeerTransportOptions {
  readonly selfId: NodeId;
  /** Peer homeserver id -> host:port of its peer gRPC server. */
  readonly peers: ReadonlyMap<NodeId, string>;
  readonly credentials: PeerCredentials;
  readonly logger: Logger;
  /**
   * Receives every accepted inbound message, grouped per arriving batch,
   * all from the authenticated peer `from`. A Snapshot message comes once
   * its transfer ended, carrying what the snapshot sink gave back for its data.
   */
  readonly onMessages: (from: NodeId, messages: Message[]) => void;
  /** Notices (non-Raft messages) from an authenticated peer, in the order sent. */
  readonly onNotices?: (from: NodeId, notices: PeerNotice[]) => void;
  /** Called when a snapshot transfer ends, so the node can call `reportSnapshot` on the group. */
  readonly onSnapshotStatus?: (to: NodeId, groupId: GroupId, ok: boolean) => void;
  /** Called when the stream to a peer fails, so the node can call `reportUnreachable` on its groups. */
  readonly onUnreachable?: (to: NodeId) => void;
  /**
   * Soft size of one outbound batch (one message may exceed it alone).
   * Default 256 KiB: across two processes on this machine, 128-512 KiB
   * batches moved 1 KiB entries about 1.5x faster than 1 MiB ones (HTTP/2's
   * 64 KiB stream window makes huge batches wait on window updates).
   */
  readonly maxBatchBytes?: number;
  /** Bytes queued per peer before `send` drops. Default 64 MiB. */
  readonly maxQueuedBytesPerPeer?: number;
  /** Size of one snapshot data chunk. Default 1 MiB. */
  readonly snapshotChunkBytes?: number;
  /** Where a snapshot's data goes as it arrives (a homeserver stages it in storage). Default: memory, whole. */
  readonly openSnapshotSink?: SnapshotSinkFactory;
  /**
   * Largest snapshot accepted from a peer. Default 16 GiB: snapshot data goes
   * to a sink as it arrives (to disk, in a homeserver), so this bounds what a
   * peer may make us store, not memory.
   */
  readonly maxSnapshotBytes?: number;
  /** A snapshot transfer during which no data moved this long is cancelled (a transfer has no overall deadline: it grows with the state). Default 30 s. */
  readonly snapshotStallTimeoutMs?: number;
  /** Concurrent snapshot transfers per peer. Default 2. */
  readonly maxSnapshotsInFlightPerPeer?: number;
  /** gRPC max send and receive message size of the links; the server must allow as much (peerServerOptions). Default 64 MiB. */
  readonly maxGrpcMessageBytes?: number;
  /** Validation bounds of inbound messages. */
  readonly codecLimits?: CodecLimits;
  readonly backoff?: BackoffPolicy;
  /** Jitter source in [0, 1). Default Math.random (the transport is I/O, not the deterministic core). */
  readonly random?: () => number;
  /** Whether an authenticated homeserver may send to us. Default: it is one of `peers` (as they are now). */
  readonly isKnownPeer?: (id: NodeId) => boolean;
}

async function* wholeData(data: Uint8Array | undefined): AsyncGenerator<Uint8Array> {
  if (data !== undefined && data.byteLength > 0) yield data;
}

/** Transport between homeservers over gRPC; see the module comment. */
export class PeerTransport implements Transport {
  private readonly links = new Map<NodeId, PeerLink>();
  private readonly addresses = new Map<NodeId, string>();
  private readonly mutableCounters: MutableCounters = zeroCounters();
  private readonly inbound: InboundService;
  private registered = false;
  private closed = false;

  constructor(private readonly options: PeerTransportOptions) {
    const limits = options.codecLimits ?? defaultCodecLimits;
    assert((options.maxBatchBytes ?? 1) > 0 && (options.snapshotChunkBytes ?? 1) > 0, "batch and chunk sizes must be positive");
    assert((options.maxBatchBytes ?? 0) < (options.maxGrpcMessageBytes ?? defaultMaxGrpcMessageBytes), "maxBatchBytes must be below maxGrpcMessageBytes");
    assert(limits.maxEntryBytes < (options.maxGrpcMessageBytes ?? defaultMaxGrpcMessageBytes), "maxEntryBytes must be below maxGrpcMessageBytes");
    this.inbound = new InboundService({
      selfId: options.selfId,
      insecure: options.credentials.kind === "insecure",
      logger: options.logger,
      counters: this.mutableCounters,
      limits,
      maxSnapshotBytes: options.maxSnapshotBytes ?? 16 * 1024 ** 3,
      ...(options.openSnapshotSink === undefined ? {} : { openSnapshotSink: options.openSnapshotSink }),
      // Twice the sender's: a sender gives up first, and ends the call itself.
      snapshotStallTimeoutMs: 2 * (options.snapshotStallTimeoutMs ?? 30_000),
      isKnownPeer: options.isKnownPeer ?? ((id) => this.addresses.has(id)),
      onMessages: options.onMessages,
      onNotices: (from, notices) => options.onNotices?.(from, notices),
      // A peer that restarted reaches us first: our link to it may be waiting out a backoff of up to
      // seconds, and until it reconnects our votes and answers to it are dropped.
      onPeerStream: (from) => this.links.get(from)?.reconnectNow(),
    });
    for (const [id, address] of options.peers) this.setPeer(id, address);
  }

  /** Adds PeerService to the homeserver's peer gRPC server (create it with `peerServerOptions()`). Once. */
  register(server: grpc.Server): void {
    assert(!this.registered, "PeerTransport.register called twice");
    this.registered = true;
    server.addService(peerServiceDefinition, this.inbound.handlers());
  }

  /**
   * Queues messages for their destinations and writes them at once, one
   * batch per peer (the messages of one Ready belong together). Never blocks.
   */
  send(messages: readonly Message[]): void {
    const touched = new Set<PeerLink>();
    for (const message of messages) {
      const link = this.links.get(message.to);
      if (link === undefined || this.closed) {
        this.mutableCounters.messagesDropped += 1;
        continue;
      }
      if (PeerLink.isSnapshot(message)) link.sendSnapshot(message, wholeData(message.snapshot?.data));
      else {
        link.enqueue(message, false);
        touched.add(link);
      }
    }
    for (const link of touched) link.flush();
  }

  /**
   * Sends a Snapshot message to its destination, its data read from `chunks`
   * as the transfer goes (on a channel of its own, not the message stream).
   * The outcome comes back through `onSnapshotStatus`.
   */
  sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): void {
    const link = this.links.get(message.to);
    if (link === undefined || this.closed) {
      this.mutableCounters.messagesDropped += 1;
      void chunks[Symbol.asyncIterator]().return?.();
      return;
    }
    link.sendSnapshot(message, chunks);
  }

  /**
   * Queues a notice (an application message, not a Raft message) for peer
   * `to`; it goes out with the next batch. Best effort: dropped, and counted,
   * when the peer is unknown or its link is down, like a Raft message.
   */
  sendNotice(to: NodeId, notice: PeerNotice): void {
    const link = this.links.get(to);
    if (link === undefined || this.closed) {
      this.mutableCounters.messagesDropped += 1;
      return;
    }
    link.enqueueNotice(notice);
  }

  /** Adds a peer, or moves it to a new address (its stream restarts). */
  setPeer(id: NodeId, address: string): void {
    assert(id !== this.options.selfId, "a homeserver is not its own peer");
    if (this.closed || this.addresses.get(id) === address) return;
    this.links.get(id)?.close();
    this.addresses.set(id, address);
    this.links.set(id, new PeerLink({
      selfId: this.options.selfId,
      peerId: id,
      address,
      credentials: this.options.credentials,
      logger: this.options.logger,
      counters: this.mutableCounters,
      maxBatchBytes: this.options.maxBatchBytes ?? 256 * 1024,
      maxMessagesPerBatch: (this.options.codecLimits ?? defaultCodecLimits).maxMessagesPerBatch,
      maxNoticesPerBatch: (this.options.codecLimits ?? defaultCodecLimits).maxNoticesPerBatch,
      maxQueuedBytes: this.options.maxQueuedBytesPerPeer ?? 64 * 1024 * 1024,
      maxGrpcMessageBytes: this.options.maxGrpcMessageBytes ?? defaultMaxGrpcMessageBytes,
      snapshotChunkBytes: this.options.snapshotChunkBytes ?? 1024 * 1024,
      snapshotStallTimeoutMs: this.options.snapshotStallTimeoutMs ?? 30_000,
      maxSnapshotsInFlight: this.options.maxSnapshotsInFlightPerPeer ?? 2,
      backoff: this.options.backoff ?? defaultBackoffPolicy,
      random: this.options.random ?? Math.random,
      onUnreachable: (to) => this.options.onUnreachable?.(to),
      onSnapshotStatus: (to, groupId, ok) => this.options.onSnapshotStatus?.(to, groupId, ok),
      peerStreamsToUs: () => this.inbound.hasStreamFrom(id),
    }));
  }

  /**
   * Removes a peer: closes its link and ends its inbound streams. With the
   * default `isKnownPeer`, its new calls are refused from now on.
   */
  removePeer(id: NodeId): void {
    this.links.get(id)?.close();
    this.links.delete(id);
    this.addresses.delete(id);
    this.inbound.disconnect(id);
  }

  /** The state of each peer's outbound stream. */
  peerStates(): ReadonlyMap<NodeId, PeerStreamState> {
    return new Map([...this.links].map(([id, link]) => [id, link.state]));
  }

  /** The address of each peer. */
  peerAddresses(): ReadonlyMap<NodeId, string> {
    return new Map(this.addresses);
  }

  /** A copy of the counters, for metrics. */
  counters(): TransportCounters {
    return { ...this.mutableCounters };
  }

  /**
   * Stops sending and receiving: closes every link and ends open inbound
   * streams. The gRPC server itself belongs to the caller, who shuts it down.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const link of this.links.values()) link.close();
    this.links.clear();
    this.inbound.close();
    // Let cancellations and stream ends reach the event loop before callers shut servers down.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
