/** `--name N` from a benchmark's arguments: a positive number, or `fallback` when absent. */
export function positiveOption(args: readonly string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const parsed = i < 0 ? fallback : Number(args[i + 1]);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`--${name} must be a positive number`);
  return parsed;
}
