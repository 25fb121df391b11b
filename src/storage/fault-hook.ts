/**
 * Fault-injection hook for the chaos harness (src/chaos), OFF by default: only when the environment
 * variable EPOCHD_FAULT_CONTROL_FILE names a file (the harness sets it for the homeservers it starts) is
 * that JSON file polled every 100 ms, and its `syncDelayMs` is waited before each synced (fsync) write, to
 * simulate a slow or stalled disk. Without the variable this costs one undefined check per synced write.
 */
import { readFileSync } from "node:fs";

/** Environment variable naming the fault control file; set only by the chaos harness. */
export const faultControlFileEnv = "EPOCHD_FAULT_CONTROL_FILE";

let syncDelayMs = 0;
const controlFile = process.env[faultControlFileEnv];
if (controlFile !== undefined && controlFile !== "") {
  const poll = () => {
    try {
      const value = (JSON.parse(readFileSync(controlFile, "utf8")) as { syncDelayMs?: unknown }).syncDelayMs;
      syncDelayMs = typeof value === "number" && value > 0 ? value : 0;
    } catch {
      syncDelayMs = 0;
    }
  };
  poll();
  setInterval(poll, 100).unref();
}

/** The injected delay before a synced write, or undefined when there is none (the normal case). */
export function injectedSyncDelay(): Promise<void> | undefined {
  return syncDelayMs > 0 ? new Promise((resolve) => setTimeout(resolve, syncDelayMs)) : undefined;
}
