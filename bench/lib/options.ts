/** `--name N` from a benchmark's arguments: a positive number, or `fallback` when absent. */
export function positiveOption(args: readonly string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const parsed = i < 0 ? fallback : Number(args[i + 1]);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`--${name} must be a positive number`);
  return parsed;
}

/**
 * A comma-separated list of concurrencies (`--concurrency 1,16,64`): `fallback`
 * when absent, none for "" or "none".
 */
export function concurrencyListOption(text: string | undefined, fallback: number[]): number[] {
  if (text === undefined) return fallback;
  if (text === "" || text === "none") return [];
  const values = text.split(",").map(Number);
  if (values.some((v) => !Number.isInteger(v) || v < 1 || v > 4096)) throw new Error(`bad concurrency list "${text}"`);
  return values;
}
