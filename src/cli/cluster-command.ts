/**
 * `epochd cluster up`: a local cluster of separate homeserver processes on
 * 127.0.0.1, with data, logs and certificates under ./data. Runs in the
 * foreground and stops every homeserver it started, by pid, on Ctrl-C.
 * `epochd cluster down` stops a cluster started elsewhere (with --detach).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { reconnectBackoff } from "../api/grpc-service.ts";
import { Role as ProtoRole } from "../gen/epochd/admin/v1/admin_pb.ts";
import { createClusterCertificates } from "../transport/tls.ts";
import { adminClient } from "./admin-client.ts";
import { UsageError, intFlag, parseArgs } from "./args.ts";
import { projectRoot } from "./project-root.ts";
import { clusterFile, readLocalCluster, type LocalCluster, type LocalHomeserver } from "./cluster-layout.ts";

const help = `usage: epochd cluster up [--nodes N] [--data DIR] [--base-port P] [--insecure] [--detach]
                          [--election-timeout-ms MS] [--heartbeat-interval-ms MS]
       epochd cluster down [--data DIR]
Starts N (default 3) homeservers on 127.0.0.1: homeserver i listens on P+i (peer), P+100+i (client)
and P+200+i (metrics), P defaulting to 7100. Data, logs and certificates go under DIR (./data).`;

const binPath = join(projectRoot(), "bin/epochd.mjs");

export async function clusterCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  try {
    if (sub === "up") return await clusterUp(rest);
    if (sub === "down") return await clusterDown(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`epochd cluster: ${error.message}\n\n${help}`);
      return 2;
    }
    throw error;
  }
  console.error(help);
  return sub === "--help" ? 0 : 2;
}

async function layOut(dataDir: string, nodes: number, basePort: number, insecure: boolean, flags: ReadonlyMap<string, string>): Promise<LocalCluster> {
  mkdirSync(dataDir, { recursive: true });
  const ids = Array.from({ length: nodes }, (_, i) => `hs${i + 1}`);
  const certDir = join(dataDir, "certs");
  if (!insecure && !existsSync(join(certDir, "ca.crt"))) await createClusterCertificates(certDir, ids);
  const homeservers: LocalHomeserver[] = ids.map((id, i) => ({
    id,
    peerAddress: `127.0.0.1:${basePort + i + 1}`,
    clientAddress: `127.0.0.1:${basePort + 100 + i + 1}`,
    metricsAddress: `127.0.0.1:${basePort + 200 + i + 1}`,
    configPath: join(dataDir, `${id}.yaml`),
    logPath: join(dataDir, `${id}.log`),
  }));
  const peers = homeservers.map((h) => ({ id: h.id, peerAddress: h.peerAddress, clientAddress: h.clientAddress }));
  // A restarted local cluster keeps its name: certificates already issued name it.
  const clusterId = existingClusterId(homeservers[0]!.configPath) ?? `local-${randomBytes(4).toString("hex")}`;
  for (const h of homeservers) {
    const config: Record<string, unknown> = {
      id: h.id,
      clusterId,
      dataDir: h.id,
      peerListen: h.peerAddress,
      clientListen: h.clientAddress,
      metricsListen: h.metricsAddress,
      peers,
      insecure,
      electionTimeoutMs: Number(flags.get("election-timeout-ms") ?? 1000),
      heartbeatIntervalMs: Number(flags.get("heartbeat-interval-ms") ?? 100),
    };
    // Every local homeserver holds the CA key, so any of them can mint invites and sign joiners' certificates.
    if (!insecure) Object.assign(config, { tlsCaCert: "certs/ca.crt", tlsCert: `certs/${h.id}.crt`, tlsKey: `certs/${h.id}.key`, tlsCaKey: "certs/ca.key" });
    writeFileSync(h.configPath, toYaml(config));
  }
  return {
    dataDir,
    insecure,
    caCert: join(certDir, "ca.crt"),
    operatorCert: join(certDir, "operator.crt"),
    operatorKey: join(certDir, "operator.key"),
    homeservers,
  };
}

/** The clusterId of an existing homeserver config, if there is one. */
function existingClusterId(configPath: string): string | undefined {
  if (!existsSync(configPath)) return undefined;
  const parsed = parseYaml(readFileSync(configPath, "utf8")) as { clusterId?: unknown } | null;
  return typeof parsed?.clusterId === "string" ? parsed.clusterId : undefined;
}

