/**
 * Latency samples and their percentiles for the benchmarks. Samples go into
 * a preallocated Float64Array (bounded: past `samplesMax` a reservoir keeps a
 * uniform sample), so recording costs no allocation on the hot path.
 */

/** Records per-operation latencies in milliseconds. */
export class LatencyRecorder {
  private readonly samplesMs: Float64Array;
  private stored = 0;
  /** Every latency recorded, including those the reservoir dropped. */
  count = 0;

  constructor(private readonly samplesMax = 1_000_000) {
    this.samplesMs = new Float64Array(samplesMax);
  }

  /** Adds one latency. Past `samplesMax` samples, reservoir sampling keeps the set uniform. */
  record(latencyMs: number): void {
    this.count++;
    if (this.stored < this.samplesMax) {
      this.samplesMs[this.stored++] = latencyMs;
      return;
    }
    const slot = Math.floor(Math.random() * this.count);
    if (slot < this.samplesMax) this.samplesMs[slot] = latencyMs;
  }

  /** The p-th percentile (0..100) in milliseconds, nearest-rank; NaN without samples. */
  percentiles(ps: readonly number[]): number[] {
    if (this.stored === 0) return ps.map(() => Number.NaN);
    const sorted = this.samplesMs.slice(0, this.stored).sort();
    return ps.map((p) => sorted[Math.min(this.stored - 1, Math.max(0, Math.ceil((p / 100) * this.stored) - 1))]!);
  }
}

/** Milliseconds since an arbitrary origin, with sub-millisecond resolution. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
