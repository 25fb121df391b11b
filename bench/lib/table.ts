/** Plain-text tables for benchmark output: columns padded to their widest cell, numbers right-aligned. */

/** A cell: text as is; numbers formatted by the caller. */
export type Cell = string;

/** Formats `rows` under `headers`; columns listed in `rightAligned` (by index) pad on the left. */
export function formatTable(headers: readonly string[], rows: ReadonlyArray<readonly Cell[]>, rightAligned: ReadonlySet<number>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly Cell[]) =>
    cells.map((cell, i) => (rightAligned.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** A number with `digits` decimals, or "-" when it is missing or not finite. */
export function fixed(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? "-" : value.toFixed(digits);
}

/** An integer with thousands separators, or "-". */
export function integer(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? "-" : Math.round(value).toLocaleString("en-US");
}
