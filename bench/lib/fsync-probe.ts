/**
 * Measures what one durable 1 KiB append costs on a directory's file system
 * right now (write + fdatasync, as a write-ahead log does), so a benchmark
 * report carries the disk's state at the time: both systems under test wait
 * for this on every commit, and on a shared machine it varies several-fold.
 */
import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";

/** Latency of write + fdatasync of `recordBytes`, appended `count` times to a fresh file in `dir`. */
export function probeFsyncMs(dir: string, count = 200, recordBytes = 1024): { p50Ms: number; p99Ms: number } {
  const path = join(dir, `fsync-probe-${process.pid}.dat`);
  const fd = openSync(path, "w");
  const record = Buffer.alloc(recordBytes, 0x5a);
  const latenciesMs: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const start = performance.now();
      writeSync(fd, record);
      fdatasyncSync(fd);
      latenciesMs.push(performance.now() - start);
    }
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
  latenciesMs.sort((a, b) => a - b);
  const at = (p: number) => latenciesMs[Math.min(count - 1, Math.floor((p / 100) * count))]!;
  return { p50Ms: at(50), p99Ms: at(99) };
}
