/**
 * Applies scheduled faults to a ChaosCluster and undoes them after their duration: kill -9 and restart,
 * SIGSTOP and SIGCONT, partitions and delays through the fault proxies, slow and stalled fsync and wall
 * clock jumps through the homeservers' fault control files. Records what was done, when, to whom.
 */
import type { ChaosCluster } from "./chaos-cluster.ts";
import type { FaultTarget, ScheduledFault } from "./schedule.ts";

/** A fault as it happened: the schedule entry, the homeservers it hit and when (ms since the run started). */
export interface InjectedFault {
  readonly index: number;
  readonly kind: ScheduledFault["kind"];
  readonly target: string;
  readonly detail: string;
  readonly startMs: number;
  endMs: number | undefined;
}

/**
 * Resolves a role to a homeserver id, from the homeservers' own status answers. The "leader" is the
 * homeserver leading the most channel groups of more than one voter (where commits are ordered and a
 * quorum matters), else the cluster group's.
 */
async function resolveTarget(cluster: ChaosCluster, target: FaultTarget, not?: string): Promise<string> {
  const ids = cluster.ids().filter((id) => id !== not);
  if (target !== "leader" && target !== "follower") return target === not ? ids[0]! : target;
  const statuses = await Promise.all(cluster.ids().map((id) => cluster.status(id)));
  const channelsLed = new Map<string, number>();
  for (const status of statuses) {
    for (const group of status?.groups ?? []) {
      if (group.groupId.startsWith("channel/") && group.voters.length > 1 && group.leaderId === status!.nodeId) channelsLed.set(group.leaderId, (channelsLed.get(group.leaderId) ?? 0) + 1);
    }
  }
  const busiest = [...channelsLed].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]?.[0];
  const leader = busiest ?? statuses.find((s) => s?.groups[0]?.leaderId !== undefined && s.groups[0].leaderId !== "")?.groups[0]?.leaderId;
  if (target === "leader" && leader !== undefined && leader !== not) return leader;
  const followers = ids.filter((id) => id !== leader);
  return followers[0] ?? ids[0]!;
}

function others(cluster: ChaosCluster, id: string): string[] {
  return cluster.ids().filter((o) => o !== id);
}

/** Starts `fault`; returns what it hit and the function that undoes it. */
async function start(cluster: ChaosCluster, fault: ScheduledFault): Promise<{ target: string; detail: string; undo: () => Promise<void> | void }> {
  const target = await resolveTarget(cluster, fault.target);
  const amount = fault.amountMs ?? 0;
  switch (fault.kind) {
    case "kill":
      await cluster.kill(target);
      return { target, detail: `kill -9 ${target}, restart after ${fault.durationMs} ms`, undo: () => cluster.start(target) };
    case "pause":
      cluster.setPaused(target, true);
      return { target, detail: `SIGSTOP ${target} for ${fault.durationMs} ms`, undo: () => cluster.setPaused(target, false) };
    case "partition": {
      const peers = fault.mode === "pair" ? [await resolveTarget(cluster, fault.peer ?? "leader", target)] : others(cluster, target);
      const links: Array<[string, string]> = peers.flatMap((p) => (fault.mode === "one-way" ? [[target, p] as [string, string]] : [[target, p] as [string, string], [p, target] as [string, string]]));
      for (const [a, b] of links) cluster.network.setBlocked(a, b, true);
      const detail = fault.mode === "one-way" ? `${target} cannot send to ${peers.join(", ")}` : `${target} cut from ${peers.join(", ")}`;
      return { target, detail: `${fault.mode}: ${detail}`, undo: () => links.forEach(([a, b]) => cluster.network.setBlocked(a, b, false)) };
    }
    case "delay": {
      const links = others(cluster, target).flatMap((p) => [[target, p], [p, target]] as Array<[string, string]>);
      for (const [a, b] of links) cluster.network.setDelay(a, b, amount);
      return { target, detail: `${amount} ms each way between ${target} and the others`, undo: () => links.forEach(([a, b]) => cluster.network.setDelay(a, b, 0)) };
    }
    case "fsync-slow":
    case "fsync-stall":
      cluster.setControl(target, { syncDelayMs: amount });
      return { target, detail: `${amount} ms before every synced write of ${target}`, undo: () => cluster.setControl(target, { syncDelayMs: 0 }) };
    case "clock-jump": {
      const before = cluster.get(target).control.clockOffsetMs;
      cluster.setControl(target, { clockOffsetMs: before + amount });
      return { target, detail: `${target}'s wall clock jumps ${amount > 0 ? "+" : ""}${amount} ms, back after ${fault.durationMs} ms`, undo: () => cluster.setControl(target, { clockOffsetMs: before }) };
    }
  }
}

/** Runs a schedule against a cluster, in real time from `now()`; `stop()` ends it early and undoes what is active. */
export class FaultInjector {
  readonly injected: InjectedFault[] = [];
  private stopped = false;
  private active: { fault: InjectedFault; undo: () => Promise<void> | void } | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly schedule: readonly ScheduledFault[],
    private readonly now: () => number,
    private readonly log: (line: string) => void,
  ) {}

  private sleepUntil(ms: number): Promise<void> {
    const waitMs = ms - this.now();
    if (waitMs <= 0 || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Plays the schedule; resolves when it is over or stopped. */
  async run(): Promise<void> {
    for (const fault of this.schedule) {
      await this.sleepUntil(fault.atMs);
      if (this.stopped) return;
      const started = await start(this.cluster, fault);
      const record: InjectedFault = { index: fault.index, kind: fault.kind, target: started.target, detail: started.detail, startMs: this.now(), endMs: undefined };
      this.injected.push(record);
      this.active = { fault: record, undo: started.undo };
      this.log(`fault ${fault.index} ${fault.kind}: ${started.detail}`);
      await this.sleepUntil(record.startMs + fault.durationMs);
      await this.endActive();
    }
  }

  private async endActive(): Promise<void> {
    const active = this.active;
    this.active = undefined;
    if (active === undefined) return;
    await active.undo();
    active.fault.endMs = this.now();
  }

  /** Stops the schedule and undoes the active fault. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.endActive();
  }
}
