/**
 * Three RaftDrivers in one process over real RocksDB (fsync off), linked by a
 * loopback transport that sends heartbeats through the coalescing codec as
 * the peer transport does: many groups elect, go quiet (nothing ticks), wake
 * on a proposal, and leader balancing spreads leadership.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { encodePut } from "../../src/kv/kv-command.ts";
import { planLeaderTransfers } from "../../src/multiraft/leader-balancer.ts";
import { KvStateMachine } from "../../src/multiraft/kv-state-machine.ts";
import { collectChunks } from "../../src/multiraft/pairs-snapshot.ts";
import { nextHibernateDelayMs, RaftDriver, type DriverTransport } from "../../src/multiraft/raft-driver.ts";
import { defaultRaftConfig } from "../../src/raft/raft.ts";
import { message, MessageType, type Message, type NodeId } from "../../src/raft/types.ts";
import { CorruptionError, parseStagedDescriptor, StorageEngine, type GroupStore } from "../../src/storage/storage-engine.ts";
import { defaultCodecLimits } from "../../src/transport/codec.ts";
import { decodeHeartbeats, encodeHeartbeats, isCoalescable } from "../../src/transport/heartbeat-codec.ts";

const ids = ["hs1", "hs2", "hs3"];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Delivers each driver's messages to the others on the next turn; heartbeats go coalesced and are counted. */
class Loopback {
  readonly drivers = new Map<NodeId, RaftDriver>();
  /** Homeservers cut off: nothing they send or are sent is delivered. */
  readonly isolated = new Set<NodeId>();
  coalescedBeats = 0;
  otherMessages = 0;
  /** When set, snapshot data goes into the receiver's storage as a peer transport's sink puts it, and the message carries its descriptor. */
  stageIn: Map<NodeId, StorageEngine> | undefined;
  /** Snapshot messages sent, by receiver. */
  readonly snapshotsTo = new Map<NodeId, number>();
  /** Read index requests a follower sent its leader, by sender. */
  readonly readIndexRequests = new Map<NodeId, number>();

  transportOf(from: NodeId): DriverTransport {
    const transport: DriverTransport = {
      // Snapshot data is read whole here and goes as the message's data, as a transport without storage delivers it.
      sendSnapshot: (message, chunks) => {
        this.snapshotsTo.set(message.to, (this.snapshotsTo.get(message.to) ?? 0) + 1);
        const withData = (data: Uint8Array) => transport.send([{ ...message, snapshot: message.snapshot === null ? null : { ...message.snapshot, data } }]);
        const engine = this.stageIn?.get(message.to);
        if (engine === undefined) {
          void collectChunks(chunks).then(withData);
          return;
        }
        const staging = engine.stageSnapshot(message.groupId);
        void (async () => {
          for await (const chunk of chunks) await staging.add(chunk);
          withData(await staging.finish());
        })();
      },
      send: (messages: readonly Message[]) => {
        const byPeer = new Map<NodeId, Message[]>();
        for (const m of messages) byPeer.set(m.to, [...(byPeer.get(m.to) ?? []), m]);
        for (const m of messages) if (m.type === MessageType.ReadIndex) this.readIndexRequests.set(from, (this.readIndexRequests.get(from) ?? 0) + 1);
        for (const [to, batch] of byPeer) {
          const beats = batch.filter(isCoalescable);
          const rest = batch.filter((m) => !isCoalescable(m));
          this.coalescedBeats += beats.length;
          this.otherMessages += rest.length;
          const expanded = beats.length === 0 ? [] : decodeHeartbeats(encodeHeartbeats(beats), from, to, defaultCodecLimits);
          if (this.isolated.has(from) || this.isolated.has(to)) continue;
          setImmediate(() => this.drivers.get(to)?.receive(from, [...rest, ...expanded]));
        }
      },
    };
    return transport;
  }
}

interface ClusterOptions {
  readonly balance?: boolean;
  readonly balanceEveryMs?: (id: NodeId) => number;
  readonly hibernateAfterMs?: number;
  readonly loadedGroupsMax?: number;
  readonly snapshotEveryEntries?: number;
  readonly electionTimeoutTicks?: number;
  readonly tickIntervalMs?: number;
  readonly lazyCommitNotices?: boolean;
  readonly commitNoticeDelayMs?: number;
  /** Each state machine's restore from a snapshot first waits this long (a large snapshot's). */
  readonly restoreDelayMs?: number;
  readonly snapshotEveryBytes?: number;
  readonly snapshotKeepBytes?: number;
  /** Homeservers whose driver is expected to fail: their fatal error is kept in `fatal` instead of thrown. */
  readonly mayFail?: readonly NodeId[];
  readonly leaderlessAfterMs?: number;
}

/** What every state machine of a cluster did, with when: to check what ran while what else did. */
const machineLog: Array<{ readonly what: "apply" | "restore-stored" | "after-restore-start" | "after-restore-end"; readonly owner: NodeId; readonly groupId: string; readonly atMs: number }> = [];

/** A key-value state machine whose restore takes `delayMs` longer, as a large snapshot's does; it logs what it does. */
class SlowRestoreKv extends KvStateMachine {
  restoresStarted = 0;
  /** Restores that stopped writing, done or not. */
  restoresEnded = 0;
  /** Taking up a restored state fails (as a crash during it would end it). */
  failTakeUp = false;
  private readonly groupId: string;
  constructor(store: GroupStore, private readonly delayMs: number, private readonly owner: NodeId) {
    super(store);
    this.groupId = store.groupId;
  }

  private note(what: (typeof machineLog)[number]["what"]): void {
    machineLog.push({ what, owner: this.owner, groupId: this.groupId, atMs: performance.now() });
  }

  override apply(entries: Parameters<KvStateMachine["apply"]>[0]): ReturnType<KvStateMachine["apply"]> {
    this.note("apply");
    return super.apply(entries);
  }

  override async restoreStored(chunks: AsyncIterable<Uint8Array>): Promise<void> {
    this.restoresStarted += 1;
    try {
      await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      await super.restoreStored(chunks);
      this.note("restore-stored");
    } finally {
      this.restoresEnded += 1;
    }
  }

  override async afterRestore(): Promise<void> {
    if (this.failTakeUp) throw new Error("crashed while taking up the restored state");
    this.note("after-restore-start");
    await new Promise((resolve) => setTimeout(resolve, 200)); // as a reload of a large state takes a while
    this.note("after-restore-end");
  }
}

