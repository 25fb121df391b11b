/**
 * Free TCP ports on 127.0.0.1 for the clusters a benchmark starts, so a run
 * never collides with a cluster already running on the default ports.
 */
import { canListen, firstEphemeralPort, firstLocalPort } from "../../src/transport/local-ports.ts";

/**
 * A base port P such that P + o is free for every offset o, tried at random
 * below the kernel's ephemeral ports at most `attemptsMax` times.
 */
export async function findFreeBasePort(offsets: readonly number[], attemptsMax = 50): Promise<number> {
  const span = Math.max(...offsets) + 1;
  for (let attempt = 0; attempt < attemptsMax; attempt++) {
    const base = firstLocalPort + Math.floor(Math.random() * (firstEphemeralPort - firstLocalPort - span));
    let free = true;
    for (const offset of offsets) {
      if (!(await canListen(base + offset))) {
        free = false;
        break;
      }
    }
    if (free) return base;
  }
  throw new Error(`no free base port for offsets ${offsets.join(",")} after ${attemptsMax} attempts`);
}
