import * as grpc from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EntryType, MessageType, message, type Message, type NodeId } from "../../src/raft/types.ts";
import { decodeStreamResponse, encodeBatch, encodeSnapshotChunk, encodeSnapshotHeader } from "../../src/transport/codec.ts";
import { insecureNodeIdMetadataKey, peerServerOptions, peerServicePaths } from "../../src/transport/peer-service.ts";
import type { PeerCredentials, TlsMaterial } from "../../src/transport/tls.ts";
import {
  makeTestCertificates,
  startNode,
  startNodes,
  startServer,
  stopServer,
  waitFor,
  type TestCertificates,
  type TestNode,
} from "./harness.ts";

let certs: TestCertificates;
const running: TestNode[] = [];
const cleanups: Array<() => void> = [];

beforeAll(async () => {
  certs = await makeTestCertificates();
});
afterAll(async () => {
  await certs.cleanup();
});
afterEach(async () => {
  for (const node of running.splice(0)) await node.stop();
  for (const cleanup of cleanups.splice(0)) cleanup();
});

const tlsOf = (id: NodeId): PeerCredentials => certs.homeservers.get(id)!;

async function nodes(ids: readonly NodeId[], credentialsOf = tlsOf, extra = {}): Promise<TestNode[]> {
  const started = await startNodes(ids, credentialsOf, extra);
  running.push(...started);
  return started;
}

function heartbeat(from: NodeId, to: NodeId, groupId: string, commit: number): Message {
  return message({ type: MessageType.Heartbeat, groupId, from, to, term: 1, commit });
}

function append(from: NodeId, to: NodeId, groupId: string, index: number, bytes: number): Message {
  return message({
    type: MessageType.Append, groupId, from, to, term: 2, logTerm: 2, index, commit: index,
    entries: [{ term: 2, index: index + 1, type: EntryType.Normal, data: new Uint8Array(bytes).fill(index % 251) }],
  });
}

/** A hand-made PeerService.Stream call, to send what a correct transport never would. */
function rawStream(address: string, material: TlsMaterial | null, nodeId?: string) {
  const credentials = material === null
    ? grpc.credentials.createInsecure()
    : grpc.credentials.createSsl(material.ca, material.key, material.cert, { checkServerIdentity: () => undefined });
  const client = new grpc.Client(address, credentials, material === null ? {} : { "grpc.ssl_target_name_override": "hs1" });
  const metadata = new grpc.Metadata();
  if (nodeId !== undefined) metadata.set(insecureNodeIdMetadataKey, nodeId);
  const identity = (b: Buffer) => b;
  const call = client.makeBidiStreamRequest<Buffer, Buffer>(peerServicePaths.stream, identity, identity, metadata);
  const responses: Array<{ nodeId: string; droppedBatches: number }> = [];
  let status: grpc.StatusObject | null = null;
  call.on("data", (b: Buffer) => responses.push(decodeStreamResponse(b)));
  call.on("error", () => {});
  call.on("status", (s: grpc.StatusObject) => { status = s; });
  cleanups.push(() => { call.cancel(); client.close(); });
  return { call, responses, status: () => status as grpc.StatusObject | null, write: (m: Message[] | Uint8Array) => call.write(Buffer.from(m instanceof Uint8Array ? m : encodeBatch(m))) };
}