async function startCluster(groupCount: number, options: ClusterOptions = {}) {
  const { balance = false, balanceEveryMs = () => 50, hibernateAfterMs = 0, loadedGroupsMax = 0, snapshotEveryEntries = 1000, electionTimeoutTicks = 10, tickIntervalMs = 10, lazyCommitNotices = false } = options;
  const net = new Loopback();
  machineLog.length = 0; // each cluster's own
  const storesOf = new Map<NodeId, Map<string, GroupStore>>();
  const machines = new Map<NodeId, Map<string, KvStateMachine>>();
  const engines = new Map<NodeId, StorageEngine>();
  const dirs = new Map<NodeId, string>();
  const fatal = new Map<NodeId, unknown>();
  for (const id of ids) {
    const dir = mkdtempSync(join(tmpdir(), "epochd-groups-"));
    dirs.set(id, dir);
    const engine = await StorageEngine.open(dir, { sync: false });
    engines.set(id, engine);
    const driver = new RaftDriver({
      selfId: id, engine, transport: net.transportOf(id), logger: pino({ level: "silent" }),
      raft: { ...defaultRaftConfig(id, "", null as never, Math.random), electionTimeoutTicks, heartbeatTicks: 1 },
      tickIntervalMs, random: Math.random, snapshotEveryEntries, snapshotKeepEntries: Math.min(100, snapshotEveryEntries - 1),
      ...(options.commitNoticeDelayMs === undefined ? {} : { commitNoticeDelayMs: options.commitNoticeDelayMs }),
      ...(options.snapshotEveryBytes === undefined ? {} : { snapshotEveryBytes: options.snapshotEveryBytes }),
      ...(options.snapshotKeepBytes === undefined ? {} : { snapshotKeepBytes: options.snapshotKeepBytes }),
      clientAddressOf: () => "",
      onFatal: (error) => {
        if (options.mayFail?.includes(id) !== true) throw error;
        fatal.set(id, error);
      },
      ...(balance ? { balanceLeadersEveryMs: balanceEveryMs(id), balanceTransfersMax: 10 } : {}),
      hibernateAfterMs,
      loadedGroupsMax,
      ...(options.leaderlessAfterMs === undefined ? {} : { leaderlessAfterMs: options.leaderlessAfterMs }),
    });
    net.drivers.set(id, driver);
    const stores = await engine.createGroups(Array.from({ length: groupCount }, (_, n) => `g${n}`), ids);
    const own = new Map<string, KvStateMachine>();
    storesOf.set(id, new Map(stores.map((store) => [store.groupId, store])));
    for (const store of stores) {
      const machine = options.restoreDelayMs === undefined ? new KvStateMachine(store) : new SlowRestoreKv(store, options.restoreDelayMs, id);
      own.set(store.groupId, machine);
      const groupId = store.groupId;
      const hibernation = {
        load: async () => {
          const reopenedStore = await engine.openGroup(groupId);
          const reopened = new KvStateMachine(reopenedStore);
          own.set(groupId, reopened);
          return { store: reopenedStore, stateMachine: reopened };
        },
        mayUnload: () => true,
        unloaded: () => void own.delete(groupId),
      };
      await driver.addGroup(store, machine, { quiesce: true, balanceLeadership: balance, lazyCommitNotices, ...(hibernateAfterMs > 0 || loadedGroupsMax > 0 ? { hibernation } : {}) });
    }
    machines.set(id, own);
    cleanups.push(async () => {
      await driver.stop();
      await engine.close();
      rmSync(dir, { recursive: true, force: true });
    });
  }
  return { net, machines, engines, dirs, fatal, stores: storesOf, driver: (id: NodeId) => net.drivers.get(id)! };
}

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function leaderCounts(c: Awaited<ReturnType<typeof startCluster>>, groupCount: number): Map<NodeId, number> {
  const counts = new Map<NodeId, number>();
  for (let n = 0; n < groupCount; n++) {
    const leader = c.driver("hs1").leaderOf(`g${n}`);
    if (leader !== "") counts.set(leader, (counts.get(leader) ?? 0) + 1);
  }
  return counts;
}

/** Compaction interval of the restore tests: a follower cut off for 5 times this many entries needs a snapshot. */
const restoreTestEvery = 20;

/**
 * Starts a cluster of one group (compacting every {@link restoreTestEvery} entries), cuts a follower
 * off while its leader writes 5 x that many entries and compacts, then lets it back, so that it gets a
 * snapshot. `before` runs on the chosen follower before it is cut off. Returns the cluster, the
 * follower and its (slowly restoring) state machine; with `untilRestoreStarted`, once the restore began.
 */
async function followerSentSnapshot(options: ClusterOptions, { before, untilRestoreStarted = false }: { before?: (behind: NodeId, c: Awaited<ReturnType<typeof startCluster>>) => void; untilRestoreStarted?: boolean } = {}) {
  const c = await startCluster(1, { snapshotEveryEntries: restoreTestEvery, ...options });
  for (const id of ids) c.driver(id).start();
  await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
  const leader = c.driver("hs1").leaderOf("g0");
  const behind = ids.find((id) => id !== leader)!;
  before?.(behind, c);
  c.net.isolated.add(behind);
  for (let i = 0; i < 5 * restoreTestEvery; i++) await c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`k${i % 7}`), new TextEncoder().encode(`v${i}`)));
  const leaderStore = c.stores.get(leader)!.get("g0")!;
  await until("compacted past the cut-off follower", () => leaderStore.log.snapshot().metadata.index >= 4 * restoreTestEvery);
  c.net.isolated.delete(behind);
  const machine = c.machines.get(behind)!.get("g0") as SlowRestoreKv;
  if (untilRestoreStarted) await until("the restore started", () => machine.restoresStarted === 1, 10_000);
  return { c, behind, machine };
}

/** A driver of one homeserver hosting `store`'s group alone, its peers unreachable: to look at what it does on start. */
function soloDriver(selfId: NodeId, engine: StorageEngine): RaftDriver {
  return new RaftDriver({
    selfId, engine, transport: { send: () => {}, sendSnapshot: () => {} }, logger: pino({ level: "silent" }),
    raft: { ...defaultRaftConfig(selfId, "", null as never, Math.random), electionTimeoutTicks: 10, heartbeatTicks: 1 },
    tickIntervalMs: 10, random: Math.random, snapshotEveryEntries: 20, snapshotKeepEntries: 10,
    clientAddressOf: () => "", onFatal: (error) => { throw error; },
  });
}

