/**
 * Counters of a peer transport, for metrics and tests. Monotonic over the
 * transport's life; read a copy with `PeerTransport.counters()`.
 */

/** Totals over all peers. "Dropped" messages are recovered by Raft's retransmission. */
export interface TransportCounters {
  readonly messagesSent: number;
  readonly bytesSent: number;
  readonly batchesSent: number;
  /** Outbound messages not sent: queue over its byte limit, link in backoff, too large, or transport closed. */
  readonly messagesDropped: number;
  readonly messagesReceived: number;
  readonly bytesReceived: number;
  readonly batchesReceived: number;
  /** Inbound batches that failed decoding or validation, dropped whole. */
  readonly batchesMalformed: number;
  /** Inbound messages whose `from` is not the authenticated sender. */
  readonly messagesForged: number;
  /** Inbound messages whose `to` is not this homeserver. */
  readonly messagesMisaddressed: number;
  /** Inbound streams and snapshot calls refused: no identity, or not a known homeserver. */
  readonly callsRefused: number;
  /** Outbound streams re-opened after a failure. */
  readonly reconnects: number;
  readonly snapshotsSent: number;
  readonly snapshotsFailed: number;
  readonly snapshotsReceived: number;
  readonly snapshotsRejected: number;
  /** Heartbeats and responses sent inside coalesced notices (each notice also counts once in `messagesSent`). */
  readonly heartbeatsCoalesced: number;
  /** Heartbeats and responses received inside coalesced notices, expanded for the cores. */
  readonly heartbeatsExpanded: number;
}

/** The transport's own writable copy. */
export type MutableCounters = { -readonly [K in keyof TransportCounters]: number };

/** All counters at zero. */
export function zeroCounters(): MutableCounters {
  return {
    messagesSent: 0, bytesSent: 0, batchesSent: 0, messagesDropped: 0,
    messagesReceived: 0, bytesReceived: 0, batchesReceived: 0,
    batchesMalformed: 0, messagesForged: 0, messagesMisaddressed: 0, callsRefused: 0,
    reconnects: 0, snapshotsSent: 0, snapshotsFailed: 0, snapshotsReceived: 0, snapshotsRejected: 0,
    heartbeatsCoalesced: 0, heartbeatsExpanded: 0,
  };
}