async function clusterUp(args: string[]): Promise<number> {
  const { flags } = parseArgs(args, new Set(["insecure", "detach"]));
  const dataDir = resolve(flags.get("data") ?? "./data");
  const nodes = intFlag(flags, "nodes", 3);
  if (nodes < 1 || nodes > 9) throw new UsageError("--nodes must be 1 to 9");
  const existing = readLocalCluster(dataDir);
  if (existing?.supervisorPid !== undefined && isAlive(existing.supervisorPid)) {
    console.error(`a cluster is already running from ${dataDir} (pid ${existing.supervisorPid}); stop it first`);
    return 1;
  }
  const cluster = await layOut(dataDir, nodes, intFlag(flags, "base-port", 7100), flags.has("insecure"), flags);
  const started = Date.now();
  const children = new Map<string, ChildProcess>();
  for (const h of cluster.homeservers) {
    const log = openSync(h.logPath, "a");
    const child = spawn(process.execPath, [binPath, "start", "--config", h.configPath], { stdio: ["ignore", log, log], detached: flags.has("detach") });
    children.set(h.id, child);
    h.pid = child.pid;
    console.log(`${h.id}  pid ${child.pid}  client ${h.clientAddress}  peer/admin ${h.peerAddress}  metrics http://${h.metricsAddress}/metrics  log ${h.logPath}`);
  }
  cluster.supervisorPid = flags.has("detach") ? undefined : process.pid;
  writeFileSync(clusterFile(dataDir), JSON.stringify(cluster, null, 2));
  const upAt = await waitForAllServing(cluster, 15_000);
  const leader = await waitForLeader(cluster, 15_000);
  const now = Date.now();
  if (leader === undefined) console.error("no leader elected within 15 s; see the logs above");
  else {
    const sinceUp = upAt === undefined ? "" : `${now - upAt} ms after every homeserver was serving, `;
    console.log(`leader ${leader} elected ${sinceUp}${now - started} ms after the processes were started; \`epochd status\` shows the cluster`);
  }
  if (flags.has("detach")) {
    for (const child of children.values()) child.unref();
    return leader === undefined ? 1 : 0;
  }
  console.log("Ctrl-C stops every homeserver.");
  return superviseUntilSignal(children);
}

/** Waits for a signal (or every child to exit), then stops each child by pid. */
async function superviseUntilSignal(children: Map<string, ChildProcess>): Promise<number> {
  let exited = 0;
  const allExited = new Promise<void>((resolveAll) => {
    for (const [id, child] of children) {
      child.once("exit", (code, signal) => {
        console.log(`${id} exited (${signal ?? `code ${code}`})`);
        if (++exited === children.size) resolveAll();
      });
    }
  });
  const signalled = new Promise<void>((resolveSignal) => {
    process.once("SIGINT", () => resolveSignal());
    process.once("SIGTERM", () => resolveSignal());
  });
  await Promise.race([signalled, allExited]);
  await stopChildren([...children.values()].map((c) => c.pid).filter((pid): pid is number => pid !== undefined), allExited);
  return 0;
}

async function stopChildren(pids: number[], allExited?: Promise<void>): Promise<void> {
  for (const pid of pids) signal(pid, "SIGTERM");
  const deadline = Date.now() + 10_000;
  while (pids.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const pid of pids) if (isAlive(pid)) signal(pid, "SIGKILL");
  if (allExited !== undefined) await Promise.race([allExited, new Promise((r) => setTimeout(r, 1000))]);
}

async function clusterDown(args: string[]): Promise<number> {
  const { flags } = parseArgs(args);
  const dataDir = resolve(flags.get("data") ?? "./data");
  const cluster = readLocalCluster(dataDir);
  if (cluster === undefined) {
    console.error(`no cluster.json in ${dataDir}`);
    return 1;
  }
  if (cluster.supervisorPid !== undefined && isAlive(cluster.supervisorPid)) signal(cluster.supervisorPid, "SIGTERM");
  await stopChildren(cluster.homeservers.map((h) => h.pid).filter((pid): pid is number => pid !== undefined));
  console.log("stopped");
  return 0;
}

/** While homeservers boot, retry connections every 50-200 ms rather than grpc's default backoff of seconds. */
const quickReconnect = reconnectBackoff(50, 200);

/** Polls every homeserver's admin API until all answer; returns when that happened (ms since epoch). */
async function waitForAllServing(cluster: LocalCluster, timeoutMs: number): Promise<number | undefined> {
  const clients = cluster.homeservers.map((h) => adminClient(cluster, h.peerAddress, quickReconnect));
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const answers = await Promise.all(clients.map((c) => c.status({}, { deadlineMs: 500 }).then(() => true, () => false)));
      if (answers.every(Boolean)) return Date.now();
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  } finally {
    for (const client of clients) client.close();
  }
}

/** Polls the homeservers' admin APIs until one reports itself leader of every group it hosts. */
export async function waitForLeader(cluster: LocalCluster, timeoutMs: number): Promise<string | undefined> {
  const clients = cluster.homeservers.map((h) => ({ id: h.id, client: adminClient(cluster, h.peerAddress, quickReconnect) }));
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const { id, client } of clients) {
        const status = await client.status({ groupIds: ["cluster"] }, { deadlineMs: 500 }).catch(() => undefined);
        if (status !== undefined && status.groups.length > 0 && status.groups.every((g) => g.role === ProtoRole.LEADER)) return id;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return undefined;
  } finally {
    for (const { client } of clients) client.close();
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}
