/**
 * A quick measurement, not a benchmark with assertions on time: messages per
 * second over one TLS peer stream, with one 1 KiB entry per Append message,
 * sent in waves the way a node's Ready loop would. Both ends run in this one
 * process, so they share a CPU thread.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EntryType, MessageType, message, type Message } from "../../src/raft/types.ts";
import { makeTestCertificates, startNodes, waitFor, type TestCertificates, type TestNode } from "./harness.ts";

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
    for (const wave of [1, 16, 256]) {
      const total = wave === 1 ? 3_000 : 20_000;
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