describe("RaftDriver apply writes", () => {
  it("a follower told commits lazily applies each entry in the same write that stores the next", async () => {
    const c = await startCluster(1, { lazyCommitNotices: true });
    for (const id of ids) c.driver(id).start();
    await until("the group led", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    const follower = ids.find((id) => id !== leader)!;
    const puts = 40;
    const before = c.engines.get(follower)!.stats().batches;
    for (let n = 0; n < puts; n++) await c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`k${n}`), new TextEncoder().encode("v")));
    const batches = c.engines.get(follower)!.stats().batches - before;
    // One write per entry (plus a few for heartbeat-borne commits): apart, storing and applying take two.
    expect(batches).toBeGreaterThanOrEqual(puts);
    expect(batches).toBeLessThan(puts * 1.5);
    await until("the follower applied every put", () => c.driver(follower).status("g0").applied >= c.driver(leader).status("g0").commit);
  });

  it("an idle follower told commits lazily applies a write soon after it commits (commitNoticeDelayMs), not at the next tick", async () => {
    // Ticks of 2 s: a notice left to the tick would keep the followers 2 s behind.
    const c = await startCluster(1, { lazyCommitNotices: true, tickIntervalMs: 2000, electionTimeoutTicks: 10, commitNoticeDelayMs: 5 });
    for (const id of ids) c.driver(id).start();
    c.driver("hs1").campaign("g0");
    await until("the group led", () => ids.every((id) => c.driver(id).leaderOf("g0") === "hs1"));
    const followers = ids.filter((id) => id !== "hs1");
    for (let n = 0; n < 3; n++) {
      const { index } = await c.driver("hs1").propose("g0", encodePut(new TextEncoder().encode(`k${n}`), new TextEncoder().encode("v")));
      const started = Date.now();
      await until("the followers applied the write", () => followers.every((id) => c.driver(id).status("g0").applied >= index), 1500);
      expect(Date.now() - started).toBeLessThan(1000);
    }
  });

  it("a group of one voter applies an entry only once its own write stored it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "epochd-one-voter-"));
    const engine = await StorageEngine.open(dir, { sync: false });
    const driver = new RaftDriver({
      selfId: "hs1", engine, transport: { send: () => {}, sendSnapshot: () => {} }, logger: pino({ level: "silent" }),
      raft: { ...defaultRaftConfig("hs1", "", null as never, Math.random), electionTimeoutTicks: 10, heartbeatTicks: 1 },
      tickIntervalMs: 10, random: Math.random, snapshotEveryEntries: 1000, snapshotKeepEntries: 100,
      clientAddressOf: () => "", onFatal: (error) => { throw error; },
    });
    cleanups.push(async () => {
      await driver.stop();
      await engine.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const [store] = await engine.createGroups(["solo"], ["hs1"]);
    const machine = new KvStateMachine(store!);
    const appliedUnstored: number[] = [];
    const watched = {
      apply: (entries: Parameters<KvStateMachine["apply"]>[0]) => {
        for (const entry of entries) if (entry.index > store!.log.lastIndex()) appliedUnstored.push(entry.index);
        return machine.apply(entries);
      },
      restoreStored: (chunks: AsyncIterable<Uint8Array>) => machine.restoreStored(chunks),
      afterRestore: () => machine.afterRestore(),
      snapshotChunks: () => machine.snapshotChunks(),
    };
    await driver.addGroup(store!, watched, { lazyCommitNotices: true });
    driver.start();
    driver.campaign("solo");
    await until("hs1 leads", () => driver.leaderOf("solo") === "hs1");
    await Promise.all(Array.from({ length: 30 }, (_, n) => driver.propose("solo", encodePut(new TextEncoder().encode(`k${n}`), new TextEncoder().encode("v")), { answerBeforeWrite: true })));
    await until("every put applied", () => driver.status("solo").applied >= 32);
    expect(appliedUnstored).toEqual([]);
  });
});

describe("RaftDriver reads", () => {
  it("reads asked in one turn share one read index, and each sees what was committed before it", async () => {
    const c = await startCluster(1);
    for (const id of ids) c.driver(id).start();
    c.driver("hs1").campaign("g0");
    await until("hs1 leads everywhere", () => ids.every((id) => c.driver(id).leaderOf("g0") === "hs1"));
    const key = new TextEncoder().encode("k");
    for (let round = 0; round < 3; round++) {
      const { index } = await c.driver("hs1").propose("g0", encodePut(key, new TextEncoder().encode(`v${round}`)));
      const before = c.net.readIndexRequests.get("hs2") ?? 0;
      const reads = await Promise.all(Array.from({ length: 200 }, () => c.driver("hs2").readIndex("g0")));
      // One request to the leader for all 200, and every one waited for the write.
      expect((c.net.readIndexRequests.get("hs2") ?? 0) - before).toBe(1);
      for (const read of reads) expect(read).toBeGreaterThanOrEqual(index);
      expect(c.driver("hs2").status("g0").applied).toBeGreaterThanOrEqual(index);
      expect(new TextDecoder().decode(await c.machines.get("hs2")!.get("g0")!.get(key))).toBe(`v${round}`);
      // On the leader too: all answered, none older than the write.
      const leaderReads = await Promise.all(Array.from({ length: 50 }, () => c.driver("hs1").readIndex("g0")));
      for (const read of leaderReads) expect(read).toBeGreaterThanOrEqual(index);
    }
  });
});

