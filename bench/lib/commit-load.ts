/**
 * The closed-loop load generator of `npm run bench -- commits`: `concurrency`
 * commits always in flight, each on a channel with no other commit in flight,
 * building on that channel's current epoch. Channels wait in a FIFO, so load
 * spreads evenly over all of them (no channel gets near the servers' per-channel
 * rate limits) and a channel's next commit goes out only after its last one was
 * answered, as an MLS client does.
 *
 * Latency is recorded for every commit sent inside the measured window
 * (answered in it or during the drain); throughput counts the commits answered
 * inside it. Unlike load.ts (random keys, unlimited writes) the supply of commits may be
 * finite (mode (b) replays commits generated ahead of the run): when no channel
 * has a commit left, or the phase's commit budget is spent, the measured window
 * closes at that instant and the row says so.
 */
import { LatencyRecorder, nowMs } from "./stats.ts";
import { ProcessSampler } from "./proc.ts";
import { perOperation, stageMeansMs, type WorkTotals } from "./work-counters.ts";

/** What became of one submitted commit. */
export type CommitOutcome =
  | { readonly ok: true }
  | {
      readonly ok: false;
      readonly error: Error;
      /** The server asked to wait this long before retrying (RESOURCE_EXHAUSTED). */
      readonly retryAfterMs?: number;
      /** The channel's epoch as the server reported it (a conflict): the channel continues from there. */
      readonly currentEpoch?: number;
    };

/** Where commits go: epochd's SubmitCommit or an etcd compare-and-swap transaction. */
export interface CommitTarget {
  /**
   * Submits channel `index`'s commit building on `epoch`; `done` is called exactly once. Returns false,
   * without calling `done`, when the channel has no commit for that epoch (a finite supply ran out).
   */
  submit(index: number, epoch: number, done: (outcome: CommitOutcome) => void): boolean;
}

/** Shape and length of one phase. */
export interface CommitPhaseOptions {
  readonly concurrency: number;
  readonly warmupMs: number;
  /**
   * Also warm up until every channel has had a commit in this phase (bounded
   * by this many ms; 0: no such rule). The measured window then sees the
   * steady state of all channels in use, not the first commit of channels
   * quiet since the set-up (a hibernating channel group loads on its first
   * commit; see docs/benchmarks.md).
   */
  readonly warmEveryChannelMsMax?: number;
  readonly measureMs: number;
  /** Most commits the phase sends (a share of a finite supply); unlimited when absent. */
  readonly commitsMax?: number;
  /** After the window, in-flight commits get this long to finish. */
  readonly drainMs?: number;
  /** Told once, when the measured window opens. */
  readonly onWindowOpen?: () => void;
}

/** What one phase measured. */
export interface CommitPhaseResult {
  readonly concurrency: number;
  /** Commits accepted (and, on epochd, certified) inside the measured window. */
  readonly commits: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  /** Length of the measured window: shorter than asked when the supply of commits ran out. */
  readonly measuredMs: number;
  /** How long the warm-up took (longer than asked when it waited for every channel to have a commit). */
  readonly warmupMs: number;
  readonly commitsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Set when the supply or budget ran out before the window ended. */
  readonly exhausted: boolean;
}

/** After an error without a retry hint, a channel waits this long before its next attempt. */
const errorBackoffMs = 10;
/** Longest retry delay honoured (a bound on how long a slot can sit idle). */
const retryAfterMsMax = 2000;

/** A FIFO of channel indexes, preallocated: at most `capacity` entries. */
class ChannelQueue {
  private readonly items: Int32Array;
  private head = 0;
  private size = 0;

  constructor(capacity: number) {
    this.items = new Int32Array(capacity);
  }

  get length(): number {
    return this.size;
  }

  push(index: number): void {
    if (this.size === this.items.length) throw new Error("channel queue overflow: a channel was queued twice");
    this.items[(this.head + this.size) % this.items.length] = index;
    this.size++;
  }

  shift(): number | undefined {
    if (this.size === 0) return undefined;
    const index = this.items[this.head]!;
    this.head = (this.head + 1) % this.items.length;
    this.size--;
    return index;
  }
}

