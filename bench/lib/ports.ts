/**
 * Free TCP ports on 127.0.0.1 for the clusters a benchmark starts, so a run
 * never collides with a cluster already running on the default ports.
 */
import { createServer } from "node:net";

/** Whether `port` can be bound on 127.0.0.1 right now. */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A base port P such that P + o is free for every offset o, tried at random
 * in [20000, 50000) at most `attemptsMax` times.
 */
export async function findFreeBasePort(offsets: readonly number[], attemptsMax = 50): Promise<number> {
  const span = Math.max(...offsets) + 1;
  for (let attempt = 0; attempt < attemptsMax; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (30_000 - span));
    let free = true;
    for (const offset of offsets) {
      if (!(await isPortFree(base + offset))) {
        free = false;
        break;
      }
    }
    if (free) return base;
  }
  throw new Error(`no free base port for offsets ${offsets.join(",")} after ${attemptsMax} attempts`);
}
