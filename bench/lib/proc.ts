/**
 * Per-process resource readings from /proc (Linux): peak and current resident
 * memory, and CPU time, so a benchmark can report what each server process
 * cost. Readings of a process that is gone are undefined, never a throw.
 */
import { readFileSync } from "node:fs";

/** The kernel's clock ticks per second for /proc/PID/stat times (USER_HZ, 100 on Linux). */
const clockTicksPerSecond = 100;

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

function statusKiB(pid: number, field: "VmHWM" | "VmRSS"): number | undefined {
  const text = readText(`/proc/${pid}/status`);
  const match = text === undefined ? null : new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return match === null ? undefined : Number(match[1]);
}

/** Peak resident set size of `pid` over its lifetime (VmHWM), in MiB. */
export function peakRssMiB(pid: number): number | undefined {
  const kib = statusKiB(pid, "VmHWM");
  return kib === undefined ? undefined : kib / 1024;
}

/** Current resident set size of `pid` (VmRSS), in MiB. */
export function rssMiB(pid: number): number | undefined {
  const kib = statusKiB(pid, "VmRSS");
  return kib === undefined ? undefined : kib / 1024;
}

/** User plus system CPU time `pid` has used so far, in milliseconds. */
export function cpuTimeMs(pid: number): number | undefined {
  const text = readText(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  // Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return ((utime + stime) * 1000) / clockTicksPerSecond;
}

/** Whether a process with this id exists (signal 0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends `signal` to `pid`, ignoring a process that is already gone. */
export function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** SIGTERM to each pid, then SIGKILL to any still alive after `graceMs`. Bounded in time. */
export async function stopPids(pids: readonly number[], graceMs = 10_000): Promise<void> {
  for (const pid of pids) signalPid(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (pids.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const pid of pids) if (isAlive(pid)) signalPid(pid, "SIGKILL");
}

/**
 * Samples the resident memory and CPU time of a set of processes while a
 * benchmark phase runs: `start`, then `stop` returns each process's peak RSS
 * seen and CPU utilisation (percent of one core) over the interval.
 */
export class ProcessSampler {
  private readonly peakMiB = new Map<number, number>();
  private readonly cpuStartMs = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private startedMs = 0;

  constructor(private readonly pids: readonly number[], private readonly intervalMs = 250) {}

  start(): void {
    this.startedMs = performance.now();
    for (const pid of this.pids) this.cpuStartMs.set(pid, cpuTimeMs(pid) ?? 0);
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  private sample(): void {
    for (const pid of this.pids) {
      const rss = rssMiB(pid);
      if (rss !== undefined) this.peakMiB.set(pid, Math.max(rss, this.peakMiB.get(pid) ?? 0));
    }
  }

  stop(): Map<number, { peakRssMiB: number; cpuPercent: number }> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.sample();
    const elapsedMs = Math.max(1, performance.now() - this.startedMs);
    const result = new Map<number, { peakRssMiB: number; cpuPercent: number }>();
    for (const pid of this.pids) {
      const cpuMs = (cpuTimeMs(pid) ?? 0) - (this.cpuStartMs.get(pid) ?? 0);
      result.set(pid, { peakRssMiB: this.peakMiB.get(pid) ?? 0, cpuPercent: (100 * cpuMs) / elapsedMs });
    }
    return result;
  }
}
