/**
 * The HTML page of a benchmark result (bench/results/<name>.json), drawn with the same writer as the chaos
 * reports: machine and options, throughput and latency per concurrency as grouped bars with one bar per
 * system (epochd next to etcd whenever the JSON holds etcd rows), and every row as a table. It reads the
 * JSON shapes the benches write: `rows` and/or `runs[].rows`, each row a flat object of numbers/strings.
 */
import type { BarChart, ReportPage } from "./report-html.ts";

type Row = Record<string, unknown>;

function isRecord(value: unknown): value is Row {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Every result row of a bench JSON, with the system it measured. */
export function benchRows(json: unknown): Row[] {
  if (!isRecord(json)) return [];
  const rows: Row[] = [];
  if (Array.isArray(json.rows)) rows.push(...json.rows.filter(isRecord));
  if (Array.isArray(json.runs)) {
    for (const run of json.runs.filter(isRecord)) {
      for (const row of Array.isArray(run.rows) ? run.rows.filter(isRecord) : []) rows.push({ system: run.system, ...row });
    }
  }
  return rows;
}

function scalar(value: unknown): string | number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string" || typeof value === "boolean") return String(value);
  return undefined;
}

function seriesOf(row: Row, modes: number): string {
  const system = String(row.system ?? "epochd");
  return modes > 1 && row.mode !== undefined ? `${system} (${String(row.mode)})` : system;
}

/** A grouped bar chart of `field` by concurrency, one bar per system (and mode when several). */
function barsOf(rows: readonly Row[], field: string, title: string, unit: string): BarChart | undefined {
  const usable = rows.filter((r) => typeof r[field] === "number" && typeof r.concurrency === "number");
  if (usable.length === 0) return undefined;
  const modes = new Set(usable.map((r) => String(r.mode ?? ""))).size;
  const concurrencies = [...new Set(usable.map((r) => r.concurrency as number))].sort((a, b) => a - b);
  return {
    title,
    unit,
    groups: concurrencies.map((c) => ({ label: `c=${c}`, bars: usable.filter((r) => r.concurrency === c).map((r) => ({ series: seriesOf(r, modes), value: r[field] as number })) })),
  };
}

/** The report page of bench `name` from its result JSON. */
export function benchReportPage(name: string, json: unknown): ReportPage {
  const root = isRecord(json) ? json : {};
  const rows = benchRows(json);
  const machine = isRecord(root.machine) ? root.machine : {};
  const throughputField = rows.length === 0 ? undefined : Object.keys(rows[0]!).find((k) => k.endsWith("PerSecond"));
  const systems = [...new Set(rows.map((r) => String(r.system ?? "epochd")))];
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => scalar(r[k]) !== undefined)))];
  const bars = [
    throughputField === undefined ? undefined : barsOf(rows, throughputField, `Throughput (${throughputField})`, "/s"),
    barsOf(rows, "p50Ms", "Latency p50", "ms"),
    barsOf(rows, "p99Ms", "Latency p99", "ms"),
  ].filter((b): b is BarChart => b !== undefined);
  return {
    title: `epochd benchmark: ${name}`,
    subtitle: `systems: ${systems.join(", ") || "none"}${systems.includes("etcd") ? " (side by side)" : ""}`,
    status: "info",
    summary: Object.entries(machine).flatMap(([k, v]) => (scalar(v) === undefined ? [] : [[k, String(scalar(v))] as const])),
    bars,
    tables: [
      { title: "Rows", columns, rows: rows.map((r) => columns.map((c) => scalar(r[c]) ?? "")) },
      ...(isRecord(root.options) ? [{ title: "Options", columns: ["option", "value"], rows: Object.entries(root.options).map(([k, v]) => [k, JSON.stringify(v)]) }] : []),
    ],
    details: [],
  };
}
