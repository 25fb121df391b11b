/**
 * Real homeserver processes on 127.0.0.1 for integration tests: each started
 * with `epochd start`, real RocksDB, real gRPC with mutual TLS. Every process
 * is tracked by pid and stopped by `close()`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import { reconnectBackoff, unaryClient, type UnaryClient } from "../../src/api/grpc-service.ts";
import { AdminService, Role } from "../../src/gen/epochd/admin/v1/admin_pb.ts";
import { KvService } from "../../src/gen/epochd/kv/v1/kv_pb.ts";
import { clientChannelCredentials } from "../../src/transport/credentials.ts";
import { freeLocalPort } from "../../src/transport/local-ports.ts";
import { createClusterCertificates, type ClusterCertificates } from "../../src/transport/tls.ts";

const binPath = resolve(import.meta.dirname, "../../bin/epochd.mjs");

export type KvClient = UnaryClient<(typeof KvService)["method"]>;
export type AdminClient = UnaryClient<(typeof AdminService)["method"]>;

export interface ProcessNode {
  readonly id: string;
  readonly peerAddress: string;
  readonly clientAddress: string;
  readonly dataDir: string;
  child: ChildProcess | undefined;
  exited: Promise<number | null> | undefined;
}

/** How many lines of a homeserver's log `close()` prints when it exited on its own. */
const logTailLines = 40;

/** A cluster of real homeserver processes. */
export class ProcessCluster {
  readonly nodes = new Map<string, ProcessNode>();
  /** Processes that exited without being killed (a crash, a failed start): their logs are printed by `close()`. */
  private readonly unexpectedExits: Array<{ readonly id: string; readonly what: string }> = [];
  private constructor(
    readonly root: string,
    private readonly certs: ClusterCertificates,
    private readonly extraFlags: string[],
  ) {}

  static async create(size: number, extraFlags: string[] = []): Promise<ProcessCluster> {
    const root = mkdtempSync(join(tmpdir(), "epochd-it-"));
    const ids = Array.from({ length: size }, (_, i) => `hs${i + 1}`);
    const certs = await createClusterCertificates(join(root, "certs"), ids);
    const cluster = new ProcessCluster(root, certs, extraFlags);
    for (const id of ids) {
      cluster.nodes.set(id, { id, peerAddress: `127.0.0.1:${await freeLocalPort()}`, clientAddress: `127.0.0.1:${await freeLocalPort()}`, dataDir: join(root, id), child: undefined, exited: undefined });
    }
    return cluster;
  }

  private peersFlag(): string {
    return this.peersFlagOf([...this.nodes.keys()]);
  }

  /** The --peers value naming homeservers `ids`. */
  peersFlagOf(ids: string[]): string {
    return ids.map((id) => this.get(id)).map((n) => `${n.id}=${n.peerAddress}/${n.clientAddress}`).join(",");
  }

  /** Starts (or restarts) homeserver `id`. */
  start(id: string, flags: string[] = []): void {
    const node = this.get(id);
    const files = this.certs.homeservers.get(id)!;
    const args = [
      binPath, "start", "--id", id, "--data-dir", node.dataDir,
      "--peer-listen", node.peerAddress, "--client-listen", node.clientAddress, "--metrics-listen", "",
      "--peers", this.peersFlag(),
      "--tls-ca-cert", this.certs.ca.certPath, "--tls-cert", files.certPath, "--tls-key", files.keyPath,
      ...this.extraFlags, ...flags,
    ];
    const log = openSync(join(this.root, `${id}.log`), "a");
    const child = spawn(process.execPath, args, { stdio: ["ignore", log, log] });
    node.child = child;
    node.exited = new Promise((resolveExit) =>
      child.once("exit", (code, signal) => {
        if (node.child === child) this.unexpectedExits.push({ id, what: `${id} (pid ${child.pid}) exited by itself with ${code ?? signal}` });
        resolveExit(code);
      }),
    );
  }

  startAll(): void {
    for (const id of this.nodes.keys()) this.start(id);
  }

  get(id: string): ProcessNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** Sends `signal` to the node's process and waits for it to exit. */
  async kill(id: string, signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    const node = this.get(id);
    if (node.child?.pid === undefined || node.child.exitCode !== null) return node.child?.exitCode ?? null;
    const pid = node.child.pid;
    node.child = undefined; // from now on its exit is expected
    process.kill(pid, signal);
    const timer = setTimeout(() => process.kill(pid, "SIGKILL"), 10_000);
    const code = await node.exited;
    clearTimeout(timer);
    return code ?? null;
  }

