// Clock-jump injection for homeservers started by the chaos harness (loaded with `node --import`, never
// by epochd itself). It polls the fault control file named by EPOCHD_FAULT_CONTROL_FILE every 100 ms and
// shifts this process's wall clock (Date.now() and `new Date()`) by its `clockOffsetMs`. Monotonic time
// (performance.now, process.hrtime, timers) is untouched: Raft ticks on timers and does not see the jump;
// what does see it is everything that reads wall time: gRPC deadlines, rate-limiter refills, the
// certificate signer's retry pacing, admin waits and log timestamps.
import { readFileSync } from "node:fs";

const controlFile = process.env.EPOCHD_FAULT_CONTROL_FILE;
if (controlFile !== undefined && controlFile !== "") {
  const RealDate = globalThis.Date;
  const realNow = RealDate.now.bind(RealDate);
  let offsetMs = 0;
  const poll = () => {
    try {
      const value = JSON.parse(readFileSync(controlFile, "utf8")).clockOffsetMs;
      offsetMs = typeof value === "number" && Number.isFinite(value) ? value : 0;
    } catch {
      offsetMs = 0;
    }
  };
  poll();
  setInterval(poll, 100).unref();
  class ShiftedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(realNow() + offsetMs);
      else super(...args);
    }
    static now() {
      return realNow() + offsetMs;
    }
  }
  globalThis.Date = ShiftedDate;
}
