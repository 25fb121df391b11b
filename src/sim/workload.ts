/**
 * Simulated clients. Each proposes entries with unique payloads, one at a
 * time, to the node it believes leads; a "not leader, leader is X" answer
 * redirects it. A client is told its entry is committed when the node it
 * proposed to applies that entry; a proposal not acknowledged within a
 * deadline is abandoned (it may still commit later) and the client moves on.
 */
import type { ProposalResult } from "../raft/raw-node.ts";
import type { Entry, NodeId, Term } from "../raft/types.ts";
import type { Prng } from "./prng.ts";

/** What the workload needs from the simulator. */
export interface WorkloadPort {
  /** Ids of the nodes a client may contact (running or not: clients do not know). */
  nodeIds(): readonly NodeId[];
  /** Proposes `data` on `node`; `done` gets the core's answer, or null if the node is down. */
  propose(node: NodeId, data: Uint8Array, done: (result: ProposalResult | null) => void): void;
  /** Reports an acknowledged entry (for the durability invariant). */
  acked(node: NodeId, entry: Entry): void;
}

/** Workload knobs. */
export interface WorkloadOptions {
  readonly clients: number;
  /** Chance per tick that a client with room for another proposal makes one. */
  readonly proposalChancePerTick: number;
  /** Proposals a client keeps in flight at once (pipelining). */
  readonly clientPipeline: number;
  /** Payload size; payloads start with a unique id and are padded to this many bytes. */
  readonly payloadBytes: number;
  /** Ticks to wait for an acknowledgement before abandoning a proposal. */
  readonly ackTimeoutTicks: number;
}

/** Counters for the run's result. */
export interface WorkloadStats {
  proposed: number;
  acked: number;
  redirected: number;
}

interface Pending {
  readonly client: Client;
  readonly node: NodeId;
  readonly data: Uint8Array;
  term: Term;
  readonly deadlineTick: number;
}

interface Client {
  readonly id: number;
  leaderGuess: NodeId;
  seq: number;
  readonly pending: Set<Pending>;
}

/** The set of clients and their outstanding proposals. */
export class Workload {
  private readonly clients: Client[] = [];
  /** Outstanding proposals that got an index, by `node/index`. */
  private readonly waiting = new Map<string, Pending>();
  readonly stats: WorkloadStats = { proposed: 0, acked: 0, redirected: 0 };

  constructor(
    private readonly rng: Prng,
    private readonly options: WorkloadOptions,
    private readonly port: WorkloadPort,
  ) {
    for (let id = 0; id < options.clients; id++) {
      this.clients.push({ id, leaderGuess: rng.pick(port.nodeIds()), seq: 0, pending: new Set() });
    }
  }

  /** Called once per tick: expire old proposals and start new ones. */
  tick(nowTick: number): void {
    for (const client of this.clients) {
      for (const p of client.pending) if (nowTick >= p.deadlineTick) this.abandon(p, true);
      if (client.pending.size < this.options.clientPipeline && this.rng.chance(this.options.proposalChancePerTick)) {
        this.propose(client, nowTick);
      }
    }
  }

  private abandon(p: Pending, guessAgain: boolean): void {
    p.client.pending.delete(p);
    if (guessAgain) p.client.leaderGuess = this.rng.pick(this.port.nodeIds());
  }

  private propose(client: Client, nowTick: number): void {
    const node = client.leaderGuess;
    const data = payload(client.id, client.seq++, this.options.payloadBytes);
    const p: Pending = { client, node, data, term: 0, deadlineTick: nowTick + this.options.ackTimeoutTicks };
    client.pending.add(p);
    this.stats.proposed++;
    this.port.propose(node, data, (result) => {
      if (!client.pending.has(p)) return;
      if (result === null) {
        this.abandon(p, true);
      } else if (result.ok) {
        p.term = result.term;
        this.waiting.set(`${node}/${result.index}`, p);
      } else {
        this.stats.redirected++;
        this.abandon(p, false);
        const leader = result.leader;
        client.leaderGuess = leader !== "" && leader !== node ? leader : this.rng.pick(this.port.nodeIds());
      }
    });
  }

  /** Called for every entry a node applies: acknowledges the client waiting for it, if any. */
  applied(node: NodeId, entry: Entry): void {
    if (this.waiting.size === 0) return;
    const key = `${node}/${entry.index}`;
    const p = this.waiting.get(key);
    if (p === undefined) return;
    this.waiting.delete(key);
    if (!p.client.pending.delete(p)) return; // abandoned meanwhile
    if (entry.term !== p.term || !sameBytes(entry.data, p.data)) return; // lost to another leader: never acked
    this.stats.acked++;
    this.port.acked(node, entry);
  }
}

/** A unique payload: `c<client>#<seq>` padded with a deterministic filler to `bytes`. */
export function payload(client: number, seq: number, bytes: number): Uint8Array {
  const id = `c${client}#${seq};`;
  const out = new Uint8Array(Math.max(bytes, id.length));
  for (let i = 0; i < id.length; i++) out[i] = id.charCodeAt(i);
  for (let i = id.length; i < out.length; i++) out[i] = 97 + ((i * 7 + seq) % 26);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
