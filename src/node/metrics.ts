/**
 * Prometheus metrics of a homeserver, served over HTTP at /metrics: Raft
 * activity, fsync latency and peer stream state.
 */
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { DriverObserver } from "../multiraft/raft-driver.ts";
import type { TransportCounters } from "../transport/counters.ts";
import type { PeerTransport } from "../transport/peer-transport.ts";

/** A group's kind for metric labels: the part of its id before the first "/" ("cluster", "channel", ...). */
export function groupKind(groupId: string): string {
  const slash = groupId.indexOf("/");
  return slash < 0 ? groupId : groupId.slice(0, slash);
}

/** The metrics of one homeserver process, in their own registry. */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly proposals = new Counter({ name: "epochd_proposals_total", help: "Proposals submitted to Raft groups", labelNames: ["group"], registers: [this.registry] });
  readonly committed = new Counter({ name: "epochd_committed_entries_total", help: "Committed entries applied", labelNames: ["group"], registers: [this.registry] });
  readonly applyLag = new Gauge({ name: "epochd_apply_lag_entries", help: "Committed entries not yet applied (groups without a kind prefix, such as the cluster group)", labelNames: ["group"], registers: [this.registry] });
  readonly elections = new Counter({ name: "epochd_elections_total", help: "Elections this homeserver started", labelNames: ["group"], registers: [this.registry] });
  readonly leaderChanges = new Counter({ name: "epochd_leader_changes_total", help: "Times this homeserver became leader", labelNames: ["group"], registers: [this.registry] });
  readonly fsyncSeconds = new Histogram({
    name: "epochd_fsync_latency_seconds",
    help: "Latency of synced RocksDB batch writes",
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers: [this.registry],
  });
  /** Where a SubmitCommit's time goes, per stage (see {@link CommitStage}). */
  readonly commitStageSeconds = new Histogram({
    name: "epochd_commit_stage_seconds",
    help: "Time of each stage of a SubmitCommit served here: admit (size, caller, rate checks), order (proposed until applied here), certify (until a quorum co-signed), settle (until a changed homeserver set votes)",
    labelNames: ["stage"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  });
  readonly peerConnected = new Gauge({ name: "epochd_peer_stream_connected", help: "1 when the outbound stream to a peer is connected", labelNames: ["peer"], registers: [this.registry] });
  readonly inboxFull = new Counter({
    name: "epochd_inbox_full_total",
    help: "Items that did not fit a device's inbox bound: direct messages refused (kind=direct), channel events replaced by a gap marker (kind=channel)",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  readonly inboxEntries = new Gauge({ name: "epochd_inbox_entries", help: "Entries held in the inboxes of the devices this homeserver sponsors", registers: [this.registry] });
  readonly groups = new Gauge({
    name: "epochd_raft_groups",
    help: "Raft groups hosted here (state=hosted), of them ticking (state=awake), unloaded from memory while quiet (state=hibernating), and loaded but without a known leader for 30 s or more (state=leaderless: a lost quorum, or a stuck group)",
    labelNames: ["state"],
    registers: [this.registry],
  });

  readonly readyRounds = new Counter({ name: "epochd_raft_ready_rounds_total", help: "Rounds of the Raft Ready loop (each persists the Readies of all groups with work in one synced batch)", registers: [this.registry] });
  readonly groupLoads = new Counter({ name: "epochd_raft_group_loads_total", help: "Hibernating Raft groups loaded back into memory", labelNames: ["group"], registers: [this.registry] });
  readonly peerMessages = new Counter({ name: "epochd_peer_messages_total", help: "Peer messages (Raft messages and notices; a coalesced heartbeat notice counts once)", labelNames: ["direction"], registers: [this.registry] });
  readonly peerHeartbeats = new Counter({ name: "epochd_peer_heartbeats_total", help: "Heartbeats and heartbeat responses carried inside coalesced notices", labelNames: ["direction"], registers: [this.registry] });
  readonly peerBatches = new Counter({ name: "epochd_peer_batches_total", help: "Batches written to or read from the peer streams", labelNames: ["direction"], registers: [this.registry] });
  readonly peerBytes = new Counter({ name: "epochd_peer_bytes_total", help: "Bytes of peer batches", labelNames: ["direction"], registers: [this.registry] });
  readonly peerDropped = new Counter({ name: "epochd_peer_messages_dropped_total", help: "Outbound peer messages not sent (queue full, link in backoff, too large); Raft retransmits", registers: [this.registry] });
  readonly peerRefused = new Counter({
    name: "epochd_peer_refused_total",
    help: "Inbound peer input refused: batches that failed decoding (kind=malformed), messages with a forged sender or another recipient, calls from unknown homeservers",
    labelNames: ["kind"],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "epochd_process_" });
  }

  /**
   * Hooks for the Raft driver. The `group` label is the group's kind (the
   * cluster group, or all channel groups together), not its id: one series
   * per channel would grow with the channels.
   */
  observer(): DriverObserver {
    return {
      onProposal: (groupId) => this.proposals.inc({ group: groupKind(groupId) }),
      onCommitted: (groupId, entries) => this.committed.inc({ group: groupKind(groupId) }, entries),
      onApplyLag: (groupId, entries) => {
        if (groupKind(groupId) === groupId) this.applyLag.set({ group: groupId }, entries);
      },
      onEvent: (groupId, event) => {
        if (event.kind === "became-candidate") this.elections.inc({ group: groupKind(groupId) });
        if (event.kind === "became-leader") this.leaderChanges.inc({ group: groupKind(groupId) });
      },
      onReadyRound: () => this.readyRounds.inc(),
      onGroupLoaded: (groupId) => this.groupLoads.inc({ group: groupKind(groupId) }),
    };
  }

  /** Reads how many Raft groups are hosted, awake and hibernating at every scrape. */
  watchGroups(counts: () => { readonly groups: number; readonly awake: number; readonly unloaded: number; readonly leaderless: number }): void {
    this.collectors.push(() => {
      const now = counts();
      this.groups.set({ state: "hosted" }, now.groups);
      this.groups.set({ state: "awake" }, now.awake);
      this.groups.set({ state: "hibernating" }, now.unloaded);
      this.groups.set({ state: "leaderless" }, now.leaderless);
    });
  }

  private readonly collectors: Array<() => void> = [];

  /** Reads the peer stream states and the transport's counters from `transport` at every scrape. */
  watchTransport(transport: PeerTransport): void {
    let last = transport.counters();
    this.collectors.push(() => {
      this.peerConnected.reset();
      for (const [peer, state] of transport.peerStates()) this.peerConnected.set({ peer }, state === "connected" ? 1 : 0);
      const now = transport.counters();
      const grown = (key: keyof TransportCounters) => Math.max(0, now[key] - last[key]);
      this.peerMessages.inc({ direction: "sent" }, grown("messagesSent"));
      this.peerMessages.inc({ direction: "received" }, grown("messagesReceived"));
      this.peerHeartbeats.inc({ direction: "sent" }, grown("heartbeatsCoalesced"));
      this.peerHeartbeats.inc({ direction: "received" }, grown("heartbeatsExpanded"));
      this.peerBatches.inc({ direction: "sent" }, grown("batchesSent"));
      this.peerBatches.inc({ direction: "received" }, grown("batchesReceived"));
      this.peerBytes.inc({ direction: "sent" }, grown("bytesSent"));
      this.peerBytes.inc({ direction: "received" }, grown("bytesReceived"));
      this.peerDropped.inc(grown("messagesDropped"));
      this.peerRefused.inc({ kind: "malformed" }, grown("batchesMalformed"));
      this.peerRefused.inc({ kind: "forged" }, grown("messagesForged"));
      this.peerRefused.inc({ kind: "misaddressed" }, grown("messagesMisaddressed"));
      this.peerRefused.inc({ kind: "unknown-caller" }, grown("callsRefused"));
      last = now;
    });
  }

  /** Counts full inboxes, and reads the entries held at every scrape. */
  watchInbox(totalEntries: () => number): { onFull(kind: "direct" | "channel"): void } {
    this.collectors.push(() => this.inboxEntries.set(totalEntries()));
    return { onFull: (kind) => this.inboxFull.inc({ kind }) };
  }

  /** Serves /metrics on `hostPort`; resolves once listening. */
  async serve(hostPort: string): Promise<Server> {
    const [host, port] = splitHostPort(hostPort);
    const server = createServer((request, response) => {
      if (request.url !== "/metrics") {
        response.writeHead(404).end();
        return;
      }
      for (const collect of this.collectors) collect();
      this.registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        () => response.writeHead(500).end(),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    return server;
  }
}

/** The samples of Prometheus exposition text, `name{labels}` -> value: for tools reading a homeserver's /metrics. */
export function parseMetricsText(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** Splits "host:port". */
export function splitHostPort(hostPort: string): [string, number] {
  const at = hostPort.lastIndexOf(":");
  return [hostPort.slice(0, at), Number(hostPort.slice(at + 1))];
}