describe("RaftDriver with many groups", () => {
  it("counts a loaded group that has known no leader for leaderlessAfterMs as leaderless, until it knows one again", async () => {
    const c = await startCluster(2, { leaderlessAfterMs: 300 });
    for (const id of ids) c.driver(id).start();
    const groups = ["g0", "g1"];
    await until("every group has a leader", () => groups.every((g) => c.driver("hs1").leaderOf(g) !== ""));
    expect(c.driver("hs1").counts().leaderless).toBe(0);
    // hs1 alone, its groups woken by a proposal each: a follower's leader goes silent, a leader steps down.
    c.net.isolated.add("hs2");
    c.net.isolated.add("hs3");
    for (const g of groups) void c.driver("hs1").propose(g, encodePut(new TextEncoder().encode("k"), new Uint8Array(1))).catch(() => undefined);
    await until("hs1 counts both groups leaderless", () => c.driver("hs1").counts().leaderless === 2, 15_000);
    c.net.isolated.clear();
    await until("both know a leader again", () => c.driver("hs1").counts().leaderless === 0 && groups.every((g) => c.driver("hs1").leaderOf(g) !== ""), 15_000);
  });

  it("groups elect, go quiet (no ticks, no messages), wake on a proposal and go quiet again", async () => {
    const groupCount = 120;
    const c = await startCluster(groupCount);
    for (const id of ids) c.driver(id).start();
    await until("every group led", () => [...leaderCounts(c, groupCount).values()].reduce((a, b) => a + b, 0) === groupCount);
    await until("every group quiet everywhere", () => ids.every((id) => c.driver(id).counts().awake === 0));
    expect(c.net.coalescedBeats).toBeGreaterThan(groupCount);
    const before = c.net.coalescedBeats + c.net.otherMessages;
    await new Promise((r) => setTimeout(r, 300)); // 30 ticks
    expect(c.net.coalescedBeats + c.net.otherMessages).toBe(before);
    const leader = c.driver("hs1").leaderOf("g7");
    const applied = await c.driver(leader).propose("g7", encodePut(new TextEncoder().encode("k"), new TextEncoder().encode("v")));
    expect(applied.result).toBe(true);
    await until("the write applied everywhere", () => ids.every((id) => c.driver(id).status("g7").applied >= applied.index));
    await until("quiet again", () => ids.every((id) => c.driver(id).counts().awake === 0));
    expect(new TextDecoder().decode(await c.machines.get("hs2")!.get("g7")!.get(new TextEncoder().encode("k")))).toBe("v");
  });

  it("a follower whose leader's homeserver is lost wakes and the group elects another leader", async () => {
    const c = await startCluster(50);
    for (const id of ids) c.driver(id).start();
    await until("every group quiet", () => ids.every((id) => c.driver(id).counts().awake === 0) && leaderCounts(c, 50).size > 0);
    const led = [...Array(50).keys()].filter((n) => c.driver("hs1").leaderOf(`g${n}`) === "hs1");
    await c.driver("hs1").stop();
    c.net.drivers.delete("hs1");
    for (const id of ["hs2", "hs3"]) c.driver(id).peerLost("hs1");
    await until("new leaders", () => led.every((n) => ["hs2", "hs3"].includes(c.driver("hs2").leaderOf(`g${n}`))));
  });

  it("quiet groups leave memory and come back on their next input in the same role, without an election", async () => {
    const groupCount = 30;
    const c = await startCluster(groupCount, { hibernateAfterMs: 100 });
    for (const id of ids) c.driver(id).start();
    await until("every group led", () => [...leaderCounts(c, groupCount).values()].reduce((a, b) => a + b, 0) === groupCount);
    await until("every group unloaded everywhere", () => ids.every((id) => c.driver(id).counts().unloaded === groupCount));
    expect(ids.every((id) => c.machines.get(id)!.size === 0)).toBe(true);
    const leader = c.driver("hs1").leaderOf("g3");
    const term = c.driver(leader).status("g3").term;
    const applied = await c.driver(leader).propose("g3", encodePut(new TextEncoder().encode("k"), new TextEncoder().encode("v")));
    expect(applied.result).toBe(true);
    expect(applied.term).toBe(term);
    await until("applied everywhere", () => ids.every((id) => c.driver(id).status("g3").applied >= applied.index));
    for (const id of ids) expect(c.driver(id).leaderOf("g3")).toBe(leader);
    // Only g3 was loaded by the write; it leaves memory again once quiet.
    await until("unloaded again", () => ids.every((id) => c.driver(id).counts().unloaded === groupCount));
    // Read back from RocksDB on a follower, the group unloaded there.
    expect(new TextDecoder().decode(await c.engines.get("hs2")!.reader("g3").get(new TextEncoder().encode("k")))).toBe("v");
  });

  it("a group that comes back soon after it left memory stays longer the next time; one idle for long leaves after the base time", async () => {
    const baseMs = 100;
    expect(nextHibernateDelayMs(baseMs, baseMs, 50)).toBe(200);
    expect(nextHibernateDelayMs(baseMs, 200, 700)).toBe(400);
    expect(nextHibernateDelayMs(baseMs, 800, 100)).toBe(800); // at most 8 times the base
    expect(nextHibernateDelayMs(baseMs, 400, 1600)).toBe(baseMs); // away long enough: back to the base
    const c = await startCluster(6, { hibernateAfterMs: baseMs });
    for (const id of ids) c.driver(id).start();
    await until("every group led", () => [...leaderCounts(c, 6).values()].reduce((a, b) => a + b, 0) === 6);
    await until("every group unloaded everywhere", () => ids.every((id) => c.driver(id).counts().unloaded === 6));
    const leader = c.driver("hs1").leaderOf("g2");
    const put = () => c.driver(leader).propose("g2", encodePut(new TextEncoder().encode("k"), new TextEncoder().encode("v")));
    // Three writes, each soon after the group left memory: its quiet time doubles to 200, 400, 800 ms.
    for (let i = 0; i < 3; i++) {
      await put();
      await until("unloaded on the leader", () => c.driver(leader).isDormant("g2"));
    }
    await put();
    await until("quiet on the leader", () => c.driver(leader).counts().awake === 0);
    await new Promise((r) => setTimeout(r, 4 * baseMs));
    expect(c.driver(leader).isDormant("g2")).toBe(false);
    await until("unloaded after its longer quiet time", () => c.driver(leader).isDormant("g2"));
  });

  it("a group used more often than its quiet time stays in memory, though it goes quiet between uses", async () => {
    // Quiet time counts from the last input. (It counted from the first sweep that found the group
    // quiet: a group quiet again a few ticks after each write was unloaded and reloaded every 400 ms.)
    const hibernateAfterMs = 400;
    const c = await startCluster(4, { hibernateAfterMs });
    for (const id of ids) c.driver(id).start();
    await until("every group led", () => [...leaderCounts(c, 4).values()].reduce((a, b) => a + b, 0) === 4);
    const leader = c.driver("hs1").leaderOf("g1");
    const put = () => c.driver(leader).propose("g1", encodePut(new TextEncoder().encode("k"), new TextEncoder().encode("v")));
    await put();
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 150));
      for (const id of ids) expect(c.driver(id).isDormant("g1"), `g1 on ${id} after ${i + 1} writes`).toBe(false);
      await put();
    }
    // It was quiet between the writes all along (a tick or two after each).
    expect(c.driver(leader).counts().awake).toBeLessThanOrEqual(4);
    await until("unloaded once the writes stop", () => ids.every((id) => c.driver(id).isDormant("g1")), 5000);
  });

  it("beyond loadedGroupsMax, quiet groups leave memory, those quiet longest first", async () => {
    const groupCount = 12;
    const loadedGroupsMax = 4;
    // No quiet time: only the bound unloads.
    const c = await startCluster(groupCount, { loadedGroupsMax });
    for (const id of ids) c.driver(id).start();
    await until("every group led", () => [...leaderCounts(c, groupCount).values()].reduce((a, b) => a + b, 0) === groupCount);
    await until("all but the bound unloaded everywhere", () => ids.every((id) => c.driver(id).counts().unloaded === groupCount - loadedGroupsMax));
    const recent = ["g5", "g6", "g7"];
    for (const groupId of recent) {
      const leader = c.driver("hs1").leaderOf(groupId);
      await c.driver(leader).propose(groupId, encodePut(new TextEncoder().encode("k"), new TextEncoder().encode(groupId)));
      await new Promise((r) => setTimeout(r, 30));
    }
    await until("back to the bound everywhere", () => ids.every((id) => c.driver(id).counts().unloaded === groupCount - loadedGroupsMax && c.driver(id).counts().awake === 0));
    // The three written last stay; of the groups loaded before them, one is left.
    for (const id of ids) for (const groupId of recent) expect(c.driver(id).isDormant(groupId), `${groupId} on ${id}`).toBe(false);
    await new Promise((r) => setTimeout(r, 1500)); // a sweep or more: quiet groups within the bound stay
    for (const id of ids) expect(c.driver(id).counts().unloaded).toBe(groupCount - loadedGroupsMax);
  });

  it("a hibernating group whose leader is lost elects a new one when it is next needed", async () => {
    const groupCount = 12;
    const c = await startCluster(groupCount, { hibernateAfterMs: 100 });
    for (const id of ids) c.driver(id).start();
    await until("every group led", () => [...leaderCounts(c, groupCount).values()].reduce((a, b) => a + b, 0) === groupCount);
    await until("every group unloaded", () => ids.every((id) => c.driver(id).counts().unloaded === groupCount));
    // The homeserver leading the most groups is lost (elections are random: any of them may lead none).
    const victim = [...leaderCounts(c, groupCount)].sort((a, b) => b[1] - a[1])[0]![0];
    const survivors = ids.filter((id) => id !== victim);
    const led = [...Array(groupCount).keys()].filter((n) => c.driver(survivors[0]!).leaderOf(`g${n}`) === victim);
    expect(led.length).toBeGreaterThan(0);
    await c.driver(victim).stop();
    c.net.drivers.delete(victim);
    for (const id of survivors) c.driver(id).peerLost(victim);
    // Nothing elects until asked: the groups stay unloaded.
    await new Promise((r) => setTimeout(r, 300));
    expect(c.driver(survivors[0]!).counts().unloaded).toBe(groupCount);
    const groupId = `g${led[0]!}`;
    await c.driver(survivors[0]!).wake(groupId);
    await until("a new leader", () => survivors.includes(c.driver(survivors[0]!).leaderOf(groupId)), 5000);
    const leader = c.driver(survivors[0]!).leaderOf(groupId);
    const applied = await c.driver(leader).propose(groupId, encodePut(new TextEncoder().encode("k"), new TextEncoder().encode("w")));
    expect(applied.result).toBe(true);
  });

  it.each(["whole in memory", "staged in the follower's storage"])("compaction copies no state; a follower behind the compacted log gets the state as of the leader's applied index (data %s)", async (delivery) => {
    const every = 20;
    const c = await startCluster(1, { snapshotEveryEntries: every });
    const staged = delivery !== "whole in memory";
    if (staged) c.net.stageIn = c.engines;
    for (const id of ids) c.driver(id).start();
    await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    const behind = ids.find((id) => id !== leader)!;
    c.net.isolated.add(behind);
    const store = c.stores.get(leader)!.get("g0")!;
    const compactedAt = () => store.log.snapshot().metadata.index;
    const put = (key: string, value: string) => c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(key), new TextEncoder().encode(value)));
    const written = new Map<string, string>();
    for (let i = 0; i < 5 * every; i++) {
      await put(`k${i % 30}`, `v${i}`);
      written.set(`k${i % 30}`, `v${i}`);
    }
    await until("the log compacted past what the cut-off follower holds", () => compactedAt() >= 4 * every);
    // Compacting recorded where, not what: the state is stored already.
    expect(store.log.snapshot().data.byteLength).toBe(0);
    // Fewer than `every` more entries: the applied index is now past the last compaction.
    const lastCompaction = compactedAt();
    await put("after", "compaction");
    await put("k0", "last");
    expect(compactedAt()).toBe(lastCompaction);
    c.net.isolated.delete(behind);
    const follower = () => c.machines.get(behind)!.get("g0")!;
    const followerStore = c.stores.get(behind)!.get("g0")!;
    await until("the follower caught up through a snapshot", () => followerStore.log.snapshot().metadata.index > 0);
    const installedAt = followerStore.log.snapshot().metadata.index;
    expect(installedAt).toBeGreaterThan(lastCompaction);
    const installed = followerStore.log.snapshot().data;
    expect(installed.byteLength).toBeGreaterThan(0);
    expect(parseStagedDescriptor(installed) !== undefined).toBe(staged);
    const text = async (key: string) => new TextDecoder().decode((await follower().get(new TextEncoder().encode(key))) ?? new Uint8Array(0));
    const deadline = Date.now() + 10_000;
    while ((await text("k0")) !== "last" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await text("k0")).toBe("last");
    expect(await text("after")).toBe("compaction");
    for (let k = 1; k < 30; k++) expect(await text(`k${k}`)).toBe(written.get(`k${k}`));
    // Restored and durable: the staged data it came from is deleted.
    if (staged) await expect(collectChunks(c.engines.get(behind)!.snapshotChunks(installed))).rejects.toThrow(CorruptionError);
  });

  it("restores one group from a snapshot off the Ready loop: the homeserver's other groups apply meanwhile", async () => {
    const every = 20;
    const c = await startCluster(2, { snapshotEveryEntries: every, restoreDelayMs: 1500 });
    for (const id of ids) c.driver(id).start();
    await until("both groups led", () => c.driver("hs1").leaderOf("g0") !== "" && c.driver("hs1").leaderOf("g1") !== "");
    const leader0 = c.driver("hs1").leaderOf("g0");
    const leader1 = c.driver("hs1").leaderOf("g1");
    // A homeserver that leads neither group: cutting it off moves no leadership.
    const behind = ids.find((id) => id !== leader0 && id !== leader1)!;
    c.net.isolated.add(behind);
    const store0 = c.stores.get(leader0)!.get("g0")!;
    for (let i = 0; i < 5 * every; i++) await c.driver(leader0).propose("g0", encodePut(new TextEncoder().encode(`k${i % 7}`), new TextEncoder().encode(`v${i}`)));
    await until("g0's log compacted past the cut-off follower", () => store0.log.snapshot().metadata.index >= 4 * every);
    c.net.isolated.delete(behind);
    const followerStore0 = c.stores.get(behind)!.get("g0")!;
    await until("the snapshot stored on the follower", () => followerStore0.log.snapshot().metadata.index > 0, 10_000);
    const restoring = () => c.driver(behind).status("g0").applied < followerStore0.log.snapshot().metadata.index;
    expect(restoring()).toBe(true);
    // While g0 restores (1.5 s), g1 commits and the same homeserver applies it.
    const { index } = await c.driver(leader1).propose("g1", encodePut(new TextEncoder().encode("during"), new TextEncoder().encode("restore")));
    await until("the restoring homeserver applied g1's write", () => c.driver(behind).status("g1").applied >= index, 10_000);
    expect(restoring()).toBe(true);
    // Meanwhile g1 keeps committing: its applies on the restoring homeserver must not run while g0's
    // state is taken up in memory (that runs in the Ready loop, as apply does).
    let more = true;
    const writes = (async () => {
      for (let i = 0; more && i < 500; i++) {
        await c.driver(leader1).propose("g1", encodePut(new TextEncoder().encode(`m${i}`), new TextEncoder().encode("v")));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await until("g0 restored", () => !restoring(), 10_000);
    more = false;
    await writes;
    const value = await c.machines.get(behind)!.get("g0")!.get(new TextEncoder().encode("k0"));
    expect(value).toBeDefined();
    const find = (what: string) => machineLog.find((e) => e.what === what && e.groupId === "g0" && e.owner === behind)!;
    const [stored, start, end] = [find("restore-stored"), find("after-restore-start"), find("after-restore-end")];
    expect(start.atMs).toBeGreaterThanOrEqual(stored.atMs);
    const behindApplies = machineLog.filter((e) => e.what === "apply" && e.groupId === "g1" && e.owner === behind);
    expect(behindApplies.some((e) => e.atMs > end.atMs), "g1 applied after the take-up").toBe(true);
    expect(behindApplies.filter((e) => e.atMs > start.atMs && e.atMs < end.atMs), "g1 applies during g0's take-up").toEqual([]);
  });

  it("a crash while a restored state is taken up leaves the applied index behind the snapshot: on start the restore runs again, take-up included", async () => {
    const { c, behind } = await followerSentSnapshot({ restoreDelayMs: 1, mayFail: ids }, { before: (id, cluster) => ((cluster.machines.get(id)!.get("g0") as SlowRestoreKv).failTakeUp = true) });
    await until("the follower's take-up failed", () => c.fatal.has(behind), 10_000);
    expect(String(c.fatal.get(behind))).toContain("taking up the restored state");
    expect([...c.fatal.keys()]).toEqual([behind]);
    await c.driver(behind).stop();
    c.net.drivers.delete(behind);
    await c.engines.get(behind)!.close();
    // As after a crash: the state was written whole, but the applied index did not move.
    let engine = await StorageEngine.open(c.dirs.get(behind)!, { sync: false });
    let store = await engine.openGroup("g0");
    const snapshotIndex = store.log.snapshot().metadata.index;
    expect(snapshotIndex).toBeGreaterThanOrEqual(4 * restoreTestEvery);
    expect(store.appliedIndex).toBeLessThan(snapshotIndex);
    const driver = soloDriver(behind, engine);
    const machine = new SlowRestoreKv(store, 1, behind);
    const takenUp = machineLog.length;
    await driver.addGroup(store, machine, { quiesce: true });
    expect(machine.restoresStarted).toBe(1);
    expect(machineLog.slice(takenUp).filter((e) => e.what === "after-restore-end" && e.owner === behind)).toHaveLength(1);
    expect(store.appliedIndex).toBe(snapshotIndex);
    expect(await machine.get(new TextEncoder().encode("k0"))).toBeDefined();
    await driver.stop();
    await engine.close();
    // Recorded: the next start restores nothing.
    engine = await StorageEngine.open(c.dirs.get(behind)!, { sync: false });
    store = await engine.openGroup("g0");
    expect(store.appliedIndex).toBe(snapshotIndex);
    await engine.close();
  });

  it("a follower restoring a snapshot still stores, votes and answers: with the third voter cut off the group commits during the restore, and the follower applies it after", async () => {
    const { c, behind, machine } = await followerSentSnapshot({ restoreDelayMs: 2000 }, { untilRestoreStarted: true });
    const leader = c.driver("hs1").leaderOf("g0");
    const third = ids.find((id) => id !== leader && id !== behind)!;
    c.net.isolated.add(third);
    // Only the restoring follower can make a quorum with the leader now.
    const { index } = await c.driver(leader).propose("g0", encodePut(new TextEncoder().encode("during"), new TextEncoder().encode("restore")));
    expect(machine.restoresEnded, "committed before the follower's restore ended").toBe(0);
    await until("the follower applied the write after its restore", () => c.driver(behind).status("g0").applied >= index, 10_000);
    expect(new TextDecoder().decode(await c.machines.get(behind)!.get("g0")!.get(new TextEncoder().encode("during")))).toBe("restore");
  });

  it("a follower restoring a snapshot takes no leadership handed to it (it could serve nothing), and takes it once restored", async () => {
    const { c, behind, machine } = await followerSentSnapshot({ restoreDelayMs: 1500 }, { untilRestoreStarted: true });
    const leader = c.driver("hs1").leaderOf("g0");
    c.driver(leader).transferLeadership("g0", behind);
    await new Promise((r) => setTimeout(r, 400)); // 40 ticks: a transfer completes in a few
    expect(c.driver(behind).leaderOf("g0")).toBe(leader);
    expect(machine.restoresEnded).toBe(0);
    await until("restored", () => c.driver(behind).status("g0").applied >= c.stores.get(behind)!.get("g0")!.log.snapshot().metadata.index, 10_000);
    await until("leadership handed over after the restore", () => {
      if (c.driver(behind).leaderOf("g0") !== behind) c.driver(c.driver(behind).leaderOf("g0") || leader).transferLeadership("g0", behind);
      return c.driver(behind).leaderOf("g0") === behind;
    }, 10_000);
  });

  it("a group removed while its restored state is taken up is not woken again", async () => {
    const { c, behind } = await followerSentSnapshot({ restoreDelayMs: 1, mayFail: ids });
    await until("the take-up started", () => machineLog.some((e) => e.what === "after-restore-start" && e.owner === behind), 10_000);
    await c.driver(behind).removeGroup("g0");
    await c.engines.get(behind)!.dropGroup("g0");
    const leader = c.driver(ids.find((id) => id !== behind)!).leaderOf("g0");
    for (let i = 0; i < 5; i++) await c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`after${i}`), new TextEncoder().encode("v")));
    await new Promise((r) => setTimeout(r, 300));
    expect([...c.fatal.keys()]).toEqual([]);
    expect(c.driver(behind).counts()).toMatchObject({ groups: 0, awake: 0 });
  });

  it("compacts by bytes as well as by count: the log held in memory stays bounded with large entries", async () => {
    const c = await startCluster(1, { snapshotEveryEntries: 1000, snapshotEveryBytes: 200_000, snapshotKeepBytes: 70_000 });
    for (const id of ids) c.driver(id).start();
    await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    const store = c.stores.get(leader)!.get("g0")!;
    const value = new Uint8Array(30_000).fill(1);
    for (let i = 0; i < 20; i++) await c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`k${i}`), value));
    // 20 entries of 30 KB: far fewer than 1,000, but 600 KB, so compacted at least twice.
    await until("compacted by bytes", () => store.log.snapshot().metadata.index >= 7);
    const snapshotIndex = store.log.snapshot().metadata.index;
    // At most 70 KB of entries (two of 30 KB) kept behind the compaction.
    expect(store.log.firstIndex()).toBeGreaterThanOrEqual(snapshotIndex - 1);
    let held = 0;
    for (const entry of store.log.entries(store.log.firstIndex(), store.log.lastIndex() + 1, Number.MAX_SAFE_INTEGER)) held += entry.data.byteLength;
    expect(held).toBeLessThan(200_000 + 70_000 + 31_000);
  });

  it("a group removed while it restores from a snapshot is removed once the restore has stopped writing its records (cut off before its next chunk)", async () => {
    const { c, behind, machine } = await followerSentSnapshot({ restoreDelayMs: 800 }, { untilRestoreStarted: true });
    const started = machineLog.length;
    await c.driver(behind).removeGroup("g0");
    // It waited for the restore to stop writing, which it did before writing the state.
    expect(machine.restoresEnded).toBe(1);
    expect(machineLog.slice(started).some((e) => e.what === "restore-stored" && e.owner === behind && e.groupId === "g0")).toBe(false);
    const engine = c.engines.get(behind)!;
    await engine.dropGroup("g0");
    await new Promise((r) => setTimeout(r, 300));
    expect(machineLog.slice(started).some((e) => e.what === "after-restore-start" && e.owner === behind && e.groupId === "g0")).toBe(false);
    const left: unknown[] = [];
    for await (const pair of engine.reader("g0").scan(new Uint8Array(0))) left.push(pair);
    expect(left).toEqual([]);
  });

  it("a driver stopped while a group restores returns once the restore has stopped writing; the next start restores again", async () => {
    const { c, behind, machine } = await followerSentSnapshot({ restoreDelayMs: 800 }, { untilRestoreStarted: true });
    await c.driver(behind).stop();
    c.net.drivers.delete(behind);
    expect(machine.restoresEnded).toBe(1);
    expect(machineLog.some((e) => e.what === "restore-stored" && e.owner === behind)).toBe(false);
    await c.engines.get(behind)!.close();
    const engine = await StorageEngine.open(c.dirs.get(behind)!, { sync: false });
    const store = await engine.openGroup("g0");
    const snapshotIndex = store.log.snapshot().metadata.index;
    expect(store.appliedIndex).toBeLessThan(snapshotIndex);
    const driver = soloDriver(behind, engine);
    await driver.addGroup(store, new KvStateMachine(store), { quiesce: true });
    expect(store.appliedIndex).toBe(snapshotIndex);
    await driver.stop();
    await engine.close();
  });

  it("a leader compacting by bytes keeps what a follower slightly behind still needs, within snapshotEveryBytes", async () => {
    const c = await startCluster(1, { snapshotEveryEntries: 1000, snapshotEveryBytes: 120_000, snapshotKeepBytes: 30_000 });
    for (const id of ids) c.driver(id).start();
    await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    const behind = ids.find((id) => id !== leader)!;
    const value = new Uint8Array(30_000).fill(2);
    const put = (i: number) => c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`k${i}`), value));
    for (let i = 0; i < 2; i++) await put(i);
    await until("the follower has both", () => c.driver(behind).status("g0").applied >= c.driver(leader).status("g0").applied);
    c.net.isolated.add(behind);
    // 150 KB since the start: a compaction, while the follower misses the last three entries (90 KB).
    for (let i = 2; i < 5; i++) await put(i);
    const store = c.stores.get(leader)!.get("g0")!;
    await until("compacted", () => store.log.snapshot().metadata.index > 0);
    c.net.isolated.delete(behind);
    await until("the follower caught up", () => c.driver(behind).status("g0").applied >= c.driver(leader).status("g0").applied, 10_000);
    // From the log: it never needed a snapshot (30 KB kept alone would have left it one entry).
    expect(c.net.snapshotsTo.get(behind) ?? 0).toBe(0);
  });

  it("a newer snapshot that arrives while an older one restores replaces it only once that restore is done", async () => {
    const every = 20;
    const c = await startCluster(1, { snapshotEveryEntries: every, restoreDelayMs: 1000 });
    c.net.stageIn = c.engines;
    for (const id of ids) c.driver(id).start();
    await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    const behind = ids.find((id) => id !== leader)!;
    const put = (i: number) => c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`k${i % 7}`), new TextEncoder().encode(`v${i}`)));
    c.net.isolated.add(behind);
    for (let i = 0; i < 5 * every; i++) await put(i);
    const leaderStore = c.stores.get(leader)!.get("g0")!;
    await until("compacted", () => leaderStore.log.snapshot().metadata.index >= 4 * every);
    c.net.isolated.delete(behind);
    const followerStore = c.stores.get(behind)!.get("g0")!;
    await until("the first snapshot stored", () => followerStore.log.snapshot().metadata.index > 0, 10_000);
    c.net.isolated.add(behind);
    const first = followerStore.log.snapshot();
    expect(c.driver(behind).status("g0").applied).toBeLessThan(first.metadata.index); // restoring (1 s)
    // The leader moves on; a second, newer snapshot reaches the follower while the first restores.
    for (let i = 5 * every; i < 5 * every + 10; i++) await put(i);
    const engine = c.engines.get(behind)!;
    const staging = engine.stageSnapshot("g0");
    for await (const chunk of c.machines.get(leader)!.get("g0")!.snapshotChunks()) await staging.add(chunk);
    const second = await staging.finish();
    const status = c.driver(leader).status("g0");
    c.driver(behind).receive(leader, [message({
      type: MessageType.Snapshot, groupId: "g0", from: leader, to: behind, term: status.term,
      snapshot: { metadata: { index: status.applied, term: leaderStore.log.term(status.applied), confState: { voters: ids, votersOutgoing: [], learners: [], learnersNext: [] } }, data: second },
    })]);
    c.net.isolated.delete(behind);
    await until("both restored, in order", () => c.driver(behind).status("g0").applied >= status.applied, 10_000);
    const value = await c.machines.get(behind)!.get("g0")!.get(new TextEncoder().encode(`k${(5 * every + 9) % 7}`));
    expect(new TextDecoder().decode(value)).toBe(`v${5 * every + 9}`);
    await expect(collectChunks(engine.snapshotChunks(first.data))).rejects.toThrow(CorruptionError);
    await expect(collectChunks(engine.snapshotChunks(second))).rejects.toThrow(CorruptionError);
  });

  it("deletes staged snapshot data the core declines (a snapshot older than what the follower has)", async () => {
    const c = await startCluster(1);
    c.net.stageIn = c.engines;
    for (const id of ids) c.driver(id).start();
    await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    for (let i = 0; i < 5; i++) await c.driver(leader).propose("g0", encodePut(new TextEncoder().encode(`k${i}`), new TextEncoder().encode("v")));
    const follower = ids.find((id) => id !== leader)!;
    await until("the follower applied", () => c.driver(follower).status("g0").applied >= 6);
    const engine = c.engines.get(follower)!;
    const staging = engine.stageSnapshot("g0");
    await staging.add(new Uint8Array(100));
    const descriptor = await staging.finish();
    const status = c.driver(leader).status("g0");
    const confState = { voters: ids, votersOutgoing: [], learners: [], learnersNext: [] };
    c.driver(follower).receive(leader, [message({
      type: MessageType.Snapshot, groupId: "g0", from: leader, to: follower, term: status.term,
      snapshot: { metadata: { index: 2, term: 1, confState }, data: descriptor },
    })]);
    const gone = async () => collectChunks(engine.snapshotChunks(descriptor)).then(() => false, (error: unknown) => error instanceof CorruptionError);
    const deadline = Date.now() + 5000;
    while (!(await gone()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await gone()).toBe(true);
    expect(c.driver(follower).status("g0").applied).toBeGreaterThanOrEqual(6);
  });

  it("a proposer that asked is answered before the apply is written; reads and other proposers wait for the write", async () => {
    // A held write holds the leader's Ready loop, heartbeats included: an election timeout of 5 s keeps it leading.
    const c = await startCluster(1, { electionTimeoutTicks: 500 });
    for (const id of ids) c.driver(id).start();
    c.driver("hs1").campaign("g0");
    await until("a leader", () => c.driver("hs1").leaderOf("g0") !== "");
    const leader = c.driver("hs1").leaderOf("g0");
    const driver = c.driver(leader);
    await driver.propose("g0", encodePut(new TextEncoder().encode("warm"), new TextEncoder().encode("up")));
    // Hold the leader's next apply write (the real engine's, delayed) until released.
    const engine = c.engines.get(leader)!;
    const write = engine.apply.bind(engine);
    let release = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    engine.apply = async (...args: Parameters<typeof engine.apply>) => {
      await gate;
      return write(...args);
    };
    try {
      const key = new TextEncoder().encode("k");
      const settled = new Set<string>();
      const early = driver.propose("g0", encodePut(key, new TextEncoder().encode("early")), { answerBeforeWrite: true }).then((a) => (settled.add("early"), a));
      const late = driver.propose("g0", encodePut(new TextEncoder().encode("k2"), new TextEncoder().encode("late"))).then((a) => (settled.add("late"), a));
      const applied = await Promise.race([early, new Promise<never>((_, reject) => setTimeout(() => reject(new Error("not answered while the write was held")), 2_000))]);
      expect(applied.result).toBe(true);
      // Answered while the write is held: nothing is stored yet.
      expect(await c.machines.get(leader)!.get("g0")!.get(key)).toBeUndefined();
      const read = driver.readIndex("g0").then((index) => (settled.add("read"), index));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect([...settled]).toEqual(["early"]);
      release();
      await late;
      expect(await read).toBeGreaterThanOrEqual(applied.index);
      expect(new TextDecoder().decode(await c.machines.get(leader)!.get("g0")!.get(key))).toBe("early");
    } finally {
      release(); // a failed check must not leave the driver stuck for the cleanup
    }
  });

  it("leader balancing hands groups over until each homeserver leads about its share", async () => {
    const groupCount = 90;
    // hs1 balances only after 1.5 s: until then, ticking alone, it campaigns everywhere and leads every group.
    const c = await startCluster(groupCount, { balance: true, balanceEveryMs: (id) => (id === "hs1" ? 1500 : 50) });
    c.driver("hs1").start();
    await until("hs1 leads all", () => leaderCounts(c, groupCount).get("hs1") === groupCount, 1400);
    c.driver("hs2").start();
    c.driver("hs3").start();
    await until("balanced", () => {
      const counts = leaderCounts(c, groupCount);
      return ids.every((id) => Math.abs((counts.get(id) ?? 0) - groupCount / 3) <= 3);
    }, 30_000);
  });
});

