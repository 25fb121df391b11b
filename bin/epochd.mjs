#!/usr/bin/env node
// The epochd command. Sources are TypeScript; a fresh `npm ci` is enough to
// run every command, no build step to forget: the CLI runs from a bundle of
// src/ that bin/bundle.mjs rebuilds whenever a source file changed. Set
// EPOCHD_TSX=1 to run the sources through tsx instead (slower to start).
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
process.env.EPOCHD_ROOT = root; // always this checkout's, also for processes it spawns
let main;
if (process.env.EPOCHD_TSX === "1") {
  const { register } = await import("tsx/esm/api");
  register();
  ({ main } = await import("../src/cli/main.ts"));
} else {
  const { ensureBundle } = await import("./bundle.mjs");
  process.setSourceMapsEnabled(true);
  ({ main } = await import(pathToFileURL(await ensureBundle(root)).href));
}
process.exitCode = await main(process.argv.slice(2));
