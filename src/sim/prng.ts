/**
 * Seeded pseudo-random numbers for the simulator. Every random choice of a run
 * comes from one {@link Prng} derived from the run's seed, so a run is
 * reproducible from its seed alone. Never `Math.random`.
 */

/** One step of splitmix32: spreads a 32-bit state into a well-mixed 32-bit value. */
function splitmix32(state: number): number {
  let z = (state + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * A small fast generator (sfc32, 128-bit state, period about 2^127). Chosen
 * because it is a few integer operations per number: the simulator draws
 * several numbers per message.
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** Seeds the generator from `seed` and a `stream` number; different streams are independent. */
  constructor(seed: number, stream = 0) {
    const s0 = splitmix32(seed | 0);
    const s1 = splitmix32((s0 ^ Math.imul(stream | 0, 0x27d4eb2d)) | 0);
    this.a = s0;
    this.b = s1;
    this.c = splitmix32(s1 ^ 0x5bd1e995);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** The next value in [0, 2^32). */
  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.nextUint32() / 4294967296;
  }

  /** An integer in [0, bound). `bound` must be a positive integer. */
  int(bound: number): number {
    return Math.floor(this.float() * bound);
  }

  /** An integer in [lo, hi] (both inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return p > 0 && this.float() < p;
  }

  /** A uniformly chosen element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)];
    if (item === undefined) throw new RangeError("pick from an empty array");
    return item;
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = items[i]!;
      items[i] = items[j]!;
      items[j] = t;
    }
    return items;
  }

  /** A new independent generator for sub-stream `stream`, drawn from this one. */
  fork(stream: number): Prng {
    return new Prng(this.nextUint32(), stream);
  }

  /** A `() => number` in [0, 1), the shape the Raft core takes for its election timeouts. */
  asFunction(): () => number {
    return () => this.float();
  }
}