describe("planLeaderTransfers", () => {
  const group = (n: number, leader: string) => ({ groupId: `g${n}`, leader, voters: ids });

  it("hands the excess to the voters under their share, at most maxTransfers per round", () => {
    const groups = Array.from({ length: 30 }, (_, n) => group(n, "hs1"));
    const plan = planLeaderTransfers("hs1", groups, { maxTransfers: 100, slackGroups: 2 });
    expect(plan.length).toBeGreaterThanOrEqual(18);
    expect(plan.length).toBeLessThanOrEqual(20);
    const to = new Map<string, number>();
    for (const p of plan) to.set(p.to, (to.get(p.to) ?? 0) + 1);
    expect(Math.abs((to.get("hs2") ?? 0) - (to.get("hs3") ?? 0))).toBeLessThanOrEqual(1);
    expect(planLeaderTransfers("hs1", groups, { maxTransfers: 5, slackGroups: 2 })).toHaveLength(5);
  });

  it("does nothing within the slack, or for a homeserver that does not lead more than its share", () => {
    const balanced = Array.from({ length: 30 }, (_, n) => group(n, ids[n % 3]!));
    expect(planLeaderTransfers("hs1", balanced, { maxTransfers: 100, slackGroups: 2 })).toEqual([]);
    const skewed = Array.from({ length: 30 }, (_, n) => group(n, n < 20 ? "hs2" : "hs1"));
    expect(planLeaderTransfers("hs1", skewed, { maxTransfers: 100, slackGroups: 2 })).toEqual([]);
    // hs2 is over, but hs1 is under its share and hs3 leads nothing: all go to them, hs3 first.
    const plan = planLeaderTransfers("hs2", skewed, { maxTransfers: 100, slackGroups: 2 });
    expect(plan.length).toBeGreaterThan(5);
    expect(plan[0]!.to).toBe("hs3");
  });
});
