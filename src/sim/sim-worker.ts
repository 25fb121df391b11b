/**
 * A worker thread that runs simulations for `epochd sim --workers N`: it
 * receives {@link WorkerRequest}s and answers each with its seed's result.
 * Runs are independent and deterministic, so which worker runs a seed does
 * not change its result.
 */
import { parentPort } from "node:worker_threads";
import { parseFaultKinds } from "./faults.ts";
import type { SimKnobs } from "./options.ts";
import { runSimulation } from "./simulator.ts";

/** One seed to run. */
export interface WorkerRequest {
  readonly seed: number;
  readonly nodes: number;
  readonly steps: number;
  /** Comma-separated fault kinds. */
  readonly faults: string;
  /** The knobs the command line sets. */
  readonly knobs: Partial<SimKnobs>;
}

const port = parentPort;
if (port !== null) {
  port.on("message", (request: WorkerRequest) => {
    const started = performance.now();
    const result = runSimulation({ ...request, faults: parseFaultKinds(request.faults) });
    port.postMessage({ result, ms: performance.now() - started });
  });
}