describe("PeerTransport over mutual TLS", () => {
  it("three homeservers exchange batched messages of several groups, in order per sender", async () => {
    const all = await nodes(["hs1", "hs2", "hs3"]);
    const perPair = 200;
    // Like the driver's Ready loop: one send() per round, whose messages leave together.
    for (const node of all) {
      const out = [];
      for (let i = 0; i < perPair; i++) out.push(...all.filter((peer) => peer !== node).map((peer) => heartbeat(node.id, peer.id, `g${i % 5}`, i)));
      node.transport.send(out);
    }
    await waitFor("all messages", () => all.every((node) => node.received.length === 2 * perPair));
    for (const node of all) {
      for (const peer of all.filter((p) => p !== node)) {
        const commits = node.received.filter((r) => r.from === peer.id).map((r) => r.message.commit);
        expect(commits).toEqual([...Array(perPair).keys()]);
      }
      const counters = node.transport.counters();
      // Heartbeats travel coalesced: one notice per peer and flush instead of one message per group.
      expect(counters.heartbeatsCoalesced).toBe(2 * perPair);
      expect(counters.heartbeatsExpanded).toBe(2 * perPair);
      expect(counters.messagesSent).toBeLessThan(perPair / 10);
      expect(counters.batchesSent).toBeLessThan(perPair / 10); // sent in one call: batched
      expect(counters.messagesDropped).toBe(0);
    }
    await waitFor("all links connected", () => all.every((node) => [...node.transport.peerStates().values()].every((s) => s === "connected")));
  });

  it("splits batches at maxBatchBytes", async () => {
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf, { maxBatchBytes: 16 * 1024 });
    await waitFor("connected", () => a!.transport.peerStates().get("hs2") === "connected");
    a!.transport.send([...Array(64).keys()].map((i) => append("hs1", "hs2", "g", i, 1024)));
    await waitFor("64 appends", () => b!.received.length === 64);
    expect(b!.received.map((r) => r.message.index)).toEqual([...Array(64).keys()]);
    expect(a!.transport.counters().batchesSent).toBeGreaterThanOrEqual(4);
    expect(b!.received[5]!.message.entries[0]!.data).toEqual(new Uint8Array(1024).fill(5));
  });

  it("chunks a snapshot of several MB and reassembles it on the receiver (no sink given: in memory)", async () => {
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf, { snapshotChunkBytes: 256 * 1024 });
    const data = new Uint8Array(randomBytes(5 * 1024 * 1024 + 123));
    const confState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: [], learnersNext: [] };
    const snapshot = message({ type: MessageType.Snapshot, groupId: "g7", from: "hs1", to: "hs2", term: 4, snapshot: { metadata: { index: 900, term: 3, confState }, data } });
    a!.transport.send([snapshot, heartbeat("hs1", "hs2", "g7", 1)]);
    await waitFor("snapshot status", () => a!.snapshotStatus.length === 1, 10_000);
    expect(a!.snapshotStatus).toEqual([{ to: "hs2", groupId: "g7", ok: true }]);
    const got = b!.received.find((r) => r.message.type === MessageType.Snapshot)!.message;
    expect(got.snapshot!.metadata).toEqual(snapshot.snapshot!.metadata);
    expect(Buffer.from(got.snapshot!.data).equals(Buffer.from(data))).toBe(true);
    expect(b!.transport.counters().snapshotsReceived).toBe(1);
    expect(b!.logLines.some((l) => l["msg"] === "snapshot received")).toBe(true);
  });

  it("streams a snapshot as its source is read, only as fast as the receiver's sink takes it, and refuses one over the size limit", async () => {
    const chunkBytes = 256 * 1024;
    const chunkCount = 64; // 16 MiB
    const taken: number[] = [];
    let pulled = 0;
    let pulledWhenEightTaken = -1;
    const slowSink = () => ({
      add: async (chunk: Uint8Array) => {
        await new Promise((resolve) => setTimeout(resolve, 25));
        taken.push(chunk.byteLength);
        if (taken.length === 8) pulledWhenEightTaken = pulled;
      },
      finish: () => Promise.resolve(Uint8Array.of(taken.length)),
      abort: () => Promise.resolve(),
    });
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf, { snapshotChunkBytes: chunkBytes, openSnapshotSink: slowSink, maxSnapshotBytes: 20 * 1024 * 1024 });
    async function* source(count: number) {
      for (let i = 0; i < count; i++) {
        pulled += 1;
        yield new Uint8Array(chunkBytes).fill(i);
      }
    }
    const confState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: [], learnersNext: [] };
    const snapshot = message({ type: MessageType.Snapshot, groupId: "g8", from: "hs1", to: "hs2", term: 4, snapshot: { metadata: { index: 900, term: 3, confState }, data: new Uint8Array(0) } });
    a!.transport.sendSnapshot(snapshot, source(chunkCount));
    await waitFor("snapshot status", () => a!.snapshotStatus.length === 1, 20_000);
    expect(a!.snapshotStatus).toEqual([{ to: "hs2", groupId: "g8", ok: true }]);
    expect(taken).toHaveLength(chunkCount);
    // The message carries what the sink gave back, not the data.
    const got = b!.received.find((r) => r.message.type === MessageType.Snapshot)!.message;
    expect(got.snapshot!.data).toEqual(Uint8Array.of(chunkCount));
    // Backpressure: when the sink had taken 8 chunks, the sender had not read the source far ahead.
    expect(pulledWhenEightTaken).toBeGreaterThanOrEqual(8);
    expect(pulledWhenEightTaken).toBeLessThan(40);

    // Over maxSnapshotBytes: refused with RESOURCE_EXHAUSTED, and the sender reports the failure.
    taken.length = 0;
    a!.transport.sendSnapshot({ ...snapshot, groupId: "g9" }, source(100));
    await waitFor("second snapshot status", () => a!.snapshotStatus.length === 2, 20_000);
    expect(a!.snapshotStatus[1]).toEqual({ to: "hs2", groupId: "g9", ok: false });
    expect(b!.logLines.some((l) => l["msg"] === "snapshot from peer rejected" && l["code"] === "RESOURCE_EXHAUSTED")).toBe(true);
  });

  it("cancels a snapshot transfer during which no data moved for snapshotStallTimeoutMs, and the receiver drops what it took", async () => {
    let aborted = 0;
    const stuckSink = () => ({
      add: () => new Promise<void>((resolve) => setTimeout(resolve, 2000)), // a disk far slower than the stall timeout
      finish: () => Promise.resolve(new Uint8Array(0)),
      abort: () => {
        aborted += 1;
        return Promise.resolve();
      },
    });
    const [a] = await nodes(["hs1", "hs2"], tlsOf, { snapshotChunkBytes: 256 * 1024, openSnapshotSink: stuckSink, snapshotStallTimeoutMs: 500 });
    async function* source() {
      for (let i = 0; i < 200; i++) yield new Uint8Array(256 * 1024);
    }
    const confState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: [], learnersNext: [] };
    const started = Date.now();
    a!.transport.sendSnapshot(message({ type: MessageType.Snapshot, groupId: "g", from: "hs1", to: "hs2", term: 1, snapshot: { metadata: { index: 1, term: 1, confState }, data: new Uint8Array(0) } }), source());
    await waitFor("snapshot status", () => a!.snapshotStatus.length === 1, 10_000);
    expect(a!.snapshotStatus).toEqual([{ to: "hs2", groupId: "g", ok: false }]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    expect(a!.logLines.some((l) => l["msg"] === "snapshot send failed" && JSON.stringify(l).includes("stalled"))).toBe(true);
    await waitFor("receiver aborted its sink", () => aborted === 1, 5000);
  });

  it("ends a snapshot call whose sender goes silent, and drops what it staged", async () => {
    let aborted = 0;
    const sink = () => ({
      add: () => Promise.resolve(),
      finish: () => Promise.resolve(new Uint8Array(0)),
      abort: () => {
        aborted += 1;
        return Promise.resolve();
      },
    });
    // The receiver waits twice the sender's stall timeout: 400 ms here.
    const [, b] = await nodes(["hs1", "hs2"], tlsOf, { openSnapshotSink: sink, snapshotStallTimeoutMs: 200 });
    const material = certs.homeservers.get("hs1")!;
    const client = new grpc.Client(b!.address, grpc.credentials.createSsl(material.ca, material.key, material.cert, { checkServerIdentity: () => undefined }), { "grpc.ssl_target_name_override": "hs2" });
    const identity = (bytes: Buffer) => bytes;
    const confState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: [], learnersNext: [] };
    const status = new Promise<grpc.ServiceError | null>((resolve) => {
      const call = client.makeClientStreamRequest<Buffer, Buffer>(peerServicePaths.sendSnapshot, identity, identity, new grpc.Metadata(), (error) => resolve(error));
      call.write(encodeSnapshotHeader(message({ type: MessageType.Snapshot, groupId: "g", from: "hs1", to: "hs2", term: 1, snapshot: { metadata: { index: 3, term: 1, confState }, data: new Uint8Array(0) } })));
      call.write(encodeSnapshotChunk(new Uint8Array(1000)));
      // ... and nothing more, without ending the call.
    });
    cleanups.push(() => client.close());
    const error = await status;
    expect(error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitFor("the sink aborted", () => aborted === 1);
  });

  it("reports a failed snapshot transfer", async () => {
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf);
    await b!.stop();
    running.splice(running.indexOf(b!), 1);
    const confState = { voters: ["hs1"], votersOutgoing: [], learners: [], learnersNext: [] };
    a!.transport.send([message({ type: MessageType.Snapshot, groupId: "g", from: "hs1", to: "hs2", term: 1, snapshot: { metadata: { index: 1, term: 1, confState }, data: new Uint8Array(10) } })]);
    await waitFor("snapshot status", () => a!.snapshotStatus.length === 1);
    expect(a!.snapshotStatus).toEqual([{ to: "hs2", groupId: "g", ok: false }]);
  });

  /** hs1 (`a`) reaches hs2 (`b`); hs2 stops; resolves with hs2's port once hs1's link is down. */
  async function stopAfterLinkUp(a: TestNode, b: TestNode): Promise<number> {
    a.transport.send([heartbeat("hs1", "hs2", "g", 1)]);
    await waitFor("first message", () => b.received.length === 1);
    const port = Number(b.address.split(":")[1]);
    await b.stop();
    running.splice(running.indexOf(b), 1);
    await waitFor("link down", () => a.transport.peerStates().get("hs2") !== "connected");
    return port;
  }

  /**
   * hs1 (`a`) reaches hs2 (`b`); hs2 stops, and once hs1's link is down (`whileDown` then runs) hs2
   * restarts on the same port, its own link to hs1 fresh. Returns the restarted hs2.
   */
  async function restartAfterLinkDown(a: TestNode, b: TestNode, whileDown: () => void = () => {}): Promise<TestNode> {
    const port = await stopAfterLinkUp(a, b);
    whileDown();
    const { server } = await startServer(tlsOf("hs2"), port);
    const restarted = startNode("hs2", server, b.address, new Map([["hs1", a.address]]), tlsOf("hs2"));
    running.push(restarted);
    return restarted;
  }

  it("reconnects after the peer's server restarts", async () => {
    const unreachable: NodeId[] = [];
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf, { onUnreachable: (to: NodeId) => unreachable.push(to) });
    const b2 = await restartAfterLinkDown(a!, b!, () => expect(unreachable).toContain("hs2"));
    await waitFor("reconnected", () => a!.transport.peerStates().get("hs2") === "connected", 10_000);
    a!.transport.send([heartbeat("hs1", "hs2", "g", 2)]);
    await waitFor("message after restart", () => b2.received.length === 1);
    expect(b2.received[0]!.message.commit).toBe(2);
    expect(a!.transport.counters().reconnects).toBeGreaterThanOrEqual(1);
  });

  it("reconnects at once, not after its backoff, when the restarted peer opens its own stream to us", async () => {
    // hs1 waits 8 s between attempts; hs2 comes back within that and connects to hs1 first.
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf, { backoff: { minMs: 8000, maxMs: 8000 } });
    const b2 = await restartAfterLinkDown(a!, b!);
    const backAtMs = Date.now();
    b2.transport.send([heartbeat("hs2", "hs1", "g", 1)]);
    await waitFor("hs1 reconnected", () => a!.transport.peerStates().get("hs2") === "connected", 10_000);
    expect(Date.now() - backAtMs).toBeLessThan(4000); // well before its 8 s backoff ran out
    a!.transport.send([heartbeat("hs1", "hs2", "g", 2)]);
    await waitFor("message after restart", () => b2.received.length === 1);
  });

  it("a restarted peer that connects to us before it listens is reached within moments of listening, however long our backoff grew", async () => {
    // As a homeserver starts: its links open before its server listens, so our attempt on its hint is refused.
    const [a, b] = await nodes(["hs1", "hs2"], tlsOf, { backoff: { minMs: 20, maxMs: 8000 } });
    const port = await stopAfterLinkUp(a!, b!);
    await new Promise((resolve) => setTimeout(resolve, 3000)); // both our backoff and our channel's grow to seconds
    const server = new grpc.Server(peerServerOptions());
    const restarted = startNode("hs2", server, b!.address, new Map([["hs1", a!.address]]), tlsOf("hs2"), { backoff: { minMs: 20, maxMs: 8000 } });
    running.push(restarted);
    restarted.transport.send([heartbeat("hs2", "hs1", "g", 1)]);
    await waitFor("hs2 streams to hs1", () => restarted.transport.peerStates().get("hs1") === "connected");
    await new Promise((resolve) => setTimeout(resolve, 300));
    await startServer(tlsOf("hs2"), port, server);
    const listeningAtMs = Date.now();
    await waitFor("hs1 reconnected", () => a!.transport.peerStates().get("hs2") === "connected", 10_000);
    expect(Date.now() - listeningAtMs).toBeLessThan(500);
  });

  it("refuses a client whose certificate comes from another CA", async () => {
    const [a] = await nodes(["hs1"]);
    const raw = rawStream(a!.address, certs.rogue);
    raw.write([heartbeat("hs2", "hs1", "g", 1)]);
    await waitFor("refusal", () => raw.status() !== null);
    expect(raw.status()!.code).toBe(grpc.status.UNAVAILABLE); // the TLS handshake fails
    expect(a!.received).toHaveLength(0);
    // A whole transport with that certificate never connects either.
    const { server, address } = await startServer(certs.rogue);
    const rogue = startNode("hs2", server, address, new Map([["hs1", a!.address]]), certs.rogue);
    running.push(rogue);
    rogue.transport.send([heartbeat("hs2", "hs1", "g", 1)]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(rogue.transport.peerStates().get("hs1")).not.toBe("connected");
    expect(a!.received).toHaveLength(0);
  });

  it("refuses a certificate of an unknown homeserver, and an operator certificate", async () => {
    const [a] = await nodes(["hs1", "hs2"]);
    const unknown = rawStream(a!.address, certs.unknownHomeserver);
    unknown.write([heartbeat("hs9", "hs1", "g", 1)]);
    const operator = rawStream(a!.address, certs.operator);
    await waitFor("refusals", () => unknown.status() !== null && operator.status() !== null);
    expect(unknown.status()!.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(operator.status()!.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(a!.received).toHaveLength(0);
    expect(a!.transport.counters().callsRefused).toBe(2);
  });

  it("drops messages whose from is not the certificate's homeserver, and keeps the stream", async () => {
    const [a] = await nodes(["hs1", "hs2", "hs3"]);
    const raw = rawStream(a!.address, certs.homeservers.get("hs2")!);
    raw.write([heartbeat("hs3", "hs1", "g", 1), heartbeat("hs2", "hs1", "g", 2)]);
    raw.write([heartbeat("hs2", "hs1", "g", 3)]);
    await waitFor("genuine messages", () => a!.received.length === 2);
    expect(a!.received.map((r) => [r.from, r.message.commit])).toEqual([["hs2", 2], ["hs2", 3]]);
    expect(a!.transport.counters().messagesForged).toBe(1);
    expect(a!.logLines.some((l) => l["msg"] === "message with a forged sender dropped" && l["claimedFrom"] === "hs3")).toBe(true);
    expect(raw.status()).toBeNull();
  });

  it("drops a malformed batch with a log line while the stream keeps serving", async () => {
    const [a] = await nodes(["hs1", "hs2"]);
    const raw = rawStream(a!.address, certs.homeservers.get("hs2")!);
    raw.write(new Uint8Array([0x0a, 0x05, 0xff, 0xff, 0xff]));
    raw.write([message({ type: MessageType.Append, groupId: "g", from: "hs2", to: "hs1", term: 1, index: 4, entries: [{ term: 1, index: 9, type: EntryType.Normal, data: new Uint8Array(1) }] })]);
    raw.write([heartbeat("hs2", "hs1", "g", 7)]);
    await waitFor("valid message after malformed ones", () => a!.received.length === 1);
    expect(a!.received[0]!.message.commit).toBe(7);
    expect(a!.transport.counters().batchesMalformed).toBe(2);
    expect(a!.logLines.filter((l) => l["msg"] === "malformed batch from peer dropped")).toHaveLength(2);
    await waitFor("drop reports", () => raw.responses.some((r) => r.droppedBatches === 2));
    expect(raw.responses[0]).toEqual({ nodeId: "hs1", droppedBatches: 0 });
    expect(raw.status()).toBeNull();
  });

  it("does not connect to a server that presents another homeserver's certificate", async () => {
    const [a, , c] = await nodes(["hs1", "hs2", "hs3"]);
    a!.transport.setPeer("hs2", c!.address); // hs2's address now reaches hs3
    a!.transport.send([heartbeat("hs1", "hs2", "g", 1)]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(a!.transport.peerStates().get("hs2")).not.toBe("connected");
    expect(c!.received).toHaveLength(0);
  });

  it("drops messages to peers it does not know, and refuses removed peers", async () => {
    const [a, b] = await nodes(["hs1", "hs2"]);
    a!.transport.send([heartbeat("hs1", "hs7", "g", 1)]);
    expect(a!.transport.counters().messagesDropped).toBe(1);
    await waitFor("connected", () => b!.transport.peerStates().get("hs1") === "connected");
    a!.transport.removePeer("hs2");
    await waitFor("hs2's reconnection refused", () => a!.transport.counters().callsRefused >= 1);
    b!.transport.send([heartbeat("hs2", "hs1", "g", 1)]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(a!.received).toHaveLength(0);
    expect(a!.transport.peerStates().has("hs2")).toBe(false);
  });
});

describe("PeerTransport in insecure mode", () => {
  it("exchanges messages in plaintext, naming the sender in metadata", async () => {
    const insecure = (): PeerCredentials => ({ kind: "insecure" });
    const [a, b] = await nodes(["hs1", "hs2"], insecure);
    a!.transport.send([heartbeat("hs1", "hs2", "g", 1)]);
    b!.transport.send([heartbeat("hs2", "hs1", "g", 2)]);
    await waitFor("both messages", () => a!.received.length === 1 && b!.received.length === 1);
    expect(a!.received[0]!.from).toBe("hs2");
    const anonymous = rawStream(a!.address, null);
    const forged = rawStream(a!.address, null, "hs2");
    forged.write([heartbeat("hs3", "hs1", "g", 9)]);
    await waitFor("anonymous refused", () => anonymous.status() !== null);
    expect(anonymous.status()!.code).toBe(grpc.status.UNAUTHENTICATED);
    await waitFor("forged dropped", () => a!.transport.counters().messagesForged === 1);
  });
});
