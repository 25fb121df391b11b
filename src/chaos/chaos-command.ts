/**
 * `epochd chaos [--config cluster/chaos-ci.yaml] [--seed N] [--duration-seconds S] [...]`: one chaos
 * run on a local cluster of real homeserver processes (see docs/chaos.md). Exit code 0 when the checker
 * found no violation, 1 when it found some, 2 on bad usage.
 */
import { parseArgs, UsageError } from "../cli/args.ts";
import { loadChaosConfig } from "./chaos-config.ts";
import { runChaos } from "./chaos-run.ts";

const usage = `usage: epochd chaos [--config FILE.yaml] [--seed N] [--duration-seconds S] [--channels N]
                    [--faults kill,pause,partition,delay,fsync-slow,fsync-stall,clock-jump]
                    [--report-dir DIR] [--keep]
Any option of the YAML file can be given as a kebab-case flag (cluster/chaos-ci.yaml lists them).`;

/** Runs the chaos command. */
export async function chaosCommand(args: string[]): Promise<number> {
  try {
    const { flags } = parseArgs(args, new Set(["keep", "help"]));
    if (flags.has("help")) {
      console.log(usage);
      return 0;
    }
    const config = loadChaosConfig(flags.get("config"), flags);
    const result = await runChaos(config);
    return result.report.check.violations.length === 0 ? 0 : 1;
  } catch (error) {
    if (error instanceof UsageError || (error instanceof Error && /^(unknown flag|bad chaos|faults:|.* must be)/.test(error.message))) {
      console.error(`epochd chaos: ${(error as Error).message}\n\n${usage}`);
      return 2;
    }
    throw error;
  }
}
