import { afterEach, describe, expect, it, vi } from "vitest";
import { captureConsole } from "../fixtures/console-capture.ts";
import { formatViolation, parseSimArgs, simCommand } from "../../src/cli/sim-command.ts";
import { faultKinds, type FaultKind } from "../../src/sim/index.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

describe("epochd sim", () => {
  it("prints one JSON summary as the last line and exits 0 when safe", async () => {
    const { out } = captureConsole();
    const code = await simCommand(["--seed", "5", "--seeds", "3", "--nodes", "3", "--steps", "150", "--faults", "drop,crash", "--json"]);
    expect(code).toBe(0);
    const summary = JSON.parse(out[out.length - 1]!) as Record<string, unknown>;
    expect(summary).toMatchObject({ seeds: 3, firstSeed: 5, nodes: 3, steps: 450, violations: [] });
    expect(summary.elections as number).toBeGreaterThan(0);
    expect(summary.commits as number).toBeGreaterThan(0);
    expect(summary.stepsPerSecond as number).toBeGreaterThan(0);
    expect(out).toHaveLength(1);
  });

  it("gives the same totals on worker threads as in one thread", async () => {
    const totals = async (workers: string) => {
      const { out } = captureConsole();
      expect(await simCommand(["--seed", "9", "--seeds", "4", "--nodes", "3", "--steps", "120", "--workers", workers, "--json"])).toBe(0);
      const { seconds, stepsPerSecond, nodeTicksPerSecond, workers: w, ...rest } = JSON.parse(out[out.length - 1]!) as Record<string, unknown>;
      vi.restoreAllMocks();
      return rest;
    };
    expect(await totals("3")).toEqual(await totals("1"));
  });

  it("prints a line per seed and a summary without --json", async () => {
    const { out } = captureConsole();
    expect(await simCommand(["--seeds", "2", "--nodes", "3", "--steps", "100"])).toBe(0);
    expect(out).toHaveLength(3);
    expect(out[0]).toMatch(/^seed +1 .* ok$/);
    expect(out[2]).toMatch(/^2 seeds, .* 0 violations/);
  });

  it.each([
    [["--nodes", "0"]],
    [["--nodes", "ten"]],
    [["--faults", "drop,meteor"]],
    [["--seeds", "0"]],
    [["--unknown"]],
    [["positional"]],
  ])("exits 2 on bad arguments %j", async (args: string[]) => {
    const { err } = captureConsole();
    expect(await simCommand(args)).toBe(2);
    expect(err.join("\n")).toMatch(/usage: epochd sim/);
  });

  it("parses --faults all and lists", () => {
    const all = parseSimArgs(["--faults", "all"]);
    expect(all !== "help" && [...all.faults]).toEqual([...faultKinds]);
    const some = parseSimArgs(["--faults", "crash,pause"]);
    expect(some !== "help" && [...some.faults]).toEqual(["crash", "pause"]);
    expect(parseSimArgs(["--help"])).toBe("help");
  });

  it("formats a violation with a command that reproduces it", () => {
    const text = formatViolation(
      { seed: 42, invariant: "log-matching", message: "boom", atMs: 12.5, trace: ["  1.0ms n1 recv x"] },
      { nodes: 5, steps: 600, faults: new Set(faultKinds) },
    );
    expect(text).toContain("VIOLATION of log-matching (seed 42");
    expect(text).toContain("npx epochd sim --seed 42 --nodes 5 --steps 600 --faults all");
    expect(text).toContain("1.0ms n1 recv x");
    const lost = formatViolation({ seed: 7, invariant: "durability", message: "boom", atMs: 1, trace: [] }, { nodes: 3, steps: 600, faults: new Set<FaultKind>(["crash"]), lostDisks: true });
    expect(lost).toContain("npx epochd sim --seed 7 --nodes 3 --steps 600 --faults crash --lost-disks");
  });

  it("parses --fault-rate as a probability and puts it in the command that reproduces a violation", () => {
    const parsed = parseSimArgs(["--fault-rate", "0.15"]);
    expect(parsed !== "help" && parsed.faultRate).toBe(0.15);
    const plain = parseSimArgs([]);
    expect(plain !== "help" && plain.faultRate).toBeUndefined();
    for (const bad of ["0", "2", "-0.1", "abc", "", ".", "1e-2"]) expect(() => parseSimArgs(["--fault-rate", bad]), bad).toThrow();
    const text = formatViolation({ seed: 9, invariant: "liveness", message: "x", atMs: 1, trace: [] }, { nodes: 5, steps: 600, faults: new Set(faultKinds), faultRate: 0.15 });
    expect(text).toContain("npx epochd sim --seed 9 --nodes 5 --steps 600 --faults all --fault-rate 0.15");
  });

  it("passes --lost-disks to the runs", () => {
    const parsed = parseSimArgs(["--lost-disks"]);
    expect(parsed !== "help" && parsed.lostDisks).toBe(true);
    const plain = parseSimArgs([]);
    expect(plain !== "help" && plain.lostDisks).toBe(false);
  });
});
