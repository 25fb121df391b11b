/**
 * The server half of PeerService: authenticates each caller as a known
 * homeserver, decodes and validates its batches, drops (and logs) anything
 * malformed, forged or misaddressed while the stream keeps serving, and
 * takes chunked snapshots into a sink (see snapshot-receiver.ts).
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Message, NodeId } from "../raft/types.ts";
import {
  CodecError,
  decodeStreamRequest,
  type PeerNotice,
  encodeSendSnapshotResponse,
  encodeStreamResponse,
  type CodecLimits,
} from "./codec.ts";
import type { MutableCounters } from "./counters.ts";
import { authenticatedIdentity } from "./credentials.ts";
import { decodeHeartbeats, heartbeatTopic } from "./heartbeat-codec.ts";
import { insecureNodeIdMetadataKey } from "./peer-service.ts";
import { memorySnapshotSink, SnapshotReceiver, type Refusal, type SnapshotSinkFactory } from "./snapshot-receiver.ts";

/** What the inbound side needs from the transport. */
export interface InboundOptions {
  readonly selfId: NodeId;
  readonly insecure: boolean;
  readonly logger: Logger;
  readonly counters: MutableCounters;
  readonly limits: CodecLimits;
  /** Largest snapshot data accepted, in bytes. */
  readonly maxSnapshotBytes: number;
  /** A snapshot call during which the sender sent nothing this long is ended (DEADLINE_EXCEEDED). Default 60 s. */
  readonly snapshotStallTimeoutMs?: number;
  /** Where snapshot data goes as it arrives (storage, in a homeserver); in memory when not given. */
  readonly openSnapshotSink?: SnapshotSinkFactory;
  readonly isKnownPeer: (id: NodeId) => boolean;
  readonly onMessages: (from: NodeId, messages: Message[]) => void;
  readonly onNotices: (from: NodeId, notices: PeerNotice[]) => void;
  /** An authenticated peer opened a stream to us: it is up (again). */
  readonly onPeerStream?: (from: NodeId) => void;
}

type AnyServerCall = grpc.ServerDuplexStream<Buffer, Buffer> | grpc.ServerReadableStream<Buffer, Buffer>;

/** Serves PeerService calls. One instance per transport; `close()` ends its open streams. */
export class InboundService {
  private readonly streams = new Map<grpc.ServerDuplexStream<Buffer, Buffer>, NodeId>();
  private closed = false;

  constructor(private readonly options: InboundOptions) {}

  /** The handlers to register with `grpc.Server.addService(peerServiceDefinition, ...)`. */
  handlers(): grpc.UntypedServiceImplementation {
    return {
      stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.serveStream(call),
      sendSnapshot: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        this.serveSnapshot(call, callback),
    };
  }

  /**
   * The homeserver id of the caller, or why it is refused: no verified
   * certificate naming a homeserver (UNAUTHENTICATED) or a homeserver this
   * one does not know (PERMISSION_DENIED).
   */
  private authenticate(call: AnyServerCall): { id: NodeId } | Refusal {
    let id: string | undefined;
    if (this.options.insecure) {
      const value = call.metadata.get(insecureNodeIdMetadataKey)[0];
      id = typeof value === "string" && value.length > 0 ? value : undefined;
      if (id === undefined) return { code: grpc.status.UNAUTHENTICATED, details: `missing ${insecureNodeIdMetadataKey} metadata` };
    } else {
      const identity = authenticatedIdentity(call);
      if (identity === null) return { code: grpc.status.UNAUTHENTICATED, details: "no verified certificate" };
      if (identity.role !== "homeserver") return { code: grpc.status.PERMISSION_DENIED, details: `${identity.role} certificates may not call the peer service` };
      id = identity.id;
    }
    if (id === this.options.selfId || !this.options.isKnownPeer(id)) {
      return { code: grpc.status.PERMISSION_DENIED, details: `homeserver ${id} is not a known peer` };
    }
    return { id };
  }

