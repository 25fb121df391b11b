/**
 * The Raft core and the channel state machine stay pure and deterministic
 * (DESIGN.md): no clock, no randomness of their own, no I/O.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const forbidden = [
  /Date\.now\(/,
  /Math\.random\(/,
  /new Date\(/,
  /performance\.now\(/,
  /setTimeout\(|setInterval\(|setImmediate\(/,
  /from "(node:)?(fs|fs\/promises|net|http|http2|https|child_process|dgram|os)"/,
  /from "@grpc\/grpc-js"/,
  /from "rocksdb"/,
];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

describe("purity", () => {
  for (const dir of ["src/raft", "src/channel"]) {
    it(`${dir} has no clock, randomness or I/O of its own`, () => {
      const offences: string[] = [];
      for (const file of sources(dir)) {
        readFileSync(file, "utf8")
          .split("\n")
          .forEach((line, i) => {
            if (forbidden.some((pattern) => pattern.test(line))) offences.push(`${file}:${i + 1}: ${line.trim()}`);
          });
      }
      expect(offences).toEqual([]);
      expect(sources(dir).length).toBeGreaterThan(0);
    });
  }
});
