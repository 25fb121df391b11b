/**
 * The simulated network between nodes, addressed by small integer slots
 * (the simulator maps node ids to slots). It decides, per message, whether
 * and when it arrives: base latency with jitter (FIFO per link unless
 * reordering is on), random drops and duplicates, and partitions that block
 * directed links. Faults add and remove impairments and partitions; several
 * may overlap, the strongest wins.
 */
import type { Prng } from "./prng.ts";

/** How bad the network is while an impairment is active. Rates are probabilities per message. */
export interface Impairment {
  readonly dropRate: number;
  readonly duplicateRate: number;
  /** Extra random delay in [0, reorderJitterMs) with FIFO order per link abandoned; 0 keeps FIFO. */
  readonly reorderJitterMs: number;
}

/** Latency of a healthy link. */
export interface LinkLatency {
  readonly latencyMinMs: number;
  readonly latencyMaxMs: number;
}

/** Counters for reports and tests. */
export interface NetworkStats {
  sent: number;
  dropped: number;
  duplicated: number;
}

const none: Impairment = { dropRate: 0, duplicateRate: 0, reorderJitterMs: 0 };

/** Decides the fate of every message; pure bookkeeping, it does not hold messages itself. */
export class Network {
  private readonly impairments = new Map<number, Impairment>();
  private readonly partitions = new Map<number, readonly (readonly [number, number])[]>();
  private current: Impairment = none;
  /** blocked[from * slots + to] counts the active partitions cutting that directed link. */
  private readonly blocked: Uint16Array;
  /** Last scheduled arrival per directed link, to keep FIFO order when not reordering. */
  private readonly lastArrivalMs: Float64Array;
  private nextHandle = 1;
  readonly stats: NetworkStats = { sent: 0, dropped: 0, duplicated: 0 };

  constructor(
    private readonly rng: Prng,
    private readonly latency: LinkLatency,
    private readonly slots: number,
  ) {
    this.blocked = new Uint16Array(slots * slots);
    this.lastArrivalMs = new Float64Array(slots * slots);
  }

  /** Arrival times of the last {@link route}d message (reused to spare an allocation per message). */
  readonly arrivals: number[] = [0, 0];

  /**
   * Decides the fate of one message sent at `nowMs`: returns how many copies
   * arrive (0 when dropped, 2 when duplicated), their times in
   * {@link arrivals}. The caller drops a copy again if the link is cut on arrival.
   */
  route(from: number, to: number, nowMs: number): number {
    this.stats.sent++;
    if (this.isBlocked(from, to) || this.rng.chance(this.current.dropRate)) {
      this.stats.dropped++;
      return 0;
    }
    this.arrivals[0] = this.arrival(from, to, nowMs);
    if (!this.rng.chance(this.current.duplicateRate)) return 1;
    this.stats.duplicated++;
    this.arrivals[1] = this.arrival(from, to, nowMs);
    return 2;
  }

  private arrival(from: number, to: number, nowMs: number): number {
    const { latencyMinMs, latencyMaxMs } = this.latency;
    const base = nowMs + latencyMinMs + this.rng.float() * (latencyMaxMs - latencyMinMs);
    const jitter = this.current.reorderJitterMs;
    if (jitter > 0) return base + this.rng.float() * jitter;
    const link = from * this.slots + to;
    const at = Math.max(base, this.lastArrivalMs[link]!);
    this.lastArrivalMs[link] = at;
    return at;
  }

  /** True when an active partition cuts the directed link from → to. */
  isBlocked(from: number, to: number): boolean {
    return this.blocked[from * this.slots + to]! > 0;
  }

  /** Starts an impairment; returns a handle for {@link removeImpairment}. */
  addImpairment(impairment: Impairment): number {
    const handle = this.nextHandle++;
    this.impairments.set(handle, impairment);
    this.recompute();
    return handle;
  }

  /** Ends an impairment (no-op for an unknown handle). */
  removeImpairment(handle: number): void {
    if (this.impairments.delete(handle)) this.recompute();
  }

  private recompute(): void {
    let dropRate = 0;
    let duplicateRate = 0;
    let reorderJitterMs = 0;
    for (const i of this.impairments.values()) {
      dropRate = Math.max(dropRate, i.dropRate);
      duplicateRate = Math.max(duplicateRate, i.duplicateRate);
      reorderJitterMs = Math.max(reorderJitterMs, i.reorderJitterMs);
    }
    this.current = { dropRate, duplicateRate, reorderJitterMs };
  }

  /** Told of every partition as it starts (the simulator turns cut links into broken peer streams). */
  onPartition: ((links: readonly (readonly [number, number])[]) => void) | null = null;

  /** Cuts the given directed links until {@link removePartition}; returns a handle. */
  addPartition(links: readonly (readonly [number, number])[]): number {
    const handle = this.nextHandle++;
    this.onPartition?.(links);
    this.partitions.set(handle, links);
    for (const [from, to] of links) this.blocked[from * this.slots + to]!++;
    return handle;
  }

  /** Restores the links of one partition (no-op for an unknown handle). */
  removePartition(handle: number): void {
    const links = this.partitions.get(handle);
    if (links === undefined) return;
    this.partitions.delete(handle);
    for (const [from, to] of links) this.blocked[from * this.slots + to]!--;
  }

  /** Ends every impairment and partition: the network is healthy again. */
  healAll(): void {
    for (const handle of [...this.partitions.keys()]) this.removePartition(handle);
    this.impairments.clear();
    this.recompute();
  }

  /** The impairment in force now (the maximum of the active ones). */
  conditions(): Impairment {
    return this.current;
  }
}

/** Directed links cutting `side` off from `others` in both directions (a symmetric partition). */
export function splitLinks(side: readonly number[], others: readonly number[]): [number, number][] {
  const links: [number, number][] = [];
  for (const a of side) {
    for (const b of others) links.push([a, b], [b, a]);
  }
  return links;
}
