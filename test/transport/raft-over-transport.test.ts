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

/** One homeserver: its transport and one Raft replica per group, driven by a 10 ms tick. */
class Homeserver {
  readonly groups = new Map<GroupId, Replica>();
  blocked = false;
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
    if (this.blocked) return;
    for (const message of messages) this.groups.get(message.groupId)?.node.step(message);
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
        if (!this.blocked) this.transportNode.transport.send(ready.messages);
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
    lagging.blocked = true;
    const replica = leader.groups.get("g1")!;
    for (let i = 20; i < 40; i++) replica.node.propose(new TextEncoder().encode(`g1-${i}`));
    leader.handleReadies();
    await waitFor("leader applied 40", () => replica.applied.length === 40, 10_000);
    const appliedIndex = replica.applied[replica.applied.length - 1]!.index;
    const stateBytes = new Uint8Array(3 * 1024 * 1024).fill(42);
    replica.storage.createSnapshot(appliedIndex, replica.node.confState(), stateBytes);
    replica.storage.compact(appliedIndex);
    lagging.blocked = false;
    await waitFor("snapshot installed on the lagging follower", () => lagging.groups.get("g1")!.snapshotIndex === appliedIndex, 15_000);
    expect(lagging.groups.get("g1")!.storage.snapshot().data.length).toBe(stateBytes.length);
    await waitFor("snapshot acknowledged", () => leader.transportNode.transport.counters().snapshotsSent >= 1);
    const received = homeservers.reduce((n, hs) => n + hs.transportNode.transport.counters().batchesMalformed, 0);
    expect(received).toBe(0);
    // And it keeps replicating after the snapshot.
    replica.node.propose(new TextEncoder().encode("after"));
    leader.handleReadies();
    await waitFor("entry after the snapshot", () => lagging.groups.get("g1")!.applied.some((e) => new TextDecoder().decode(e.data) === "after"), 10_000);
  });
});
