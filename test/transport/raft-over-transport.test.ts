/**
 * The real Raft core over the real transport: three homeservers, two groups,
 * mutual TLS on 127.0.0.1. Checks that every message the core produces passes
 * the codec's validation, that replication works through batched streams, and
 * that a follower cut off past the leader's compaction catches up through a
 * chunked snapshot and reportSnapshot.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/raft/memory-storage.ts";
import { RawNode, defaultRaftConfig } from "../../src/raft/raw-node.ts";
import { EntryType, Role, type Entry, type GroupId, type Message, type NodeId } from "../../src/raft/types.ts";
import { makeTestCertificates, startServer, startNode, waitFor, type TestCertificates, type TestNode } from "./harness.ts";

interface Replica {
  readonly node: RawNode;
  readonly storage: MemoryStorage;
  readonly applied: Entry[];
  snapshotIndex: number;
}

/**
 * Homeservers cut off from the others. The cut is made where messages are
 * sent as well as where they arrive: a message sent before the cut may still
 * be on its way (under load, for hundreds of ms), and one sent to a cut-off
 * homeserver must never reach it after the cut is lifted (it would carry
 * entries the test wants that homeserver to miss).
 */
const cutOff = new Set<NodeId>();

/** One homeserver: its transport and one Raft replica per group, driven by a 10 ms tick. */
class Homeserver {
  readonly groups = new Map<GroupId, Replica>();
  transportNode!: TestNode;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly id: NodeId, ids: readonly NodeId[], groupIds: readonly GroupId[], seed: number) {
    let s = seed;
    const random = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const groupId of groupIds) {
      const storage = new MemoryStorage(ids);
      const node = new RawNode(defaultRaftConfig(id, groupId, storage, random));
      this.groups.set(groupId, { node, storage, applied: [], snapshotIndex: 0 });
    }
  }

  start(): void {
    this.timer = setInterval(() => {
      for (const replica of this.groups.values()) replica.node.tick();
      this.handleReadies();
    }, 10);
  }

  receive(messages: Message[]): void {
    for (const message of messages) {
      if (cutOff.has(this.id) || cutOff.has(message.from)) continue;
      this.groups.get(message.groupId)?.node.step(message);
    }
    this.handleReadies();
  }

  handleReadies(): void {
    for (const replica of this.groups.values()) {
      for (let round = 0; round < 100 && replica.node.hasReady(); round++) {
        const ready = replica.node.ready();
        if (ready.snapshot !== null) {
          replica.storage.applySnapshot(ready.snapshot);
          replica.snapshotIndex = ready.snapshot.metadata.index;
        }
        replica.storage.append(ready.entries);
        if (ready.hardState !== null) replica.storage.setHardState(ready.hardState);
        this.transportNode.transport.send(ready.messages.filter((m) => !cutOff.has(this.id) && !cutOff.has(m.to)));
        replica.applied.push(...ready.committedEntries.filter((e) => e.type === EntryType.Normal && e.data.length > 0));
        replica.node.advance();
      }
    }
  }

  leaderOf(groupId: GroupId): NodeId {
    return this.groups.get(groupId)!.node.status().leader;
  }

  stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    return this.transportNode.stop();
  }
}

/** What a failed wait needs to be understood: each replica's Raft status and each transport's log lines. */
function printDiagnostics(all: readonly Homeserver[], groupId: GroupId): void {
  for (const hs of all) {
    const status = hs.groups.get(groupId)!.node.status();
    console.error(`${hs.id} ${JSON.stringify(status, (_key, value: unknown) => (value instanceof Map ? Object.fromEntries(value) : value))}`);
    console.error(`${hs.id} counters ${JSON.stringify(hs.transportNode.transport.counters())}`);
    for (const line of hs.transportNode.logLines) console.error(`${hs.id} log ${JSON.stringify(line)}`);
  }
}

let certs: TestCertificates;
const homeservers: Homeserver[] = [];
beforeAll(async () => {
  certs = await makeTestCertificates();
});
afterAll(async () => {
  for (const hs of homeservers) await hs.stop();
  await certs.cleanup();
});