  /** Pauses (SIGSTOP) or resumes (SIGCONT) homeserver `id`'s process, by its pid. */
  setPaused(id: string, paused: boolean): void {
    const pid = this.get(id).child?.pid;
    if (pid === undefined) throw new Error(`${id} is not running`);
    process.kill(pid, paused ? "SIGSTOP" : "SIGCONT");
  }

  /** Removes a stopped node's data directory. */
  wipe(id: string): void {
    rmSync(this.get(id).dataDir, { recursive: true, force: true });
  }

  log(id: string): string {
    return readFileSync(join(this.root, `${id}.log`), "utf8");
  }

  private credentials(): { ca: Buffer; key: Buffer; cert: Buffer } {
    return { ca: readFileSync(this.certs.ca.certPath), key: readFileSync(this.certs.operator.keyPath), cert: readFileSync(this.certs.operator.certPath) };
  }

  /** Channel credentials that present homeserver `id`'s own certificate: for tests that speak to a peer port as it. */
  peerCredentials(id: string): grpc.ChannelCredentials {
    const files = this.certs.homeservers.get(id)!;
    return grpc.credentials.createSsl(readFileSync(this.certs.ca.certPath), readFileSync(files.keyPath), readFileSync(files.certPath));
  }

  /** The cluster CA certificate (PEM), as SDK clients take it. */
  caPem(): Buffer {
    return this.credentials().ca;
  }

  /** Credentials of a client of the client API (server-side TLS with the cluster CA). */
  clientCredentials(): grpc.ChannelCredentials {
    return grpc.credentials.createSsl(this.credentials().ca);
  }

  /**
   * A KvService client of homeserver `id`. It reconnects within 200 ms of a
   * homeserver coming back (grpc-js waits 1 s and more by default): a write
   * after a failover then waits for the cluster, not for the client's backoff
   * towards a homeserver that was killed and restarted (a failover measured
   * at 1.9 s had the new leader elected at once).
   */
  kv(id: string): KvClient {
    return unaryClient(KvService, this.get(id).clientAddress, this.clientCredentials(), { "grpc.ssl_target_name_override": "localhost", ...reconnectBackoff(50, 200) });
  }

  admin(id: string): AdminClient {
    return unaryClient(AdminService, this.get(id).peerAddress, clientChannelCredentials({ kind: "tls", ...this.credentials() }), { "grpc.ssl_target_name_override": "localhost" });
  }

  /** Waits until exactly one of `among` leads and every one of them knows it; returns its id. */
  async waitForLeader(among: string[] = [...this.nodes.keys()], timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const statuses = await Promise.all(
        among.map(async (id) => {
          const client = this.admin(id);
          try {
            return { id, status: await client.status({ groupIds: ["cluster"] }, { deadlineMs: 500 }) };
          } catch {
            return { id, status: undefined };
          } finally {
            client.close();
          }
        }),
      );
      const leaders = statuses.filter((s) => s.status?.groups[0]?.role === Role.LEADER).map((s) => s.id);
      if (leaders.length === 1 && statuses.every((s) => s.status?.groups[0]?.leaderId === leaders[0])) return leaders[0]!;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no single leader among ${among.join(", ")} within ${timeoutMs} ms\n${this.logTails(among, 8)}`);
  }

  /** The last `lines` lines of each of `ids`' logs, headed by its id: for a failure's message. */
  logTails(ids: readonly string[], lines: number): string {
    return ids.map((id) => `--- ${id}\n${this.log(id).split("\n").slice(-lines).join("\n")}`).join("\n");
  }

  /**
   * Stops every process by pid and removes the files; first prints the log of
   * any homeserver that exited by itself, since its files go with the rest.
   */
  async close(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((id) => this.kill(id, "SIGTERM").catch(() => undefined)));
    for (const { id, what } of this.unexpectedExits) {
      const tail = this.log(id).split("\n").slice(-logTailLines).join("\n");
      process.stderr.write(`[process cluster] ${what}; the last ${logTailLines} lines of its log:\n${tail}\n`);
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}
