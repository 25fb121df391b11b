/** Command-line flag parsing shared by the subcommands: `--name value`, `--name=value`, and `--flag` for booleans. */

/** Parsed arguments: flags by name (without dashes) and the positional rest. */
export interface ParsedArgs {
  readonly flags: Map<string, string>;
  readonly positional: string[];
}

/** A command line that does not parse; the CLI prints it with the usage and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Splits `args`. Flags named in `booleanFlags` take no value; every other
 * flag takes the next argument (or the part after `=`).
 */
export function parseArgs(args: readonly string[], booleanFlags: ReadonlySet<string> = new Set()): ParsedArgs {
  const flags = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (name === "") throw new UsageError(`bad flag "${arg}"`);
    if (eq >= 0) flags.set(name, arg.slice(eq + 1));
    else if (booleanFlags.has(name)) flags.set(name, "true");
    else {
      const value = args[i + 1];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
      i++;
    }
  }
  return { flags, positional };
}

/** A positive integer flag, or `fallback` when absent. */
export function intFlag(flags: ReadonlyMap<string, string>, name: string, fallback: number): number {
  const text = flags.get(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new UsageError(`--${name} must be a non-negative integer, got "${text}"`);
  return value;
}

/**
 * An integer flag's value from node:util's parseArgs (`text`, undefined when
 * absent: `fallback`), within [`min`, `max`]; throws RangeError otherwise.
 */
export function boundedInteger(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  if (!/^-?\d+$/.test(text)) throw new RangeError(`--${name} must be an integer, got "${text}"`);
  const value = Number(text);
  if (value < min || value > max) throw new RangeError(`--${name} must be in [${min}, ${max}], got ${value}`);
  return value;
}
