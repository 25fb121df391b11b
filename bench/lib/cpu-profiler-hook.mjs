// Loaded into the homeserver processes through NODE_OPTIONS="--import <this file>"
// by `npm run bench -- raft --profile` (node refuses --cpu-prof in NODE_OPTIONS).
// Starts V8's sampling profiler at once and writes CPU.<pid>.cpuprofile into
// $EPOCHD_BENCH_CPU_PROFILE_DIR when the process gets SIGTERM or exits.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const dir = process.env.EPOCHD_BENCH_CPU_PROFILE_DIR;
if (dir !== undefined && dir !== "") {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 500 });
  session.post("Profiler.start");
  let written = false;
  const write = () => {
    if (written) return;
    written = true;
    session.post("Profiler.stop", (error, result) => {
      if (error === null && result !== undefined) writeFileSync(join(dir, `CPU.${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  };
  // Other SIGTERM listeners (the homeserver's graceful stop) still run.
  process.prependListener("SIGTERM", write);
  process.once("exit", write);
}
