/**
 * Starts and stops a local 3-homeserver epochd cluster for a benchmark, the
 * way an operator does: `epochd cluster up --detach` (TLS unless asked
 * otherwise, fsync on), then `epochd cluster down`, and finally SIGKILL by pid
 * for anything still alive. The leader is found through the client API itself:
 * a put to any homeserver either succeeds or names the leader.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { epochdPutPath, unaryPutTarget, WriteError } from "./grpc-targets.ts";
import { findFreeBasePort } from "./ports.ts";
import { isAlive, stopPids } from "./proc.ts";

const binPath = resolve(dirname(fileURLToPath(import.meta.url)), "../../bin/epochd.mjs");

/** A running benchmark cluster. */
export interface EpochdCluster {
  readonly dataDir: string;
  readonly insecure: boolean;
  readonly homeservers: ReadonlyArray<{ readonly id: string; readonly pid: number; readonly clientAddress: string }>;
  /** Channel credentials for the client API (server-side TLS with the cluster CA, or plaintext). */
  readonly credentials: grpc.ChannelCredentials;
  /**
   * Options for client channels. With TLS, the name checked is "localhost" (in every certificate's SAN):
   * TLS forbids an IP address as the server name, and Node warns when given one.
   */
  readonly channelOptions: grpc.ChannelOptions;
  /** Each homeserver's Prometheus endpoint, host:port. */
  readonly metricsAddresses: readonly string[];
}

/** A client channel to `address` of `cluster`. */
export function epochdChannel(cluster: EpochdCluster, address: string): grpc.Client {
  return new grpc.Client(address, cluster.credentials, cluster.channelOptions);
}

/** Options of {@link startEpochdCluster}. */
export interface EpochdClusterOptions {
  readonly dataDir: string;
  readonly insecure: boolean;
  readonly nodes: number;
  /** Extra environment for the homeserver processes (e.g. NODE_OPTIONS=--cpu-prof). */
  readonly env?: Readonly<Record<string, string>>;
}

function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number; output: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [binPath, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`epochd ${args.join(" ")} took over ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? 1, output });
    });
  });
}

/** Starts the cluster and waits until it has a leader; throws (after stopping what started) on failure. */
export async function startEpochdCluster(options: EpochdClusterOptions): Promise<EpochdCluster> {
  const offsets = Array.from({ length: options.nodes }, (_, i) => [i + 1, 101 + i, 201 + i]).flat();
  const basePort = await findFreeBasePort(offsets);
  const args = ["cluster", "up", "--data", options.dataDir, "--base-port", String(basePort), "--nodes", String(options.nodes), "--detach"];
  if (options.insecure) args.push("--insecure");
  const { code, output } = await runCli(args, { ...process.env, ...options.env }, 60_000);
  if (!existsSync(join(options.dataDir, "cluster.json"))) throw new Error(`epochd cluster up failed (exit ${code}):\n${output}`);
  const layout = JSON.parse(readFileSync(join(options.dataDir, "cluster.json"), "utf8")) as {
    homeservers: Array<{ id: string; pid?: number; clientAddress: string; metricsAddress?: string }>;
    caCert: string;
  };
  const homeservers = layout.homeservers.map((h) => ({ id: h.id, pid: h.pid ?? -1, clientAddress: h.clientAddress }));
  const cluster: EpochdCluster = {
    dataDir: options.dataDir,
    insecure: options.insecure,
    homeservers,
    credentials: options.insecure ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(readFileSync(layout.caCert)),
    channelOptions: options.insecure ? {} : { "grpc.ssl_target_name_override": "localhost" },
    metricsAddresses: layout.homeservers.flatMap((h) => (h.metricsAddress === undefined || h.metricsAddress === "" ? [] : [h.metricsAddress])),
  };
  // `cluster up` gives up waiting for a leader after 15 s; on a loaded machine the homeservers may
  // still be starting, so a missing leader is left to findEpochdLeader. Dead processes are not.
  if (code !== 0 && homeservers.some((h) => h.pid <= 0 || !isAlive(h.pid))) {
    await stopEpochdCluster(cluster);
    throw new Error(`epochd cluster up failed (exit ${code}):\n${output}`);
  }
  return cluster;
}

/** Stops the cluster: `epochd cluster down`, then SIGKILL by pid for any homeserver still alive. */
export async function stopEpochdCluster(cluster: EpochdCluster): Promise<void> {
  await runCli(["cluster", "down", "--data", cluster.dataDir], process.env, 30_000).catch(() => undefined);
  const pids = cluster.homeservers.map((h) => h.pid).filter((pid) => pid > 0 && isAlive(pid));
  if (pids.length > 0) await stopPids(pids, 2000);
}

/**
 * The client address of the leader: puts one key at homeservers in turn,
 * following a FAILED_PRECONDITION's leader hint, until a put succeeds.
 * Bounded by `timeoutMs`.
 */
export async function findEpochdLeader(cluster: EpochdCluster, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let address = cluster.homeservers[0]!.clientAddress;
  let lastError = "";
  for (let attempt = 0; Date.now() < deadline && attempt < 1000; attempt++) {
    const channel = epochdChannel(cluster, address);
    const error = await new Promise<Error | null>((done) => unaryPutTarget(channel, epochdPutPath, 2000).write(Buffer.from("bench/leader-probe"), Buffer.alloc(1), done));
    channel.close();
    if (error === null) return address;
    lastError = error.message;
    if (error instanceof WriteError && error.leaderAddress !== "") address = error.leaderAddress;
    else {
      const next = cluster.homeservers[(attempt + 1) % cluster.homeservers.length]!;
      address = next.clientAddress;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`no leader accepted a write within ${timeoutMs} ms (last error: ${lastError})`);
}
