/**
 * Summarises a V8 .cpuprofile (as written by `node --cpu-prof`): self time
 * per function, and inclusive time per function, so a benchmark can name the
 * hot spots of a server process without opening a profiler UI.
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** One function's share of the profile. */
export interface HotSpot {
  readonly name: string;
  readonly selfPercent: number;
  readonly totalPercent: number;
}

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.replace(/^file:\/\//, "").replace(/^.*\/(node_modules\/)/, "$1").replace(/^.*\/(src|bench)\//, "$1/");
  return `${functionName === "" ? "(anonymous)" : functionName} ${file === "" ? "" : `${file}:${lineNumber + 1}`}`.trim();
}

/** Where a frame's code lives: a package under node_modules, a project file, node's internals, or a V8 pseudo-frame. */
function moduleOf(node: ProfileNode): string {
  const url = node.callFrame.url;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg !== null) return pkg[1]!;
  const project = /\/((?:src|bench)\/.*)$/.exec(url);
  if (project !== null) return project[1]!;
  if (url.startsWith("node:")) return "node internals";
  return url === "" ? node.callFrame.functionName || "(native)" : url;
}

/** The top `count` functions by self time and by inclusive time, as percentages of all samples. */
export function summariseProfile(path: string, count: number): { bySelf: HotSpot[]; byTotal: HotSpot[]; byModule: Array<{ module: string; selfPercentOfBusy: number }>; busyPercent: number; sampledMs: number } {
  const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const selfUs = new Map<string, number>();
  const totalUs = new Map<string, number>();
  const moduleUs = new Map<string, number>();
  let allUs = 0;
  let busyUs = 0;
  for (const [i, sample] of profile.samples.entries()) {
    const us = profile.timeDeltas[i] ?? 0;
    allUs += us;
    const leaf = byId.get(sample);
    if (leaf === undefined) continue;
    if (leaf.callFrame.functionName !== "(idle)") {
      busyUs += us;
      moduleUs.set(moduleOf(leaf), (moduleUs.get(moduleOf(leaf)) ?? 0) + us);
    }
    selfUs.set(frameName(leaf), (selfUs.get(frameName(leaf)) ?? 0) + us);
    const seen = new Set<string>();
    for (let id: number | undefined = sample, depth = 0; id !== undefined && depth < 1000; id = parent.get(id), depth++) {
      const name = frameName(byId.get(id)!);
      if (seen.has(name)) continue;
      seen.add(name);
      totalUs.set(name, (totalUs.get(name) ?? 0) + us);
    }
  }
  const top = (table: Map<string, number>, key: "selfPercent" | "totalPercent"): HotSpot[] =>
    [...table.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(([name, us]) => {
        const percent = (100 * us) / Math.max(1, allUs);
        return { name, selfPercent: key === "selfPercent" ? percent : (100 * (selfUs.get(name) ?? 0)) / Math.max(1, allUs), totalPercent: key === "totalPercent" ? percent : (100 * (totalUs.get(name) ?? 0)) / Math.max(1, allUs) };
      });
  const byModule = [...moduleUs.entries()].sort((a, b) => b[1] - a[1]).slice(0, count).map(([module, us]) => ({ module, selfPercentOfBusy: (100 * us) / Math.max(1, busyUs) }));
  return { bySelf: top(selfUs, "selfPercent"), byTotal: top(totalUs, "totalPercent"), byModule, busyPercent: (100 * busyUs) / Math.max(1, allUs), sampledMs: allUs / 1000 };
}
