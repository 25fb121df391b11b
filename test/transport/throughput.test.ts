/**
 * A quick measurement, not a benchmark with assertions on time: messages per
 * second over one TLS peer stream, with one 1 KiB entry per Append message,
 * sent in waves the way a node's Ready loop would. Both ends run in this one
 * process, so they share a CPU thread.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EntryType, MessageType, message, type Message } from "../../src/raft/types.ts";
import { makeTestCertificates, startNode, startNodes, startServer, waitFor, type TestCertificates, type TestNode } from "./harness.ts";

let certs: TestCertificates;
let nodes: TestNode[] = [];
beforeAll(async () => {
  certs = await makeTestCertificates();
});
afterAll(async () => {
  for (const node of nodes) await node.stop();
  await certs.cleanup();
});

function append(index: number, payload: Uint8Array): Message {
  return message({
    type: MessageType.Append, groupId: `g${index % 8}`, from: "hs1", to: "hs2", term: 1, logTerm: 1, index, commit: index,
    entries: [{ term: 1, index: index + 1, type: EntryType.Normal, data: payload }],
  });
}

describe("peer stream throughput (printed, not asserted)", () => {
  it("sends 1 KiB appends in waves over one stream", async () => {
    nodes = await startNodes(["hs1", "hs2"], (id) => certs.homeservers.get(id)!);
    const [a, b] = nodes as [TestNode, TestNode];
    await waitFor("connected", () => a.transport.peerStates().get("hs2") === "connected");
    const payload = new Uint8Array(1024).fill(7);
    for (const wave of [16, 256]) {
      const total = 10_000;
      const before = b.received.length;
      const started = performance.now();
      let sent = 0;
      while (sent < total) {
        // Keep at most 4 waves ahead of the receiver, as Raft's inflight limit would.
        await waitFor("receiver to catch up", () => sent - (b.received.length - before) <= 4 * wave, 30_000);
        const batch = [];
        for (let i = 0; i < wave && sent < total; i++, sent++) batch.push(append(sent, payload));
        a.transport.send(batch);
        await new Promise((resolve) => setImmediate(resolve));
      }
      await waitFor("all received", () => b.received.length - before === total, 60_000);
      const seconds = (performance.now() - started) / 1000;
      console.log(`peer stream, 1 KiB entries, ${wave} messages per send: ${Math.round(total / seconds)} messages/s (${total} in ${seconds.toFixed(2)} s)`);
    }
    const counters = a.transport.counters();
    console.log(`batches ${counters.batchesSent}, messages ${counters.messagesSent}, mean ${(counters.messagesSent / counters.batchesSent).toFixed(1)} per batch, dropped ${counters.messagesDropped}`);
    expect(counters.messagesDropped).toBe(0);
  });
});

describe("peer stream throughput across processes (printed, not asserted)", () => {
  it("sends 1 KiB appends in waves to a receiver in another process", async () => {
    const warmup = 10_000;
    const measured = 30_000;
    const child = spawn(process.execPath, ["--import", "tsx", new URL("./receiver-process.ts", import.meta.url).pathname], {
      env: { ...process.env, TLS_DIR: certs.dir, EXPECT: String(warmup + measured) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    const events: string[] = [];
    lines.on("line", (line) => events.push(line));
    try {
      await waitFor("receiver ready", () => events.some((e) => e.startsWith("ready ")), 20_000);
      const address = events.find((e) => e.startsWith("ready "))!.slice(6);
      const { server, address: own } = await startServer(certs.homeservers.get("hs1")!);
      const sender = startNode("hs1", server, own, new Map([["hs2", address]]), certs.homeservers.get("hs1")!);
      nodes.push(sender);
      await waitFor("connected", () => sender.transport.peerStates().get("hs2") === "connected", 10_000);
      const payload = new Uint8Array(1024).fill(7);
      const sendWaves = async (from: number, count: number, wave: number): Promise<void> => {
        for (let sent = from; sent < from + count; ) {
          const batch = [];
          for (let i = 0; i < wave && sent < from + count; i++, sent++) batch.push(append(sent, payload));
          sender.transport.send(batch);
          await new Promise((resolve) => setImmediate(resolve));
        }
      };
      await sendWaves(0, warmup, 256);
      await waitFor("warm-up received", () => events.includes(`at ${warmup}`), 60_000);
      const batchesBefore = sender.transport.counters().batchesSent;
      const started = performance.now();
      await sendWaves(warmup, measured, 256);
      await waitFor("receiver done", () => events.some((e) => e.startsWith("done ")), 60_000);
      const seconds = (performance.now() - started) / 1000;
      const counters = sender.transport.counters();
      console.log(`cross-process peer stream, 1 KiB entries, waves of 256: ${Math.round(measured / seconds)} messages/s (${measured} in ${seconds.toFixed(2)} s, ${counters.batchesSent - batchesBefore} batches)`);
      expect(counters.messagesDropped).toBe(0);
    } finally {
      child.kill();
    }
  });
});

describe("peer round trip across processes (printed, not asserted)", () => {
  it("measures ping-pong latency of one heartbeat over the two streams", async () => {
    const pings = 500;
    const { server, address: own } = await startServer(certs.homeservers.get("hs1")!);
    const child = spawn(process.execPath, ["--import", "tsx", new URL("./receiver-process.ts", import.meta.url).pathname], {
      env: { ...process.env, TLS_DIR: certs.dir, EXPECT: String(pings * 100), ECHO_TO: own },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    const events: string[] = [];
    lines.on("line", (line) => events.push(line));
    try {
      await waitFor("receiver ready", () => events.some((e) => e.startsWith("ready ")), 20_000);
      const address = events.find((e) => e.startsWith("ready "))!.slice(6);
      const sender = startNode("hs1", server, own, new Map([["hs2", address]]), certs.homeservers.get("hs1")!);
      nodes.push(sender);
      await waitFor("connected", () => sender.transport.peerStates().get("hs2") === "connected", 10_000);
      // The echo link from hs2 may still be in backoff: ping until the first answer comes back.
      const ping = (i: number) => sender.transport.send([message({ type: MessageType.Heartbeat, groupId: "g", from: "hs1", to: "hs2", term: 1, commit: i })]);
      await waitFor("echo path up", () => { ping(0); return sender.received.length > 0; }, 10_000);
      await new Promise((resolve) => setTimeout(resolve, 200)); // let stray echoes of the probes arrive
      const rttsMs: number[] = [];
      for (let i = 0; i < pings; i++) {
        const before = sender.received.length;
        const started = performance.now();
        ping(i);
        const deadline = started + 5_000;
        while (sender.received.length === before) {
          if (performance.now() > deadline) throw new Error(`no echo of ping ${i} within 5 s`);
          await new Promise((resolve) => setImmediate(resolve));
        }
        rttsMs.push(performance.now() - started);
      }
      const sorted = rttsMs.slice(pings / 10).sort((x, y) => x - y); // skip warm-up
      const at = (q: number) => sorted[Math.floor(q * (sorted.length - 1))]!.toFixed(3);
      console.log(`cross-process round trip of one message over TLS streams: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms`);
    } finally {
      child.kill();
    }
  });
});