  private refuse(call: AnyServerCall, refusal: Refusal): void {
    this.options.counters.callsRefused += 1;
    this.options.logger.warn({ peerAddress: call.getPeer(), code: grpc.status[refusal.code], reason: refusal.details }, "peer call refused");
  }

  private serveStream(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    const auth = this.authenticate(call);
    if ("code" in auth || this.closed) {
      const refusal = "code" in auth ? auth : { code: grpc.status.UNAVAILABLE, details: "transport closed" };
      this.refuse(call, refusal);
      call.emit("error", { code: refusal.code, details: refusal.details });
      return;
    }
    const peerId = auth.id;
    const log = this.options.logger.child({ peer: peerId });
    let droppedBatches = 0;
    this.streams.set(call, peerId);
    call.write(encodeStreamResponse(this.options.selfId, 0));
    this.options.onPeerStream?.(peerId);
    call.on("data", (bytes: Buffer) => {
      if (!this.receiveBatch(peerId, bytes, log)) {
        droppedBatches += 1;
        call.write(encodeStreamResponse(this.options.selfId, droppedBatches));
      }
    });
    call.on("end", () => call.end());
    call.on("error", () => {}); // a cancelled or broken stream; the client reconnects
    call.on("close", () => this.streams.delete(call));
    log.debug("inbound peer stream opened");
  }

  /** Handles one batch; false when it was dropped as malformed. */
  private receiveBatch(peerId: NodeId, bytes: Buffer, log: Logger): boolean {
    const counters = this.options.counters;
    let messages: Message[];
    let notices: PeerNotice[];
    let beats: Message[];
    try {
      ({ messages, notices } = decodeStreamRequest(bytes, this.options.limits));
      ({ beats, notices } = this.expandHeartbeats(peerId, notices));
    } catch (error) {
      if (!(error instanceof CodecError)) throw error;
      counters.batchesMalformed += 1;
      log.warn({ code: error.code, reason: error.message, bytes: bytes.length }, "malformed batch from peer dropped");
      return false;
    }
    counters.batchesReceived += 1;
    counters.bytesReceived += bytes.length;
    const accepted = messages.filter((message) => this.acceptable(peerId, message, log));
    counters.messagesReceived += accepted.length;
    counters.heartbeatsExpanded += beats.length;
    // Coalesced heartbeats are built with from = the authenticated peer and to = us: acceptable by construction.
    for (const beat of beats) accepted.push(beat);
    if (accepted.length > 0) this.options.onMessages(peerId, accepted);
    if (notices.length > 0) this.options.onNotices(peerId, notices);
    return true;
  }

  /** Expands coalesced heartbeat notices (throws CodecError on a bad one); returns the other notices untouched. */
  private expandHeartbeats(peerId: NodeId, notices: PeerNotice[]): { beats: Message[]; notices: PeerNotice[] } {
    if (!notices.some((n) => n.topic === heartbeatTopic)) return { beats: [], notices };
    const beats: Message[] = [];
    const others: PeerNotice[] = [];
    for (const notice of notices) {
      if (notice.topic !== heartbeatTopic) others.push(notice);
      else for (const beat of decodeHeartbeats(notice.payload, peerId, this.options.selfId, this.options.limits)) beats.push(beat);
    }
    return { beats, notices: others };
  }

  /** True when `message` really comes from the authenticated `peerId` and is meant for this homeserver. */
  private acceptable(peerId: NodeId, message: Message, log: Logger): boolean {
    if (message.from !== peerId) {
      this.options.counters.messagesForged += 1;
      log.warn({ claimedFrom: message.from, group: message.groupId, type: message.type }, "message with a forged sender dropped");
      return false;
    }
    if (message.to !== this.options.selfId) {
      this.options.counters.messagesMisaddressed += 1;
      log.warn({ to: message.to, group: message.groupId, type: message.type }, "message for another homeserver dropped");
      return false;
    }
    return true;
  }

