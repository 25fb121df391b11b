/**
 * Micro-benchmark of the engine's synced persist path (not a test): 1 KiB
 * entries, one group per call versus many groups batched into one call.
 * Prints syncs per second, entries per second and p50/p99 latency of a call.
 * Run: node --import tsx test/storage/persist-bench.ts [durationMs]
 */
import { performance } from "node:perf_hooks";
import { StorageEngine, type GroupStore } from "../../src/storage/storage-engine.ts";
import { entry, makeTempDir, ready, removeDir } from "./helpers.ts";

const durationMs = Number(process.argv[2] ?? 3000);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

async function run(label: string, groupsPerBatch: number, entriesPerGroup: number, sync = true): Promise<void> {
  const dir = makeTempDir("bench");
  const syncLatenciesMs: number[] = [];
  const engine = await StorageEngine.open(dir, { sync, onSyncLatency: (ms) => syncLatenciesMs.push(ms) });
  try {
    const groups: GroupStore[] = [];
    for (let i = 0; i < groupsPerBatch; i++) groups.push(await engine.openGroup(`bench-${i}`, ["hs1"]));
    const callLatenciesMs: number[] = [];
    let entriesWritten = 0;
    const start = performance.now();
    while (performance.now() - start < durationMs) {
      const items = groups.map((group) => {
        const first = group.log.lastIndex() + 1;
        const batch = Array.from({ length: entriesPerGroup }, (_, i) => entry(first + i, 1, 1024));
        return { group, ready: ready({ entries: batch, hardState: { term: 1, vote: "hs1", commit: first - 1 } }) };
      });
      const callStart = performance.now();
      await engine.persistReadies(items);
      callLatenciesMs.push(performance.now() - callStart);
      entriesWritten += groupsPerBatch * entriesPerGroup;
    }
    const elapsedS = (performance.now() - start) / 1000;
    const calls = [...callLatenciesMs].sort((a, b) => a - b);
    const syncs = [...syncLatenciesMs].sort((a, b) => a - b);
    console.log(
      `${label.padEnd(34)} ${String(Math.round(calls.length / elapsedS)).padStart(6)} calls/s ` +
        `${String(Math.round(entriesWritten / elapsedS)).padStart(7)} entries/s  ` +
        `call p50 ${percentile(calls, 50).toFixed(3)} ms p99 ${percentile(calls, 99).toFixed(3)} ms  ` +
        `fsync p50 ${percentile(syncs, 50).toFixed(3)} ms p99 ${percentile(syncs, 99).toFixed(3)} ms`,
    );
  } finally {
    await engine.close();
    removeDir(dir);
  }
}

await run("1 group x 1 entry, NOT synced", 1, 1, false);
await run("1 group x 1 entry per sync", 1, 1);
await run("1 group x 16 entries per sync", 1, 16);
await run("16 groups x 1 entry per sync", 16, 1);
await run("64 groups x 4 entries per sync", 64, 4);
