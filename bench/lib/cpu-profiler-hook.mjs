// Loaded into the homeserver processes through NODE_OPTIONS="--import <this file>"
// by `npm run bench -- raft --profile` (node refuses --cpu-prof in NODE_OPTIONS).
// Starts V8's sampling profiler on SIGUSR2 (the benchmark sends it when the
// measured phases begin, so start-up is left out) and writes
// CPU.<pid>.cpuprofile into $EPOCHD_BENCH_CPU_PROFILE_DIR on SIGTERM or exit.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const dir = process.env.EPOCHD_BENCH_CPU_PROFILE_DIR;
if (dir !== undefined && dir !== "") {
  const session = new Session();
  session.connect();
  let started = false;
  let written = false;
  process.on("SIGUSR2", () => {
    if (started) return;
    started = true;
    session.post("Profiler.enable");
    session.post("Profiler.setSamplingInterval", { interval: 500 });
    session.post("Profiler.start");
  });
  const write = () => {
    if (!started || written) return;
    written = true;
    session.post("Profiler.stop", (error, result) => {
      if (error === null && result !== undefined) writeFileSync(join(dir, `CPU.${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  };
  // Other SIGTERM listeners (the homeserver's graceful stop) still run.
  process.prependListener("SIGTERM", write);
  process.once("exit", write);
}
