/**
 * `epochd channel-sim`: runs the multi-group simulator (one Raft group per
 * channel, src/sim/channel-sim.ts) for a range of seeds and reports what each
 * did and every broken check, with the command that replays it. Exit code 0
 * when every check held (with `--safety-only`, every check but liveness), 1
 * otherwise, 2 on bad arguments. One thread: run disjoint seed ranges in
 * several processes to use more cores (about 1 s a seed at fault scale 5).
 */
import { parseArgs } from "node:util";
import { boundedInteger } from "./args.ts";
import { runChannelSimulation, type ChannelSimOptions, type ChannelSimResult, type ChannelSimViolation } from "../sim/channel-sim.ts";

const brokenVariants = ["admit-unsettled", "no-busy", "no-catch-up-floor", "sign-stored-any-term", "sign-past-applied"] as const;
type BrokenVariant = (typeof brokenVariants)[number];

const usage = `usage: epochd channel-sim [options]

Runs homeservers hosting one Raft group per channel, with the real Raft core
and the homeserver's membership rules, in virtual time under crashes,
partitions, loss and delay; checks one leader per term, the same entry and
result at each index everywhere, certificates naming exactly the tree's
homeservers, and nothing reaching a removed homeserver; then heals the
cluster and checks that every channel settles and accepts a commit.

options:
  --seed S                      first seed (default 1)
  --seeds M                     run M consecutive seeds (default 1)
  --homeservers N               homeservers, 2-9 (default 4)
  --channels C                  channels created over the run, 1-100 (default 6)
  --steps K                     ticks of the fault phase (default 2000)
  --fault-scale F               multiplies the chance of a crash, an isolation and a lost
                                message, 0-20 (default 1; 5 is a harsh campaign)
  --no-faults                   no faults at all
  --lost-disks                  a crashed homeserver sometimes comes back with an empty disk
  --lost-disks-during-changes   with --lost-disks: also while its groups change membership
                                (channels may then stall for good: the open gap; see
                                docs/ARCHITECTURE.md); pair with --safety-only
  --safety-only                 a run that only failed the liveness check counts as passed
  --broken NAME                 a deliberately broken rule the checks must catch:
                                ${brokenVariants.join(", ")}
  --stop                        stop after the first seed that fails
  --json                        print one JSON object as the last line
  --help                        this text`;

/** The parsed command line. */
export interface ChannelSimArgs {
  readonly seed: number;
  readonly seeds: number;
  readonly homeservers: number;
  readonly channels: number;
  readonly steps: number;
  readonly faultScale: number;
  readonly faults: boolean;
  readonly lostDisks: boolean;
  readonly lostDisksDuringChanges: boolean;
  readonly safetyOnly: boolean;
  readonly broken: BrokenVariant | undefined;
  readonly stop: boolean;
  readonly json: boolean;
}

/** Parses the command line; throws RangeError (or parseArgs' TypeError) on bad input. */
export function parseChannelSimArgs(args: string[]): ChannelSimArgs | "help" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      seed: { type: "string" },
      seeds: { type: "string" },
      homeservers: { type: "string" },
      channels: { type: "string" },
      steps: { type: "string" },
      "fault-scale": { type: "string" },
      "no-faults": { type: "boolean" },
      "lost-disks": { type: "boolean" },
      "lost-disks-during-changes": { type: "boolean" },
      "safety-only": { type: "boolean" },
      broken: { type: "string" },
      stop: { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help === true) return "help";
  const scaleText = values["fault-scale"] ?? "1";
  const faultScale = Number(scaleText);
  if (!/^\d*\.?\d+$/.test(scaleText) || faultScale > 20) throw new RangeError(`--fault-scale must be a number in [0, 20], got "${scaleText}"`);
  const broken = values.broken;
  if (broken !== undefined && !(brokenVariants as readonly string[]).includes(broken)) throw new RangeError(`--broken must be one of ${brokenVariants.join(", ")}, got "${broken}"`);
  const lostDisks = values["lost-disks"] === true;
  const lostDisksDuringChanges = values["lost-disks-during-changes"] === true;
  if (lostDisksDuringChanges && !lostDisks) throw new RangeError("--lost-disks-during-changes needs --lost-disks");
  return {
    seed: boundedInteger("seed", values.seed, 1, 0, 2 ** 31 - 1),
    seeds: boundedInteger("seeds", values.seeds, 1, 1, 10_000_000),
    homeservers: boundedInteger("homeservers", values.homeservers, 4, 2, 9),
    channels: boundedInteger("channels", values.channels, 6, 1, 100),
    steps: boundedInteger("steps", values.steps, 2000, 1, 10_000_000),
    faultScale,
    faults: values["no-faults"] !== true,
    lostDisks,
    lostDisksDuringChanges,
    safetyOnly: values["safety-only"] === true,
    broken: broken as BrokenVariant | undefined,
    stop: values.stop === true,
    json: values.json === true,
  };
}

