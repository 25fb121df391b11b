// Entry of the simulator's worker threads: loads tsx in the thread (module
// hooks are per thread), then the TypeScript worker itself.
import { register } from "tsx/esm/api";

register();
await import("./sim-worker.ts");