/**
 * Runs one phase against `target`. `epochs[i]` is channel i's current epoch: read to build each commit and
 * advanced when it is accepted (or set from a conflict's current epoch), so consecutive phases continue
 * where the last one left off. Resolves when the window closed and in-flight commits drained.
 */
export function runCommitPhase(target: CommitTarget, epochs: number[], options: CommitPhaseOptions): Promise<CommitPhaseResult> {
  if (options.concurrency > epochs.length) throw new Error(`concurrency ${options.concurrency} needs at least as many channels, have ${epochs.length}`);
  // Least-advanced channels first: a finite supply then runs out on all channels at about the same time.
  const idle = new ChannelQueue(epochs.length);
  const order = epochs.map((epoch, index) => ({ epoch, index })).sort((x, y) => x.epoch - y.epoch || x.index - y.index);
  for (const { index } of order) idle.push(index);
  const recorder = new LatencyRecorder();
  const start = nowMs();
  // The window opens once the warm-up time passed and, with warmEveryChannelMsMax, every channel had
  // a commit sent (the FIFO sends each channel once per epochs.length sends), or that bound passed.
  const warmEveryChannel = (options.warmEveryChannelMsMax ?? 0) > 0;
  let windowStart = warmEveryChannel ? Number.POSITIVE_INFINITY : start + options.warmupMs;
  let windowEnd = windowStart + options.measureMs;
  const openTimer = warmEveryChannel ? undefined : setTimeout(() => options.onWindowOpen?.(), options.warmupMs);
  const state = { commits: 0, errors: 0, sent: 0, inflight: 0, exhausted: false, finished: false, firstError: undefined as string | undefined };

  return new Promise((resolve) => {
    const finish = () => {
      if (state.finished) return;
      state.finished = true;
      clearTimeout(drainTimer);
      clearTimeout(openTimer);
      const measuredMs = Number.isFinite(windowStart) ? Math.max(0, windowEnd - windowStart) : 0;
      const [p50 = Number.NaN, p99 = Number.NaN, max = Number.NaN] = recorder.percentiles([50, 99, 100]);
      resolve({
        concurrency: options.concurrency,
        commits: state.commits,
        errors: state.errors,
        firstError: state.firstError,
        measuredMs,
        warmupMs: Number.isFinite(windowStart) ? windowStart - start : nowMs() - start,
        commitsPerSecond: measuredMs > 0 ? (state.commits * 1000) / measuredMs : Number.NaN,
        p50Ms: p50,
        p99Ms: p99,
        maxMs: max,
        exhausted: state.exhausted,
      });
    };
    // Restarted when the window opens late (see maybeOpenWindow).
    const drainTimer = setTimeout(finish, Math.max(options.warmupMs, options.warmEveryChannelMsMax ?? 0) + options.measureMs + (options.drainMs ?? 10_000));
    const maybeOpenWindow = (atMs: number) => {
      if (windowStart !== Number.POSITIVE_INFINITY || atMs < start + options.warmupMs) return;
      if (state.sent < epochs.length && atMs < start + (options.warmEveryChannelMsMax ?? 0)) return;
      windowStart = atMs;
      windowEnd = windowStart + options.measureMs;
      drainTimer.refresh();
      options.onWindowOpen?.();
    };

    const runOut = (atMs: number) => {
      if (!state.exhausted) windowEnd = Math.min(windowEnd, Math.max(windowStart, atMs));
      state.exhausted = true;
    };
    const inWindow = (atMs: number) => atMs >= windowStart && atMs < windowEnd;
    /** Starts the next commit on the next idle channel that has one; ends the slot when none does. */
    const send = (): void => {
      const sentMs = nowMs();
      maybeOpenWindow(sentMs);
      if (sentMs >= windowEnd || state.exhausted) {
        if (state.inflight === 0) finish();
        return;
      }
      for (let tries = idle.length; tries > 0; tries--) {
        if (options.commitsMax !== undefined && state.sent >= options.commitsMax) break;
        const index = idle.shift()!;
        const epoch = epochs[index]!;
        state.inflight++;
        const started = target.submit(index, epoch, (outcome) => settle(index, epoch, sentMs, outcome));
        if (started) {
          state.sent++;
          return;
        }
        state.inflight--; // retired: this channel has no commit left; not queued again
      }
      runOut(sentMs);
      if (state.inflight === 0) finish();
    };
    const settle = (index: number, epoch: number, sentMs: number, outcome: CommitOutcome): void => {
      state.inflight--;
      const doneMs = nowMs();
      if (outcome.ok) {
        epochs[index] = epoch + 1;
        if (inWindow(doneMs)) state.commits++;
        // As in load.ts: every commit sent inside the window counts, even one answered during the drain
        // (at high concurrency a commit can take longer than the window; dropping those would bias p99 down).
        if (sentMs >= windowStart && sentMs < windowEnd) recorder.record(doneMs - sentMs);
        idle.push(index);
        send();
        return;
      }
      if (inWindow(doneMs)) state.errors++;
      state.firstError ??= outcome.error.message;
      if (outcome.currentEpoch !== undefined) epochs[index] = outcome.currentEpoch;
      idle.push(index);
      setTimeout(send, Math.min(retryAfterMsMax, outcome.retryAfterMs ?? errorBackoffMs));
    };
    for (let i = 0; i < options.concurrency; i++) send();
  });
}