/** The simulator's options for `seed` under `args`. */
function optionsOf(args: ChannelSimArgs, seed: number): ChannelSimOptions {
  return {
    seed,
    homeservers: args.homeservers,
    channels: args.channels,
    steps: args.steps,
    faults: args.faults,
    faultScale: args.faultScale,
    lostDisks: args.lostDisks,
    lostDisksDuringChanges: args.lostDisksDuringChanges,
    ...(args.broken === undefined ? {} : { broken: args.broken }),
  };
}

/** The command line that replays `seed` alone under `args`. */
export function reproduceLine(args: ChannelSimArgs, seed: number): string {
  const flags = [
    `--seed ${seed}`,
    args.homeservers === 4 ? "" : `--homeservers ${args.homeservers}`,
    args.channels === 6 ? "" : `--channels ${args.channels}`,
    args.steps === 2000 ? "" : `--steps ${args.steps}`,
    args.faultScale === 1 ? "" : `--fault-scale ${args.faultScale}`,
    args.faults ? "" : "--no-faults",
    args.lostDisks ? "--lost-disks" : "",
    args.lostDisksDuringChanges ? "--lost-disks-during-changes" : "",
    args.broken === undefined ? "" : `--broken ${args.broken}`,
  ];
  return `npx epochd channel-sim ${flags.filter((f) => f !== "").join(" ")}`;
}

/** The violations that fail a run under `args`. */
function failures(result: ChannelSimResult, args: ChannelSimArgs): ChannelSimViolation[] {
  return result.violations.filter((v) => !args.safetyOnly || v.check !== "liveness");
}

function seedLine(r: ChannelSimResult, failed: readonly ChannelSimViolation[], ms: number): string {
  const stalled = failed.length === 0 && r.violations.length > 0 ? "ok (stalled)" : "ok";
  const status = failed.length === 0 ? stalled : `VIOLATION ${failed[0]!.check}`;
  const column = (name: string, value: number, width: number) => `${name} ${String(value).padStart(width)}`;
  return [
    column("seed", r.seed, 6),
    column("ticks", r.ticks, 5),
    column("commits", r.commitsAccepted, 5),
    column("conflicts", r.conflicts, 4),
    column("membership changes", r.membershipChanges, 4),
    column("crashes", r.crashes, 3),
    column("partitions", r.partitions, 3),
    column("lost disks", r.lostDisks, 2),
    `${ms.toFixed(0).padStart(5)}ms`,
    status,
  ].join("  ");
}

const totalKeys = ["ticks", "commitsAccepted", "messagesAccepted", "conflicts", "busyRefusals", "membershipChanges", "removals", "crashes", "partitions", "lostDisks", "lostDisksDuringChanges", "lostCopies"] as const;

/** The `channel-sim` subcommand. */
export async function channelSimCommand(argv: string[]): Promise<number> {
  let parsed: ChannelSimArgs | "help";
  try {
    parsed = parseChannelSimArgs(argv);
  } catch (error) {
    console.error(`epochd channel-sim: ${error instanceof Error ? error.message : String(error)}\n\n${usage}`);
    return 2;
  }
  if (parsed === "help") {
    console.log(usage);
    return 0;
  }
  const args = parsed;
  const totals = Object.fromEntries(totalKeys.map((k) => [k, 0])) as Record<(typeof totalKeys)[number], number>;
  const failed: Array<{ seed: number; violations: ChannelSimViolation[]; reproduce: string }> = [];
  let stalled = 0;
  let seedsRun = 0;
  const started = performance.now();
  for (let seed = args.seed; seed < args.seed + args.seeds; seed++) {
    const runStarted = performance.now();
    const result = runChannelSimulation(optionsOf(args, seed));
    seedsRun++;
    for (const key of totalKeys) totals[key] += result[key];
    const failing = failures(result, args);
    if (result.violations.some((v) => v.check === "liveness")) stalled++;
    if (!args.json) console.log(seedLine(result, failing, performance.now() - runStarted));
    if (failing.length > 0) {
      failed.push({ seed, violations: failing, reproduce: reproduceLine(args, seed) });
      const print = args.json ? console.error : console.log;
      for (const v of failing) print(`VIOLATION of ${v.check} (seed ${seed}, tick ${v.tick}): ${v.message}`);
      print(`  reproduce: ${reproduceLine(args, seed)}`);
      if (args.stop) break;
    }
  }
  // Give the event loop a turn (the runs are synchronous) so that output is flushed in order.
  await new Promise((resolve) => setImmediate(resolve));
  const seconds = (performance.now() - started) / 1000;
  if (args.json) {
    const { seed: _first, ...settings } = optionsOf(args, args.seed);
    console.log(JSON.stringify({ seeds: seedsRun, firstSeed: args.seed, options: { ...settings, safetyOnly: args.safetyOnly }, ...totals, stalled, failed, seconds: Number(seconds.toFixed(3)) }));
  } else {
    console.log(
      `${seedsRun} seeds, ${totals.commitsAccepted} commits, ${totals.membershipChanges} membership changes, ${totals.crashes} crashes, ` +
        `${args.lostDisks ? `${totals.lostDisks} disks lost (${totals.lostDisksDuringChanges} during a change), ` : ""}` +
        `${stalled} stalled, ${failed.length} failed in ${seconds.toFixed(1)}s`,
    );
  }
  return failed.length > 0 ? 1 : 0;
}