  private serveSnapshot(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const auth = this.authenticate(call);
    if ("code" in auth) {
      this.refuse(call, auth);
      callback({ code: auth.code, details: auth.details });
      return;
    }
    const log = this.options.logger.child({ peer: auth.id });
    const receiver = new SnapshotReceiver(auth.id, { ...this.options, openSink: this.options.openSnapshotSink ?? memorySnapshotSink });
    let finished = false;
    // A sender that stops sending without ending the call (a process paused or hung) is cut off, so
    // that what it staged goes.
    const stallTimeoutMs = this.options.snapshotStallTimeoutMs ?? 60_000;
    let lastRequestMs = Date.now();
    const stallCheck = setInterval(() => {
      if (Date.now() - lastRequestMs > stallTimeoutMs) fail({ code: grpc.status.DEADLINE_EXCEEDED, details: `no snapshot data for ${stallTimeoutMs} ms` });
    }, Math.max(10, Math.min(1000, stallTimeoutMs / 4)));
    const fail = (refusal: Refusal): void => {
      if (finished) return;
      finished = true;
      clearInterval(stallCheck);
      this.options.counters.snapshotsRejected += 1;
      log.warn({ code: grpc.status[refusal.code], reason: refusal.details }, "snapshot from peer rejected");
      void receiver.abort().catch((error: unknown) => log.warn({ err: error }, "staged snapshot not deleted"));
      callback({ code: refusal.code, details: refusal.details });
    };
    // Requests are taken one at a time: the call is paused while the sink writes a chunk, which
    // holds back the sender through HTTP/2 flow control.
    let taken: Promise<void> = Promise.resolve();
    const take = (step: () => Promise<void>): void => {
      taken = taken.then(step).catch((error: unknown) => {
        log.warn({ err: error }, "snapshot from peer not stored");
        fail({ code: grpc.status.UNAVAILABLE, details: "the snapshot could not be stored" });
      });
    };
    call.on("data", (bytes: Buffer) => {
      if (finished) return;
      lastRequestMs = Date.now();
      call.pause();
      take(async () => {
        if (finished) return;
        const refusal = await receiver.add(bytes);
        lastRequestMs = Date.now(); // a slow sink is not a stalled sender
        if (refusal !== null) fail(refusal);
        else call.resume();
      });
    });
    call.on("end", () => take(async () => {
      if (finished) return;
      const result = await receiver.finish();
      if ("code" in result) return fail(result);
      finished = true;
      clearInterval(stallCheck);
      this.options.counters.snapshotsReceived += 1;
      const metadata = result.snapshot?.metadata;
      log.info({ group: result.groupId, index: metadata?.index, term: metadata?.term, bytes: receiver.bytes }, "snapshot received");
      try {
        this.options.onMessages(auth.id, [result]);
      } catch (error) {
        log.error({ err: error }, "snapshot from peer not delivered");
        callback({ code: grpc.status.INTERNAL, details: "the snapshot could not be delivered" });
        return;
      }
      callback(null, encodeSendSnapshotResponse(receiver.bytes));
    }));
    call.on("error", () => {
      if (finished) return;
      finished = true;
      clearInterval(stallCheck);
      take(() => receiver.abort());
    });
    call.on("cancelled", () => {
      if (finished) return;
      finished = true;
      clearInterval(stallCheck);
      take(() => receiver.abort());
    });
  }

  /** Whether `peerId` holds a stream open to us. */
  hasStreamFrom(peerId: NodeId): boolean {
    for (const id of this.streams.values()) if (id === peerId) return true;
    return false;
  }

  /** Ends the open inbound streams of `peerId` (after it was removed: its reconnection is then refused). */
  disconnect(peerId: NodeId): void {
    for (const [call, id] of this.streams) {
      if (id !== peerId) continue;
      this.streams.delete(call);
      call.end();
    }
  }

  /** Ends every open inbound stream (status OK; the peers reconnect elsewhere or later). */
  close(): void {
    this.closed = true;
    for (const call of this.streams.keys()) call.end();
    this.streams.clear();
  }
}