/** A phase's result plus resource use. */
export interface MeasuredCommitRow extends CommitPhaseResult {
  /** CPU use per server process during the phase (warm-up included), percent of one core. */
  readonly cpuPercent: Record<string, number>;
  /** Highest resident memory sampled per server process during the phase, MiB. */
  readonly peakRssMiB: Record<string, number>;
  /** CPU use of the load generator (this process), percent of one core. */
  readonly clientCpuPercent: number;
  /** Work per commit accepted in the window, summed over the servers (see work-counters.ts); absent without `readWork`. */
  readonly workPerCommit?: WorkTotals;
  /** Mean ms of each SubmitCommit stage in the window, as the homeservers timed it; absent without `readWork`. */
  readonly stageMs?: Record<string, number>;
}

/**
 * Runs one phase while sampling the server processes' CPU and memory and this
 * process's CPU; with `readWork`, also reads the servers' work counters when
 * the window opens and `measureMs` later, for the work per commit.
 */
export async function measureCommitRow(
  target: CommitTarget,
  epochs: number[],
  servers: ReadonlyArray<{ readonly name: string; readonly pid: number }>,
  options: CommitPhaseOptions,
  readWork?: () => Promise<WorkTotals>,
): Promise<MeasuredCommitRow> {
  const sampler = new ProcessSampler(servers.map((s) => s.pid));
  const clientStart = process.cpuUsage();
  const startedMs = performance.now();
  sampler.start();
  let work: Promise<[WorkTotals, WorkTotals]> | undefined;
  const onWindowOpen = () => {
    if (readWork === undefined || work !== undefined) return;
    const before = readWork();
    work = before.then(async (totals) => {
      await new Promise((resolve) => setTimeout(resolve, options.measureMs));
      return [totals, await readWork()];
    });
  };
  const result = await runCommitPhase(target, epochs, { ...options, onWindowOpen });
  const counted = await work?.catch(() => undefined);
  const samples = sampler.stop();
  const clientUsage = process.cpuUsage(clientStart);
  const elapsedMs = Math.max(1, performance.now() - startedMs);
  const cpuPercent: Record<string, number> = {};
  const peakRssMiB: Record<string, number> = {};
  for (const server of servers) {
    cpuPercent[server.name] = samples.get(server.pid)?.cpuPercent ?? 0;
    peakRssMiB[server.name] = samples.get(server.pid)?.peakRssMiB ?? 0;
  }
  const clientCpuPercent = (100 * (clientUsage.user + clientUsage.system)) / 1000 / elapsedMs;
  return { ...result, cpuPercent, peakRssMiB, clientCpuPercent, ...(counted === undefined ? {} : { workPerCommit: perOperation(counted[0], counted[1], result.commits), stageMs: stageMeansMs(counted[0], counted[1]) }) };
}
