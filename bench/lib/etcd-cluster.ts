/**
 * A local 3-member etcd cluster on 127.0.0.1 for the side-by-side benchmark:
 * child processes with their own data directories under `dataDir`, free
 * ports, static `--initial-cluster` bootstrap and etcd's default fsync
 * behaviour; plaintext, or with `tls` as epochd runs by default (server-side
 * TLS on the client listener, mutual TLS between members). Stopped by pid.
 * Only used when an `etcd` binary is on PATH.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, openSync, closeSync, readFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { freeLocalPorts } from "../../src/transport/local-ports.ts";
import { isAlive, stopPids } from "./proc.ts";

/** A running etcd member. */
export interface EtcdMember {
  readonly name: string;
  readonly pid: number;
  /** host:port of its client (gRPC) listener. */
  readonly clientAddress: string;
}

/** A running etcd cluster. */
export interface EtcdCluster {
  readonly version: string;
  readonly members: readonly EtcdMember[];
  /** The CA certificate (PEM) the members' certificates chain to, when they run with TLS. */
  readonly caCert?: Buffer;
}

/** Certificate files for members that run with TLS: one key and certificate (SAN 127.0.0.1) for all, and their CA. */
export interface EtcdTlsFiles {
  readonly caCertPath: string;
  readonly certPath: string;
  readonly keyPath: string;
}

/** The `etcd --version` line naming the version, or undefined when no etcd is on PATH. */
export function etcdVersion(): string | undefined {
  const result = spawnSync("etcd", ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (result.error !== undefined || result.status !== 0) return undefined;
  return /etcd Version: (\S+)/.exec(result.stdout)?.[1] ?? result.stdout.split("\n")[0];
}

/** Starts `size` members and waits (at most `timeoutMs`) until all agree on a leader. */
export async function startEtcdCluster(dataDir: string, size: number, timeoutMs = 30_000, tls?: EtcdTlsFiles): Promise<EtcdCluster> {
  const version = etcdVersion();
  if (version === undefined) throw new Error("etcd is not on PATH");
  const ports = await freeLocalPorts(2 * size);
  const names = Array.from({ length: size }, (_, i) => `m${i + 1}`);
  const scheme = tls === undefined ? "http" : "https";
  const peerUrl = (i: number) => `${scheme}://127.0.0.1:${ports[size + i]!}`;
  const clientUrl = (i: number) => `${scheme}://127.0.0.1:${ports[i]!}`;
  const tlsFlags =
    tls === undefined
      ? []
      : [
          "--cert-file", tls.certPath, "--key-file", tls.keyPath,
          "--peer-cert-file", tls.certPath, "--peer-key-file", tls.keyPath,
          "--peer-trusted-ca-file", tls.caCertPath, "--peer-client-cert-auth",
        ];
  const initialCluster = names.map((name, i) => `${name}=${peerUrl(i)}`).join(",");
  const members: EtcdMember[] = [];
  for (const [i, name] of names.entries()) {
    mkdirSync(join(dataDir, name), { recursive: true });
    const log = openSync(join(dataDir, `${name}.log`), "a");
    const child = spawn(
      "etcd",
      [
        "--name", name,
        "--data-dir", join(dataDir, name),
        "--listen-client-urls", clientUrl(i),
        "--advertise-client-urls", clientUrl(i),
        "--listen-peer-urls", peerUrl(i),
        "--initial-advertise-peer-urls", peerUrl(i),
        "--initial-cluster", initialCluster,
        "--initial-cluster-token", `epochd-bench-${process.pid}`,
        "--initial-cluster-state", "new",
        "--logger", "zap",
        "--log-outputs", "stderr",
        ...tlsFlags,
      ],
      { stdio: ["ignore", log, log] },
    );
    closeSync(log);
    members.push({ name, pid: child.pid ?? -1, clientAddress: `127.0.0.1:${ports[i]!}` });
  }
  const cluster: EtcdCluster = { version, members, ...(tls === undefined ? {} : { caCert: readFileSync(tls.caCertPath) }) };
  try {
    await waitForEtcdLeader(cluster, timeoutMs);
  } catch (error) {
    await stopEtcdCluster(cluster);
    throw error;
  }
  return cluster;
}

interface EtcdStatus {
  readonly memberId: string;
  readonly leaderId: string;
}

/** POSTs `{}` to `path` over HTTPS checked against `ca`; the body, or undefined on any failure within 1 s. */
function postOverTls(address: string, path: string, ca: Buffer): Promise<string | undefined> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const req = request({ host, port, path, method: "POST", ca, timeout: 1000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve(res.statusCode === 200 ? body : undefined));
      res.on("error", () => resolve(undefined));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(undefined));
    req.end("{}");
  });
}

/** One member's view through the gRPC gateway's JSON endpoint (/v3/maintenance/status). */
async function memberStatus(member: EtcdMember, caCert: Buffer | undefined): Promise<EtcdStatus | undefined> {
  try {
    const path = "/v3/maintenance/status";
    let text: string | undefined;
    if (caCert === undefined) {
      const response = await fetch(`http://${member.clientAddress}${path}`, { method: "POST", body: "{}", signal: AbortSignal.timeout(1000) });
      text = response.ok ? await response.text() : undefined;
    } else {
      text = await postOverTls(member.clientAddress, path, caCert);
    }
    if (text === undefined) return undefined;
    const body = JSON.parse(text) as { header?: { member_id?: string }; leader?: string };
    if (body.header?.member_id === undefined || body.leader === undefined || body.leader === "0") return undefined;
    return { memberId: body.header.member_id, leaderId: body.leader };
  } catch {
    return undefined;
  }
}

/** Waits until every member reports the same leader; returns the leader member. */
export async function waitForEtcdLeader(cluster: EtcdCluster, timeoutMs: number): Promise<EtcdMember> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const statuses = await Promise.all(cluster.members.map((m) => memberStatus(m, cluster.caCert)));
    const leaderId = statuses[0]?.leaderId;
    if (leaderId !== undefined && statuses.every((s) => s?.leaderId === leaderId)) {
      const index = statuses.findIndex((s) => s?.memberId === leaderId);
      if (index >= 0) return cluster.members[index]!;
    }
    if (cluster.members.some((m) => !isAlive(m.pid))) throw new Error("an etcd member exited during start-up; see its log");
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`etcd elected no leader within ${timeoutMs} ms`);
}

/** Stops every member by pid (SIGTERM, then SIGKILL after 10 s). */
export async function stopEtcdCluster(cluster: EtcdCluster): Promise<void> {
  await stopPids(cluster.members.map((m) => m.pid).filter((pid) => pid > 0));
}
