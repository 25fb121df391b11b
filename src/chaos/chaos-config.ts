/**
 * Configuration of a chaos run: defaults, a YAML file (cluster/chaos-*.yaml, camelCase keys) and flags
 * (kebab case) over it. Validated up front so that a typo stops the run before any process starts.
 */
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { chaosFaultKinds, type ChaosFaultKind } from "./schedule.ts";

/** Every option of a chaos run. */
export interface ChaosConfig {
  /** The schedule and workload seed; drawn at random (and printed) when absent. */
  seed: number | undefined;
  nodes: number;
  /** Workload and faults run this long; startup, heal, settle and checking come on top. */
  durationSeconds: number;
  faults: ChaosFaultKind[];
  faultsStartMs: number;
  faultGapMsMin: number;
  faultGapMsMax: number;
  faultDurationMsMin: number;
  faultDurationMsMax: number;
  channels: number;
  membersPerChannel: number;
  localChannelEvery: number;
  actionPauseMsMin: number;
  actionPauseMsMax: number;
  electionTimeoutMs: number;
  heartbeatIntervalMs: number;
  tickIntervalMs: number;
  /** The homeservers' `hibernateAfterMs`: short, so that channel groups unload and reload under the faults too. */
  hibernateAfterMs: number;
  /** Where the JSON and HTML reports go (relative to the working directory). */
  reportDir: string;
  /** Keep data directories and logs after the run (always kept when a violation was found). */
  keep: boolean;
}

/** The defaults: a short run with every fault kind. */
export const defaultChaosConfig: ChaosConfig = {
  seed: undefined,
  nodes: 3,
  durationSeconds: 60,
  faults: [...chaosFaultKinds],
  faultsStartMs: 2_000,
  faultGapMsMin: 1_000,
  faultGapMsMax: 3_000,
  faultDurationMsMin: 1_500,
  faultDurationMsMax: 5_000,
  channels: 4,
  membersPerChannel: 2,
  localChannelEvery: 3,
  actionPauseMsMin: 50,
  actionPauseMsMax: 250,
  electionTimeoutMs: 1_000,
  heartbeatIntervalMs: 100,
  tickIntervalMs: 50,
  hibernateAfterMs: 500,
  reportDir: "data/chaos",
  keep: false,
};

const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function coerce(key: keyof ChaosConfig, value: unknown): unknown {
  const current = defaultChaosConfig[key];
  if (key === "faults") {
    const list = Array.isArray(value) ? value.map(String) : String(value).split(",").map((s) => s.trim()).filter((s) => s !== "");
    const unknown = list.filter((k) => !(chaosFaultKinds as readonly string[]).includes(k));
    if (unknown.length > 0) throw new Error(`faults: unknown kind(s) ${unknown.join(", ")}; known: ${chaosFaultKinds.join(", ")}`);
    return list;
  }
  if (key === "reportDir") return String(value);
  if (key === "keep") return value === true || value === "true";
  if (key === "seed" && (value === "random" || value === null)) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (typeof current === "number" && !Number.isInteger(n))) throw new Error(`${key} must be a non-negative integer, got ${JSON.stringify(value)}`);
  return n;
}

/** Applies `source` (camelCase keys) over `config`; unknown keys are errors. */
function merge(config: ChaosConfig, source: Record<string, unknown>, where: string): ChaosConfig {
  const out: Record<string, unknown> = { ...config };
  for (const [key, value] of Object.entries(source)) {
    if (!(key in defaultChaosConfig)) throw new Error(`${where}: unknown option ${JSON.stringify(key)}`);
    out[key] = coerce(key as keyof ChaosConfig, value);
  }
  return out as unknown as ChaosConfig;
}

function validate(c: ChaosConfig): ChaosConfig {
  const problems: string[] = [];
  if (c.nodes < 3) problems.push("nodes must be at least 3");
  if (c.durationSeconds < 5) problems.push("durationSeconds must be at least 5");
  if (c.faultGapMsMin > c.faultGapMsMax) problems.push("faultGapMsMin > faultGapMsMax");
  if (c.faultDurationMsMin > c.faultDurationMsMax) problems.push("faultDurationMsMin > faultDurationMsMax");
  if (c.actionPauseMsMin > c.actionPauseMsMax) problems.push("actionPauseMsMin > actionPauseMsMax");
  if (c.channels < 1) problems.push("channels must be at least 1");
  if (c.membersPerChannel < 1) problems.push("membersPerChannel must be at least 1");
  if (c.electionTimeoutMs < 3 * c.heartbeatIntervalMs) problems.push("electionTimeoutMs must be at least 3 x heartbeatIntervalMs");
  if (problems.length > 0) throw new Error(`bad chaos configuration: ${problems.join("; ")}`);
  return c;
}

/** The configuration from an optional YAML file and flags (name without dashes, kebab case, -> value). */
export function loadChaosConfig(file: string | undefined, flags: ReadonlyMap<string, string>): ChaosConfig {
  let config = { ...defaultChaosConfig };
  if (file !== undefined) {
    const parsed: unknown = parse(readFileSync(file, "utf8"));
    if (parsed !== null && typeof parsed === "object") config = merge(config, parsed as Record<string, unknown>, file);
  }
  const byKebab = new Map(Object.keys(defaultChaosConfig).map((k) => [kebab(k), k]));
  const fromFlags: Record<string, unknown> = {};
  for (const [flag, value] of flags) {
    if (flag === "config") continue;
    const key = byKebab.get(flag);
    if (key === undefined) throw new Error(`unknown flag --${flag}`);
    fromFlags[key] = value;
  }
  return validate(merge(config, fromFlags, "flags"));
}
