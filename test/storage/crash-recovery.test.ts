/**
 * kill -9 test: a child process writes through the engine (synced Readies of
 * several groups, applies, snapshots with compaction) and is killed with
 * SIGKILL at a random moment. On reopen, the store must hold exactly the state
 * after the last acknowledged operation or after the one in flight: nothing
 * acknowledged lost, no half-written batch, applied index matching the data.
 * The oracle is a crash-free replay of the same seeded workload.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { StorageEngine, type GroupStore } from "../../src/storage/storage-engine.ts";
import { crashGroupIds, CrashWorkload } from "./crash-workload.ts";
import { dumpLog, makeTempDir, propertySeed, removeDir } from "./helpers.ts";

const childScript = fileURLToPath(new URL("./crash-child.ts", import.meta.url));
const operationsMax = 4000;
const childTimeoutMs = 20_000;

/** Runs the child, kills it `killAfterMs` after it is ready, and returns the last acknowledged operation (-1: none). */
function runAndKill(dir: string, seed: number, killAfterMs: number): Promise<{ lastAck: number; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", childScript, dir, String(seed), String(operationsMax)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    let errors = "";
    let killTimer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill("SIGKILL"), childTimeoutMs);
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (killTimer === undefined && output.includes("ready\n")) {
        killTimer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      }
    });
    child.stderr.on("data", (chunk: Buffer) => (errors += chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(guard);
      clearTimeout(killTimer);
      if (signal !== "SIGKILL" && code !== 0) return reject(new Error(`crash child failed (${code}): ${errors}`));
      if (!output.includes("ready\n")) return reject(new Error(`crash child never got ready: ${errors}`));
      const acks = [...output.matchAll(/^ack (\d+)$/gm)].map((match) => Number(match[1]));
      resolve({ lastAck: acks.length === 0 ? -1 : acks[acks.length - 1]!, killed: signal === "SIGKILL" });
    });
  });
}

/** Everything the groups of an open engine hold, as plain data. */
async function dumpGroups(groups: readonly GroupStore[]): Promise<unknown> {
  const dump: Record<string, unknown> = {};
  for (const group of groups) {
    const data: Record<string, string> = {};
    for await (const [key, value] of group.scan(new Uint8Array(0))) data[Buffer.from(key).toString()] = Buffer.from(value).toString();
    // The applied index and the data written with it always travel together.
    expect(data["applied"] ?? "0").toBe(String(group.appliedIndex));
    dump[group.groupId] = { log: dumpLog(group.log), appliedIndex: group.appliedIndex, data };
  }
  return dump;
}

/** Reopens the crashed store and dumps it. */
async function recoveredState(dir: string): Promise<unknown> {
  const engine = await StorageEngine.open(dir, { sync: false });
  try {
    const groups: GroupStore[] = [];
    for (const id of crashGroupIds) groups.push(await engine.openGroup(id));
    expect(await engine.listGroups()).toEqual([...crashGroupIds]);
    return await dumpGroups(groups);
  } finally {
    await engine.close();
  }
}

/** Replays the workload without crashing; returns the states after operation `lastAck` and after `lastAck + 1`. */
async function oracleStates(seed: number, lastAck: number): Promise<unknown[]> {
  const dir = makeTempDir("oracle");
  const engine = await StorageEngine.open(dir, { sync: false });
  try {
    const workload = await CrashWorkload.start(engine, seed);
    for (let step = 0; step <= lastAck; step++) await workload.step(step);
    const states = [await dumpGroups(workload.groups)];
    if (lastAck + 1 < operationsMax) {
      await workload.step(lastAck + 1);
      states.push(await dumpGroups(workload.groups));
    }
    return states;
  } finally {
    await engine.close();
    removeDir(dir);
  }
}

describe("crash recovery (kill -9)", () => {
  it("recovers exactly the acknowledged state or the one in flight, from any kill point", async () => {
    const seed = propertySeed("kill -9");
    const rounds = 3;
    for (let round = 0; round < rounds; round++) {
      const roundSeed = (seed + round * 7919) >>> 0;
      const killAfterMs = 30 + (roundSeed % 500);
      const dir = makeTempDir("crash");
      try {
        const { lastAck, killed } = await runAndKill(dir, roundSeed, killAfterMs);
        console.log(`[kill -9] round ${round}: seed ${roundSeed}, killed after ${killAfterMs} ms: ${killed}, last ack ${lastAck}`);
        const recovered = await recoveredState(dir);
        const candidates = await oracleStates(roundSeed, lastAck);
        const matched = candidates.findIndex((state) => JSON.stringify(state) === JSON.stringify(recovered));
        console.log(`[kill -9] round ${round}: recovered the state after operation ${matched < 0 ? "(none!)" : lastAck + matched}`);
        if (matched < 0) expect(recovered).toEqual(candidates[0]);
      } finally {
        removeDir(dir);
      }
    }
  });
});
