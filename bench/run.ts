/**
 * `npm run bench -- <name> [options]`: runs the benchmark in bench/<name>.ts,
 * which prints a table and writes the same numbers as JSON under bench/results/;
 * then draws that JSON as a self-contained page, bench/results/<name>.html.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { benchReportPage } from "../src/chaos/bench-page.ts";
import { renderReportHtml } from "../src/chaos/report-html.ts";

const benches: Record<string, string> = {
  sim: "./sim-bench.ts",
  raft: "./raft-bench.ts",
  commits: "./commits-bench.ts",
  steady: "./steady-bench.ts",
  inbox: "./inbox-bench.ts",
  groups: "./groups-bench.ts",
  scale: "./scale-bench.ts",
  snapshot: "./snapshot-bench.ts",
};

const [name, ...args] = process.argv.slice(2);
const path = name === undefined ? undefined : benches[name];
if (path === undefined) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join("|")}> [options]`);
  process.exit(2);
}
const bench = (await import(path)) as { run: (args: string[]) => Promise<void> };
await bench.run(args);
const jsonPath = join(import.meta.dirname, "results", `${name}.json`);
if (existsSync(jsonPath)) {
  const htmlPath = jsonPath.replace(/\.json$/, ".html");
  writeFileSync(htmlPath, renderReportHtml(benchReportPage(name!, JSON.parse(readFileSync(jsonPath, "utf8")))));
  console.log(`wrote ${htmlPath}`);
}
