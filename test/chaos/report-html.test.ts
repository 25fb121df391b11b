/**
 * The report pages render in headless Chromium (Debian's `chromium`) without errors: a chaos report page
 * (from a hand-made report) and a benchmark page (epochd next to etcd) are loaded, their script must draw
 * the timeline / bar charts and mark the page rendered, with no console message or script error. A page
 * whose data breaks the script must be caught the same way (so the check can fail). Skipped, saying so,
 * only when chromium is not installed (.ci/run installs it).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { benchReportPage } from "../../src/chaos/bench-page.ts";
import { bucketize, chaosReportPage, type ChaosReport } from "../../src/chaos/chaos-report.ts";
import { defaultChaosConfig } from "../../src/chaos/chaos-config.ts";
import { checkHistory } from "../../src/chaos/checker.ts";
import { renderReportHtml, type ReportPage } from "../../src/chaos/report-html.ts";
import { buildHistory, correctPlan, toRunHistory } from "./history-builders.ts";

const chromium = ["chromium", "chromium-browser"].find((bin) => spawnSync("sh", ["-c", `command -v ${bin}`]).status === 0);
if (chromium === undefined) console.warn("SKIPPED report rendering test: no chromium on this machine (apt-get install -y chromium)");
const dir = mkdtempSync(join(tmpdir(), "epochd-report-html-"));

/** Loads `page` in headless chromium; returns the DOM after scripts ran and the console lines. */
function render(page: ReportPage | string, name: string): { dom: string; console: string[] } {
  const path = join(dir, `${name}.html`);
  writeFileSync(path, typeof page === "string" ? page : renderReportHtml(page));
  const result = spawnSync(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom", `file://${path}`], { encoding: "utf8", timeout: 60_000 });
  return { dom: result.stdout, console: result.stderr.split("\n").filter((l) => l.includes(":CONSOLE")) };
}

function count(dom: string, pattern: RegExp): number {
  return dom.match(pattern)?.length ?? 0;
}

function chaosReport(): ChaosReport {
  const history = toRunHistory(buildHistory(correctPlan()));
  return {
    seed: 42,
    config: { ...defaultChaosConfig, seed: 42 },
    startedAt: new Date(0).toISOString(),
    workloadMs: 100,
    totalMs: 5_000,
    schedule: [],
    faults: [
      { index: 0, kind: "kill", target: "hs1", detail: "kill -9 hs1", startMs: 10, endMs: 30 },
      { index: 1, kind: "partition", target: "hs2", detail: "isolate: hs2 cut from hs1, hs3", startMs: 40, endMs: 70 },
    ],
    faultsPerKind: { kill: 1, partition: 1 },
    leaderChanges: [
      { atMs: 0, group: "cluster", leader: "hs1", term: 2 },
      { atMs: 15, group: "cluster", leader: "hs2", term: 3 },
    ],
    ops: { total: history.ops.length, byKindOutcome: { "commit/ok": 3 } },
    workload: { actions: { message: 2 }, errors: {} },
    buckets: bucketize(history.ops, 100, 10),
    check: checkHistory(history),
  };
}

describe.skipIf(chromium === undefined)("report pages in headless chromium", () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("draws a chaos report's timeline without errors", () => {
    const { dom, console: lines } = render(chaosReportPage(chaosReport()), "chaos");
    expect(lines).toEqual([]);
    expect(dom).toContain('data-rendered="ok"');
    expect(dom).not.toMatch(/<body[^>]*data-errors=/);
    expect(dom).toContain('<svg id="timeline"');
    expect(count(dom, /<rect class="span"/g)).toBe(4); // two faults, two leader terms
    expect(count(dom, /<polyline class="series"/g)).toBe(4);
    expect(count(dom, /<line class="marker"/g)).toBe(2);
  }, 90_000);

  it("draws a benchmark page with etcd side by side", () => {
    const json = {
      machine: { cores: 2 },
      runs: [
        { system: "epochd", rows: [{ concurrency: 1, writesPerSecond: 200, p50Ms: 4, p99Ms: 9 }, { concurrency: 16, writesPerSecond: 900, p50Ms: 12, p99Ms: 30 }] },
        { system: "etcd", rows: [{ concurrency: 1, writesPerSecond: 300, p50Ms: 3, p99Ms: 8 }, { concurrency: 16, writesPerSecond: 1100, p50Ms: 10, p99Ms: 25 }] },
      ],
    };
    const { dom, console: lines } = render(benchReportPage("raft", json), "bench");
    expect(lines).toEqual([]);
    expect(dom).toContain('data-rendered="ok"');
    expect(count(dom, /<svg class="bars"/g)).toBe(3);
    expect(count(dom, /<title>etcd: /g)).toBe(6);
  }, 90_000);

  it("catches a page whose script fails", () => {
    const broken = { ...chaosReportPage(chaosReport()), timeline: { durationMs: 1, lanes: null } } as unknown as ReportPage;
    const { dom, console: lines } = render(broken, "broken");
    expect(dom).not.toContain('data-rendered="ok"');
    expect(dom).toMatch(/<body[^>]*data-errors="[^"]+"/);
    expect(lines.some((l) => l.includes("Uncaught"))).toBe(true);
  }, 90_000);
});
