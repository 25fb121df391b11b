/**
 * Ports on 127.0.0.1 for the local clusters that harnesses start (the chaos
 * runner, integration tests, benchmarks).
 *
 * Not ports the kernel picked (listening on port 0 and closing again): between
 * that check and the homeserver's own bind, the kernel may hand the same port
 * to an outgoing connection of any process as its source port, and the
 * homeserver then fails to start with EADDRINUSE. Ports are taken instead from
 * below the kernel's ephemeral range (32768 to 60999 on Linux), where no
 * outgoing connection lands, and each vitest worker has a range of its own, so
 * two test files running at once cannot pick the same port either.
 */
import { createServer } from "node:net";

/** First port handed out: below the kernel's ephemeral ports. */
export const firstLocalPort = 20_000;
/** The first of the kernel's ephemeral ports (Linux's default range starts here). */
export const firstEphemeralPort = 32_768;
/** Ports per vitest worker: worker N takes [firstLocalPort + N * portsPerWorker, + portsPerWorker). */
const portsPerWorker = 1000;
/** Worker ranges that fit below the ephemeral ports. */
const workerRanges = 12;
let portsTaken = 0;

/** A TCP port on 127.0.0.1 that nothing listens on now, from this process's range. */
export async function freeLocalPort(): Promise<number> {
  const worker = Number(process.env.VITEST_POOL_ID ?? "0") % workerRanges;
  for (let tries = 0; tries < portsPerWorker; tries++) {
    const port = firstLocalPort + worker * portsPerWorker + (portsTaken++ % portsPerWorker);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port among ${portsPerWorker} tried`);
}

/** `count` distinct free ports (see {@link freeLocalPort}). */
export async function freeLocalPorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freeLocalPort());
  return ports;
}

/** Whether `port` can be bound on 127.0.0.1 right now. */
export function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}
