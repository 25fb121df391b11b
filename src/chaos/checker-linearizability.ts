/**
 * A linearizability checker in the style of Wing & Gong with Lowe's memoization (as Porcupine does it):
 * a depth-first search over the order in which concurrent operations took effect, pruned by a cache of
 * (set of operations linearized, model state) already explored. Pure and bounded: it gives up (verdict
 * "unknown") after `stepsMax` search steps rather than run for ever on a pathological history.
 */

/** A sequential specification: `step` returns the next state, or undefined if `input` cannot happen in `state`. */
export interface Model<State, Input> {
  readonly init: State;
  step(state: State, input: Input): State | undefined;
  /** A string identifying the state (with the linearized set, the memoization key). */
  key(state: State): string;
}

/** One operation: it took effect at some instant between `callMs` and `returnMs` (Infinity: no answer). */
export interface TimedOp<Input> {
  readonly id: number;
  readonly callMs: number;
  readonly returnMs: number;
  readonly input: Input;
}

/** The verdict: ok with a witness order, a violation with the longest linearizable prefix found, or unknown. */
export type LinearizabilityResult =
  | { readonly verdict: "ok"; readonly order: readonly number[]; readonly steps: number }
  | { readonly verdict: "violation"; readonly longestPrefix: readonly number[]; readonly stuckOn: readonly number[]; readonly steps: number }
  | { readonly verdict: "unknown"; readonly steps: number };

interface Entry {
  readonly opIndex: number;
  readonly isCall: boolean;
  match: Entry | undefined;
  prev: Entry | undefined;
  next: Entry | undefined;
}

function buildEntries<I>(ops: readonly TimedOp<I>[]): Entry {
  const events: Array<{ time: number; isCall: boolean; opIndex: number }> = [];
  ops.forEach((op, opIndex) => {
    events.push({ time: op.callMs, isCall: true, opIndex }, { time: op.returnMs, isCall: false, opIndex });
  });
  // At equal times calls come first: the operations then count as concurrent (the permissive reading).
  events.sort((a, b) => a.time - b.time || Number(b.isCall) - Number(a.isCall) || a.opIndex - b.opIndex);
  const head: Entry = { opIndex: -1, isCall: false, match: undefined, prev: undefined, next: undefined };
  const calls = new Map<number, Entry>();
  let last = head;
  for (const event of events) {
    const entry: Entry = { opIndex: event.opIndex, isCall: event.isCall, match: undefined, prev: last, next: undefined };
    last.next = entry;
    last = entry;
    if (event.isCall) calls.set(event.opIndex, entry);
    else calls.get(event.opIndex)!.match = entry;
  }
  return head;
}

function lift(call: Entry): void {
  call.prev!.next = call.next;
  if (call.next !== undefined) call.next.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next !== undefined) ret.next.prev = ret.prev;
}

function unlift(call: Entry): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next !== undefined) ret.next.prev = ret;
  call.prev!.next = call;
  if (call.next !== undefined) call.next.prev = call;
}

/** Checks whether `ops` can be ordered, each at an instant within its interval, so that `model` accepts them. */
export function checkLinearizable<State, Input>(ops: readonly TimedOp<Input>[], model: Model<State, Input>, stepsMax = 2_000_000): LinearizabilityResult {
  const head = buildEntries(ops);
  const cache = new Set<string>();
  const stack: Array<{ call: Entry; state: State }> = [];
  let linearized = 0n;
  let state = model.init;
  let entry = head.next;
  let longest: number[] = [];
  let steps = 0;
  while (head.next !== undefined) {
    if (++steps > stepsMax) return { verdict: "unknown", steps };
    if (entry === undefined) break;
    if (entry.isCall) {
      const next = model.step(state, ops[entry.opIndex]!.input);
      const withOp = linearized | (1n << BigInt(entry.opIndex));
      const key = next === undefined ? "" : `${withOp.toString(36)}|${model.key(next)}`;
      if (next !== undefined && !cache.has(key)) {
        cache.add(key);
        stack.push({ call: entry, state });
        state = next;
        linearized = withOp;
        lift(entry);
        if (stack.length > longest.length) longest = stack.map((s) => ops[s.call.opIndex]!.id);
        entry = head.next;
      } else {
        entry = entry.next;
      }
      continue;
    }
    // A return reached while its operation is not linearized: undo the last choice.
    const top = stack.pop();
    if (top === undefined) {
      const stuckOn: number[] = [];
      for (let e: Entry | undefined = head.next; e !== undefined && stuckOn.length < 8; e = e.next) if (e.isCall) stuckOn.push(ops[e.opIndex]!.id);
      return { verdict: "violation", longestPrefix: longest, stuckOn, steps };
    }
    state = top.state;
    linearized &= ~(1n << BigInt(top.call.opIndex));
    unlift(top.call);
    entry = top.call.next;
  }
  return { verdict: "ok", order: stack.map((s) => ops[s.call.opIndex]!.id), steps };
}
