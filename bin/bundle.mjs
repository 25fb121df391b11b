// Keeps a prebuilt JavaScript bundle of src/ under .build/ so that commands
// start in well under a second: loading the TypeScript sources through tsx's
// module hooks costs more than a second per process, which matters for a
// cluster that must elect a leader within 3 s of `epochd cluster up`. The
// bundle is rebuilt (esbuild, a few hundred milliseconds) whenever a source
// file is newer than it, so editing src/ needs no build step either.
import { existsSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

/** Newest modification time (ms) of any file under `dir`. */
function newestMtimeMs(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    const mtime = entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs;
    if (mtime > newest) newest = mtime;
  }
  return newest;
}

/**
 * Returns the path of the bundled CLI entry for the project at `root`,
 * building it first when src/ changed since the last build. A bundle lives in
 * a directory named after the newest source time it was built from; builders
 * racing each other write private directories and rename one into place, so a
 * reader never sees a half-written bundle. Only the two newest are kept.
 */
export async function ensureBundle(root) {
  const buildRoot = join(root, ".build");
  const sourceMtimeMs = Math.floor(newestMtimeMs(join(root, "src")));
  const outDir = join(buildRoot, `cli-${sourceMtimeMs}`);
  const entry = join(outDir, "main.js");
  if (existsSync(entry)) return entry;
  const { build } = await import("esbuild");
  const staging = join(buildRoot, `staging-${process.pid}-${Date.now()}`);
  await build({
    entryPoints: [join(root, "src/cli/main.ts")],
    outdir: staging,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    sourcemap: "linked",
    logLevel: "error",
  });
  try {
    renameSync(staging, outDir);
  } catch {
    rmSync(staging, { recursive: true, force: true }); // another process built the same sources first
  }
  removeOldBundles(buildRoot);
  return entry;
}

/** Deletes all but the two newest bundles (a running process may still load chunks of the previous one). */
function removeOldBundles(buildRoot) {
  const bundles = readdirSync(buildRoot)
    .filter((name) => /^cli-\d+$/.test(name))
    .sort((a, b) => Number(b.slice(4)) - Number(a.slice(4)));
  for (const name of bundles.slice(2)) rmSync(join(buildRoot, name), { recursive: true, force: true });
}
