import { MemoryStorage } from "../../src/raft/memory-storage.ts";
import { RawNode, defaultRaftConfig, type RaftConfig } from "../../src/raft/raw-node.ts";
import { Role, type Entry, type Message, type NodeId, type ReadState } from "../../src/raft/types.ts";

/** A seeded PRNG (mulberry32) so every unit test is deterministic. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One node of a {@link TestCluster}: the real core over a MemoryStorage "disk". */
export interface TestNode {
  readonly id: NodeId;
  node: RawNode;
  storage: MemoryStorage;
  applied: Entry[];
  readStates: ReadState[];
}

/**
 * A small synchronous network of real Raft cores for focused unit tests, in the
 * spirit of etcd's raft_test network: messages are delivered in order unless a
 * link is cut or a filter drops them; every Ready is handled per its contract.
 */
export class TestCluster {
  readonly nodes = new Map<NodeId, TestNode>();
  readonly sent: Message[] = [];
  private queue: Message[] = [];
  private readonly cut = new Set<string>();
  /** Return false to drop a message. */
  filter: (m: Message) => boolean = () => true;
  /** Nodes whose Readies are taken with `withholdApply` (as while restoring a snapshot). */
  readonly withholding = new Set<NodeId>();

  constructor(
    ids: NodeId[],
    private readonly overrides: Partial<RaftConfig> = {},
    seed = 1,
  ) {
    ids.forEach((id, i) => this.add(id, new MemoryStorage(ids), seed * 100 + i));
    // Apply the bootstrap entry, so every initial member knows the membership.
    this.stabilize();
  }

  /** Adds a node over `storage` (a fresh one joins with an empty membership), with `settings` over the cluster's. */
  add(id: NodeId, storage = new MemoryStorage(), seed = 7, applied = 0, settings: Partial<RaftConfig> = {}): TestNode {
    const config = { ...defaultRaftConfig(id, "g", storage, seededRandom(seed)), applied, ...this.overrides, ...settings };
    const testNode: TestNode = { id, node: new RawNode(config), storage, applied: [], readStates: [] };
    this.nodes.set(id, testNode);
    return testNode;
  }

  /** Simulates a restart: a new core over the same storage, losing nothing persisted. */
  restart(id: NodeId): TestNode {
    const old = this.get(id);
    const appliedIndex = old.applied[old.applied.length - 1]?.index ?? 0;
    const fresh = this.add(id, old.storage, 99, Math.max(appliedIndex, old.storage.snapshot().metadata.index));
    fresh.applied = old.applied;
    return fresh;
  }

  get(id: NodeId): TestNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  cutLink(from: NodeId, to: NodeId): void {
    this.cut.add(`${from}>${to}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** Handles every node's Ready once; returns whether anything happened. */
  processReadies(): boolean {
    let any = false;
    for (const t of this.nodes.values()) {
      const options = { withholdApply: this.withholding.has(t.id) };
      if (!t.node.hasReady(options)) continue;
      any = true;
      const ready = t.node.ready(options);
      if (ready.snapshot !== null) t.storage.applySnapshot(ready.snapshot);
      t.storage.append(ready.entries);
      if (ready.hardState !== null) t.storage.setHardState(ready.hardState);
      for (const m of ready.messages) {
        this.sent.push(m);
        this.queue.push(m);
      }
      for (const entry of ready.committedEntries) t.applied.push(entry);
      t.readStates.push(...ready.readStates);
      t.node.advance();
    }
    return any;
  }

  /** Delivers queued messages (one round); returns how many were delivered. */
  deliver(): number {
    const batch = this.queue;
    this.queue = [];
    let delivered = 0;
    for (const m of batch) {
      const target = this.nodes.get(m.to);
      if (target === undefined || this.cut.has(`${m.from}>${m.to}`) || !this.filter(m)) continue;
      target.node.step(m);
      delivered++;
    }
    return delivered;
  }

  /** Runs Readies and deliveries until nothing moves (bounded). */
  stabilize(maxRounds = 1000): void {
    for (let round = 0; round < maxRounds; round++) {
      const readied = this.processReadies();
      const delivered = this.deliver();
      if (!readied && delivered === 0 && this.queue.length === 0) return;
    }
    throw new Error("cluster did not stabilize");
  }

  /** Ticks every node `ticks` times, stabilizing after each tick. */
  tickAll(ticks: number): void {
    for (let i = 0; i < ticks; i++) {
      for (const t of this.nodes.values()) t.node.tick();
      this.stabilize();
    }
  }

  /** Makes `id` campaign and settles. */
  elect(id: NodeId): void {
    this.get(id).node.campaign();
    this.stabilize();
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((t) => t.node.status().role === Role.Leader).map((t) => t.id);
  }

  /** Payloads applied by `id`, decoded as text, skipping empty entries. */
  appliedText(id: NodeId): string[] {
    return this.get(id)
      .applied.filter((e) => e.data.byteLength > 0 && e.type === 0)
      .map((e) => new TextDecoder().decode(e.data));
  }
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
