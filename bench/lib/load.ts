/**
 * A closed-loop load generator: `concurrency` writes always in flight against
 * a {@link WriteTarget}, for a warm-up and then a fixed measured window.
 * Throughput counts the writes answered successfully inside the window;
 * latency (send to answer) is recorded for writes sent inside it.
 */
import { LatencyRecorder, nowMs } from "./stats.ts";

/** Something that accepts writes and calls back when each is answered. */
export interface WriteTarget {
  /** Sends one write; `done` gets null when it was acknowledged, or the error. Must call `done` exactly once. */
  write(key: Buffer, value: Buffer, done: (error: Error | null) => void): void;
}

/** Shape and length of one phase. */
export interface PhaseOptions {
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  /** Keys are drawn uniformly from this many distinct keys, so the stored state stays bounded. */
  readonly keySpace: number;
  readonly valueBytes: number;
  /** After the window, in-flight writes get this long to finish before the phase gives up on them. */
  readonly drainMs?: number;
}

/** What one phase measured. */
export interface PhaseResult {
  readonly concurrency: number;
  readonly writes: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly measuredMs: number;
  readonly writesPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/** After an error, a slot waits this long before its next write (no hot loop against a failing server). */
const errorBackoffMs = 10;

/** Runs one phase against `target`; resolves when the window closed and in-flight writes drained (or timed out). */
export function runPhase(target: WriteTarget, options: PhaseOptions): Promise<PhaseResult> {
  const keys = Array.from({ length: options.keySpace }, (_, i) => Buffer.from(`bench/${String(i).padStart(6, "0")}`));
  const value = Buffer.alloc(options.valueBytes);
  for (let i = 0; i < value.length; i++) value[i] = (i * 131 + 7) & 0xff;
  const recorder = new LatencyRecorder();
  const start = nowMs();
  const windowStart = start + options.warmupMs;
  const windowEnd = windowStart + options.measureMs;
  let writes = 0;
  let errors = 0;
  let firstError: string | undefined;
  let inflight = 0;

  return new Promise((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(drainTimer);
      const [p50 = Number.NaN, p99 = Number.NaN, max = Number.NaN] = recorder.percentiles([50, 99, 100]);
      resolve({
        concurrency: options.concurrency,
        writes,
        errors,
        firstError,
        measuredMs: options.measureMs,
        writesPerSecond: (writes * 1000) / options.measureMs,
        p50Ms: p50,
        p99Ms: p99,
        maxMs: max,
      });
    };
    const drainTimer = setTimeout(finish, options.warmupMs + options.measureMs + (options.drainMs ?? 10_000));
    const send = () => {
      const sentMs = nowMs();
      if (sentMs >= windowEnd) {
        if (inflight === 0) finish();
        return;
      }
      inflight++;
      const key = keys[Math.floor(Math.random() * keys.length)]!;
      target.write(key, value, (error) => {
        inflight--;
        const doneMs = nowMs();
        if (error !== null) {
          if (doneMs >= windowStart && doneMs < windowEnd) errors++;
          firstError ??= error.message;
          setTimeout(send, errorBackoffMs);
          return;
        }
        if (doneMs >= windowStart && doneMs < windowEnd) writes++;
        if (sentMs >= windowStart) recorder.record(doneMs - sentMs);
        send();
      });
    };
    for (let i = 0; i < options.concurrency; i++) send();
  });
}
