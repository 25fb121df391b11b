/**
 * The project's root directory. bin/epochd.mjs sets EPOCHD_ROOT because the
 * CLI may run from a bundle under .build/, where paths relative to this file
 * would point elsewhere; the fallback serves code run straight from src/.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Absolute path of the checkout (where bin/, src/ and node_modules/ are). */
export function projectRoot(): string {
  return process.env.EPOCHD_ROOT ?? resolve(dirname(fileURLToPath(import.meta.url)), "../..");
}
