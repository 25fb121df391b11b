/**
 * The simulator's agenda: a binary min-heap of events ordered by (virtual
 * time, sequence number). The sequence number breaks ties in scheduling
 * order, so two runs from one seed process events in exactly the same order.
 */

/** One scheduled action. */
export interface SimEvent {
  readonly atMs: number;
  readonly seq: number;
  readonly fire: () => void;
}

/** A min-heap of {@link SimEvent}s. */
export class EventQueue {
  private readonly heap: SimEvent[] = [];
  private nextSeq = 0;

  /** Number of pending events. */
  get size(): number {
    return this.heap.length;
  }

  /** Schedules `fire` at virtual time `atMs`. */
  push(atMs: number, fire: () => void): void {
    const heap = this.heap;
    const event: SimEvent = { atMs, seq: this.nextSeq++, fire };
    let i = heap.length;
    heap.push(event);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (!before(event, p)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = event;
  }

  /** The time of the earliest event, or Infinity when empty. */
  peekTimeMs(): number {
    return this.heap.length > 0 ? this.heap[0]!.atMs : Number.POSITIVE_INFINITY;
  }

  /** Removes and returns the earliest event. */
  pop(): SimEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const child = r < n && before(heap[r]!, heap[l]!) ? r : l;
      if (!before(heap[child]!, last)) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}
