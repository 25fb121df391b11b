/**
 * The proof that the simulator catches real bugs: each mutant of the Raft
 * core (see mutants.ts) is applied to a temporary copy of src/, and the
 * simulator of that copy must report a violation within a bounded number of
 * seeds. Runs the mutants in child processes, two at a time.
 */
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { mutants, type Mutant } from "./mutants.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const runner = join(root, "test/mutants/mutant-runner.ts");
const maxSeeds = 400;
const budgetMs = 90_000;
const parallel = Math.max(2, Math.min(4, availableParallelism()));
const tempDirs: string[] = [];

interface RunnerReport {
  caught: boolean;
  seed?: number;
  invariant?: string;
  message?: string;
  seedsRun: number;
  ms: number;
}

/** A copy of the project's sources with `mutant` applied; asserts the search string occurs exactly once. */
function mutatedCopy(mutant: Mutant | null): string {
  const dir = mkdtempSync(join(tmpdir(), "epochd-mutant-"));
  tempDirs.push(dir);
  cpSync(join(root, "src"), join(dir, "src"), { recursive: true });
  cpSync(join(root, "bin"), join(dir, "bin"), { recursive: true });
  cpSync(join(root, "package.json"), join(dir, "package.json"));
  cpSync(join(root, "test"), join(dir, "test"), { recursive: true });
  cpSync(join(root, "vitest.config.ts"), join(dir, "vitest.config.ts"));
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  if (mutant !== null) {
    const text = readFileSync(join(root, mutant.file), "utf8");
    const occurrences = text.split(mutant.search).length - 1;
    if (occurrences !== 1) {
      throw new Error(`mutant ${mutant.name}: search string occurs ${occurrences} times in ${mutant.file}, expected exactly once`);
    }
    writeFileSync(join(dir, mutant.file), text.replace(mutant.search, mutant.replace));
  }
  return dir;
}

function run(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), budgetMs + 30_000);
    child.on("error", fail);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Runs the core test that must catch `mutant` on its mutated copy; caught if that test fails. */
async function coreTest(mutant: Mutant, test: { file: string; name: string }): Promise<RunnerReport> {
  const dir = mutatedCopy(mutant);
  const started = performance.now();
  const { code, stdout } = await run([join(root, "node_modules/vitest/vitest.mjs"), "run", test.file, "-t", test.name], dir);
  const failed = code !== 0 && /Tests\s+1 failed/.test(stdout.replace(/\x1b\[[0-9;]*m/g, ""));
  return { caught: failed, invariant: "core test", message: test.name, seedsRun: 0, ms: Math.round(performance.now() - started) };
}

async function hunt(mutant: Mutant): Promise<RunnerReport> {
  if (mutant.caughtByTest !== undefined) return coreTest(mutant, mutant.caughtByTest);
  const dir = mutatedCopy(mutant);
  const { stdout, stderr } = await run(["--import", "tsx", runner, dir, String(maxSeeds), String(budgetMs), ...(mutant.runs === undefined ? [] : [JSON.stringify(mutant.runs)])], dir);
  const last = stdout.trim().split("\n").pop() ?? "";
  if (!last.startsWith("{")) throw new Error(`mutant ${mutant.name}: runner printed no report\n${stdout}\n${stderr}`);
  return JSON.parse(last) as RunnerReport;
}

/** Runs `tasks` with at most `limit` at a time, keeping results in order. */
async function pool<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array<T>(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe("mutants of the Raft core", () => {
  it("every search string occurs exactly once in the pristine core", () => {
    for (const m of mutants) {
      const text = readFileSync(join(root, m.file), "utf8");
      expect(text.split(m.search).length - 1, `${m.name} in ${m.file}`).toBe(1);
      expect(m.replace).not.toBe(m.search);
      if (m.caughtByTest !== undefined) expect(readFileSync(join(root, m.caughtByTest.file), "utf8"), m.name).toContain(m.caughtByTest.name);
    }
  });

  it("the simulator catches every mutant within the seed budget", async () => {
    const reports = await pool(
      mutants.map((m) => () => hunt(m)),
      parallel,
    );
    const lines = mutants.map((m, i) => {
      const r = reports[i]!;
      if (!r.caught) return `MISSED   ${m.name.padEnd(36)} ${m.caughtByTest === undefined ? `${r.seedsRun} seeds` : `core test "${r.message}" passed`}, ${r.ms}ms`;
      const where = m.caughtByTest === undefined ? `seed ${String(r.seed).padStart(3)}` : "core test";
      return `caught   ${m.name.padEnd(36)} ${where} after ${String(r.ms).padStart(6)}ms by ${r.invariant}: ${r.message}`;
    });
    console.log(lines.join("\n"));
    expect(lines.filter((l) => l.startsWith("MISSED"))).toEqual([]);
  });

  it("the command line of a mutated copy exits 1 with the violation in its JSON", async () => {
    const dir = mutatedCopy(mutants.find((m) => m.name === "vote-not-recorded")!);
    const { code, stdout } = await run(
      [join(dir, "bin/epochd.mjs"), "sim", "--seeds", "20", "--nodes", "3", "--steps", "300", "--stop", "--json"],
      dir,
    );
    const summary = JSON.parse(stdout.trim().split("\n").pop()!) as { violations: { seed: number; invariant: string }[] };
    expect(code).toBe(1);
    expect(summary.violations.length).toBeGreaterThan(0);
    expect(summary.violations[0]!.invariant).toMatch(/durability|safety/);
  });
});