describe("Raft over the peer transport", () => {
  it("elects, replicates two groups, and catches a follower up by snapshot", async () => {
    const ids = ["hs1", "hs2", "hs3"];
    const groupIds = ["g1", "g2"];
    const servers = await Promise.all(ids.map((id) => startServer(certs.homeservers.get(id)!)));
    ids.forEach((id, i) => {
      const hs = new Homeserver(id, ids, groupIds, i + 1);
      const peers = new Map(ids.flatMap((peer, j) => (peer === id ? [] : [[peer, servers[j]!.address] as const])));
      hs.transportNode = startNode(id, servers[i]!.server, servers[i]!.address, peers, certs.homeservers.get(id)!, {
        onMessages: (_from, messages) => hs.receive(messages),
        onSnapshotStatus: (to, groupId, ok) => hs.groups.get(groupId)?.node.reportSnapshot(to, ok),
        onUnreachable: (to) => { for (const replica of hs.groups.values()) replica.node.reportUnreachable(to); },
        snapshotChunkBytes: 64 * 1024,
      });
      homeservers.push(hs);
    });
    for (const hs of homeservers) hs.start();
    const byId = (id: NodeId) => homeservers.find((hs) => hs.id === id)!;
    const leaderOf = (groupId: GroupId) => homeservers.find((hs) => hs.groups.get(groupId)!.node.status().role === Role.Leader);
    await waitFor("leaders of both groups", () => groupIds.every((g) => leaderOf(g) !== undefined), 10_000);

    // Replicate to everyone.
    for (const groupId of groupIds) {
      const leader = leaderOf(groupId)!;
      for (let i = 0; i < 20; i++) expect(leader.groups.get(groupId)!.node.propose(new TextEncoder().encode(`${groupId}-${i}`)).ok).toBe(true);
      leader.handleReadies();
    }
    await waitFor("20 entries applied everywhere", () => homeservers.every((hs) => groupIds.every((g) => hs.groups.get(g)!.applied.length === 20)), 10_000);

    // Cut off a follower of g1, write and compact past it, then let it back: it needs a snapshot.
    const leader = leaderOf("g1")!;
    const lagging = byId(ids.find((id) => id !== leader.id)!);
    cutOff.add(lagging.id);
    const replica = leader.groups.get("g1")!;
    for (let i = 20; i < 40; i++) replica.node.propose(new TextEncoder().encode(`g1-${i}`));
    leader.handleReadies();
    // Both homeservers that took the entries compact past them: whichever leads once the cut is lifted
    // (under load, leadership may move) must send a snapshot.
    const uptodate = homeservers.filter((hs) => hs !== lagging);
    await waitFor("40 entries applied on both connected homeservers", () => uptodate.every((hs) => hs.groups.get("g1")!.applied.length === 40), 10_000);
    const appliedIndex = replica.applied[replica.applied.length - 1]!.index;
    const stateBytes = new Uint8Array(3 * 1024 * 1024).fill(42);
    for (const hs of uptodate) {
      const { storage, node } = hs.groups.get("g1")!;
      storage.createSnapshot(appliedIndex, node.confState(), stateBytes);
      storage.compact(appliedIndex);
    }
    cutOff.delete(lagging.id);
    try {
      await waitFor("snapshot installed on the lagging follower", () => lagging.groups.get("g1")!.snapshotIndex === appliedIndex, 15_000);
    } catch (error) {
      printDiagnostics(homeservers, "g1");
      throw error;
    }
    expect(lagging.groups.get("g1")!.storage.snapshot().data.length).toBe(stateBytes.length);
    const snapshotsSent = () => uptodate.reduce((n, hs) => n + hs.transportNode.transport.counters().snapshotsSent, 0);
    await waitFor("snapshot acknowledged", () => snapshotsSent() >= 1);
    const received = homeservers.reduce((n, hs) => n + hs.transportNode.transport.counters().batchesMalformed, 0);
    expect(received).toBe(0);
    // And it keeps replicating after the snapshot (through whichever homeserver leads now).
    await waitFor("an entry proposed after the snapshot", () => leaderOf("g1")?.groups.get("g1")!.node.propose(new TextEncoder().encode("after")).ok === true, 10_000);
    leaderOf("g1")!.handleReadies();
    await waitFor("entry after the snapshot", () => lagging.groups.get("g1")!.applied.some((e) => new TextDecoder().decode(e.data) === "after"), 10_000);
  });
});
