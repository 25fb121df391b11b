/**
 * Polls every homeserver's AdminService.Status on its peer port during a chaos run and records, per Raft
 * group, who leads in which term: the leader changes drawn on the report's timeline.
 */
import type { ChaosCluster } from "./chaos-cluster.ts";

/** A leader as observed at `atMs` (ms since the run started): the answer with the highest term wins. */
export interface LeaderChange {
  readonly atMs: number;
  readonly group: string;
  readonly leader: string;
  readonly term: number;
}

/** Records leader changes until stopped. */
export class LeaderPoller {
  readonly changes: LeaderChange[] = [];
  private readonly current = new Map<string, { leader: string; term: number }>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly now: () => number,
    private readonly intervalMs = 500,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const statuses = await Promise.all(this.cluster.ids().map((id) => this.cluster.status(id, Math.min(400, this.intervalMs))));
      const best = new Map<string, { leader: string; term: number }>();
      for (const status of statuses) {
        for (const g of status?.groups ?? []) {
          const term = Number(g.term);
          const known = best.get(g.groupId);
          if (g.leaderId !== "" && (known === undefined || term > known.term)) best.set(g.groupId, { leader: g.leaderId, term });
        }
      }
      for (const [group, seen] of best) {
        const was = this.current.get(group);
        if (was !== undefined && was.leader === seen.leader && was.term === seen.term) continue;
        if (was !== undefined && seen.term < was.term) continue;
        this.current.set(group, seen);
        this.changes.push({ atMs: this.now(), group, leader: seen.leader, term: seen.term });
      }
    } finally {
      this.polling = false;
    }
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }
}
