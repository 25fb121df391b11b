/**
 * A full garbage collection on demand, for the one moment it pays: right
 * after thousands of quiet channel groups left memory at once (see
 * hibernation in raft-driver.ts). Their cores, logs and records are garbage
 * then, but a homeserver that is otherwise idle allocates too little for V8
 * to run a major collection soon, so the memory would stay resident.
 *
 * V8 exposes `gc` only behind a flag; setting it at run time and taking the
 * function from a fresh context avoids starting every process with it.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let collect: (() => void) | undefined;

/** Runs a full, blocking garbage collection (tens of milliseconds for a heap of a few hundred MB). */
export function collectGarbage(): void {
  if (collect === undefined) {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  }
  collect();
}
