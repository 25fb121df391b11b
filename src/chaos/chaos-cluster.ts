/**
 * The chaos harness's cluster: real `epochd start` processes on 127.0.0.1 with real RocksDB and mutual
 * TLS, each dialing its peers through its own fault proxy (fault-proxy.ts), each with a fault control
 * file (slow fsync through src/storage/fault-hook.ts, wall-clock offset through clock-preload.mjs).
 * Every process is tracked by pid; kill, pause and resume act on that pid only.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { unaryClient, type UnaryClient } from "../api/grpc-service.ts";
import { AdminService, type StatusResponse } from "../gen/epochd/admin/v1/admin_pb.ts";
import { ChannelService } from "../gen/epochd/channel/v1/channel_pb.ts";
import { faultControlFileEnv } from "../storage/fault-hook.ts";
import { clientChannelCredentials } from "../transport/credentials.ts";
import { freeLocalPort } from "../transport/local-ports.ts";
import { createClusterCertificates, type ClusterCertificates } from "../transport/tls.ts";
import { EgressProxy, NetworkRules } from "./fault-proxy.ts";

/** A raw ChannelService client of one homeserver (no leader following). */
export type ChannelRpc = UnaryClient<(typeof ChannelService)["method"]>;
/** An AdminService client of one homeserver's peer port. */
export type AdminRpc = UnaryClient<(typeof AdminService)["method"]>;

/** What the fault control file of one homeserver holds. */
export interface FaultControl {
  syncDelayMs: number;
  clockOffsetMs: number;
}

/** How to start the homeservers. */
export interface ChaosClusterOptions {
  readonly nodes: number;
  /** Directory for data, certificates, logs and control files (created; removed by close unless kept). */
  readonly root: string;
  /** The project whose bin/epochd.mjs runs the homeservers (a mutated copy in the mutant test). */
  readonly projectRoot: string;
  /** src/chaos/clock-preload.mjs of the harness (loaded into every homeserver with --import). */
  readonly clockPreloadPath: string;
  readonly electionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly tickIntervalMs: number;
  readonly hibernateAfterMs: number;
}

/** One homeserver of the cluster and its process state. */
export interface ChaosNode {
  readonly id: string;
  readonly peerAddress: string;
  readonly clientAddress: string;
  readonly dataDir: string;
  readonly controlFile: string;
  proxy: EgressProxy;
  proxyUrl: string;
  child: ChildProcess | undefined;
  exited: Promise<void> | undefined;
  paused: boolean;
  control: FaultControl;
}

/** A local cluster of real homeserver processes under fault injection. */
export class ChaosCluster {
  readonly nodes = new Map<string, ChaosNode>();
  readonly network = new NetworkRules();
  private readonly adminClients = new Map<string, AdminRpc>();
  private readonly channelClients = new Map<string, ChannelRpc>();
  private onClose: () => void = () => undefined;

  private constructor(
    readonly options: ChaosClusterOptions,
    readonly certs: ClusterCertificates,
  ) {}

  /** Makes certificates, ports, proxies and control files; starts no process yet. */
  static async create(options: ChaosClusterOptions): Promise<ChaosCluster> {
    mkdirSync(options.root, { recursive: true });
    const ids = Array.from({ length: options.nodes }, (_, i) => `hs${i + 1}`);
    const certs = await createClusterCertificates(join(options.root, "certs"), ids);
    const cluster = new ChaosCluster(options, certs);
    // If the harness itself dies (a test timeout, Ctrl-C), no homeserver is left running.
    const killChildren = () => {
      for (const node of cluster.nodes.values()) {
        if (node.child?.pid === undefined || node.child.exitCode !== null || node.child.signalCode !== null) continue;
        try {
          process.kill(node.child.pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    };
    process.once("exit", killChildren);
    cluster.onClose = () => process.off("exit", killChildren);
    for (const id of ids) {
      const node: ChaosNode = {
        id,
        peerAddress: `127.0.0.1:${await freeLocalPort()}`,
        clientAddress: `127.0.0.1:${await freeLocalPort()}`,
        dataDir: join(options.root, id),
        controlFile: join(options.root, `${id}.faults.json`),
        proxy: undefined as unknown as EgressProxy,
        proxyUrl: "",
        child: undefined,
        exited: undefined,
        paused: false,
        control: { syncDelayMs: 0, clockOffsetMs: 0 },
      };
      node.proxy = new EgressProxy(id, cluster.network, (hostPort) => cluster.homeserverAt(hostPort));
      node.proxyUrl = await node.proxy.start();
      cluster.nodes.set(id, node);
      cluster.writeControl(node);
    }
    return cluster;
  }

  private homeserverAt(hostPort: string): string | undefined {
    for (const node of this.nodes.values()) if (node.peerAddress === hostPort) return node.id;
    return undefined;
  }

  get(id: string): ChaosNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no homeserver ${id}`);
    return node;
  }

  ids(): string[] {
    return [...this.nodes.keys()];
  }

  private peersFlag(): string {
    return [...this.nodes.values()].map((n) => `${n.id}=${n.peerAddress}/${n.clientAddress}`).join(",");
  }

  /** Starts (or restarts) homeserver `id` as a child process. */
  start(id: string): void {
    const node = this.get(id);
    if (node.child !== undefined) return;
    const files = this.certs.homeservers.get(id)!;
    const o = this.options;
    const args = [
      "--import", o.clockPreloadPath,
      join(o.projectRoot, "bin/epochd.mjs"), "start", "--id", id, "--data-dir", node.dataDir,
      "--peer-listen", node.peerAddress, "--client-listen", node.clientAddress, "--metrics-listen", "",
      "--peers", this.peersFlag(),
      "--tls-ca-cert", this.certs.ca.certPath, "--tls-cert", files.certPath, "--tls-key", files.keyPath,
      "--election-timeout-ms", String(o.electionTimeoutMs), "--heartbeat-interval-ms", String(o.heartbeatIntervalMs),
      "--tick-interval-ms", String(o.tickIntervalMs), "--hibernate-after-ms", String(o.hibernateAfterMs),
    ];
    const env: NodeJS.ProcessEnv = { ...process.env, grpc_proxy: node.proxyUrl, [faultControlFileEnv]: node.controlFile };
    for (const key of ["no_grpc_proxy", "no_proxy", "NO_PROXY", "https_proxy", "http_proxy"]) delete env[key];
    const log = openSync(join(o.root, `${id}.log`), "a");
    const child = spawn(process.execPath, args, { stdio: ["ignore", log, log], env });
    closeSync(log);
    node.child = child;
    node.paused = false;
    node.exited = new Promise((done) => child.once("exit", () => done()));
  }

  startAll(): void {
    for (const id of this.nodes.keys()) this.start(id);
  }

  /** kill -9 of homeserver `id` (resumed first if paused, so the kill takes effect at once). */
  async kill(id: string, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const node = this.get(id);
    const child = node.child;
    if (child?.pid === undefined) return;
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, signal);
      if (node.paused) process.kill(child.pid, "SIGCONT");
      const force = setTimeout(() => child.pid !== undefined && child.exitCode === null && process.kill(child.pid, "SIGKILL"), 10_000);
      await node.exited;
      clearTimeout(force);
    }
    node.child = undefined;
    node.paused = false;
    node.proxy.resetConnections();
  }

  /** SIGSTOP (pause) or SIGCONT (resume) of homeserver `id`. */
  setPaused(id: string, paused: boolean): void {
    const node = this.get(id);
    const pid = node.child?.pid;
    if (pid === undefined || node.child?.exitCode !== null) return;
    process.kill(pid, paused ? "SIGSTOP" : "SIGCONT");
    node.paused = paused;
  }

  /** Updates homeserver `id`'s fault control file (read by it within 100 ms). */
  setControl(id: string, change: Partial<FaultControl>): void {
    const node = this.get(id);
    node.control = { ...node.control, ...change };
    this.writeControl(node);
  }

  private writeControl(node: ChaosNode): void {
    const staging = `${node.controlFile}.tmp`;
    writeFileSync(staging, JSON.stringify(node.control));
    rmSync(node.controlFile, { force: true });
    writeFileSync(node.controlFile, readFileSync(staging));
    rmSync(staging, { force: true });
  }

  /** How homeserver `id`'s process ended: its exit code or signal. */
  private exitDescription(id: string): string {
    const child = this.get(id).child;
    if (child === undefined) return "not started";
    return child.signalCode !== null ? `signal ${child.signalCode}` : `code ${child.exitCode}`;
  }

  isRunning(id: string): boolean {
    const child = this.get(id).child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  private credentials(): { ca: Buffer; key: Buffer; cert: Buffer } {
    return { ca: readFileSync(this.certs.ca.certPath), key: readFileSync(this.certs.operator.keyPath), cert: readFileSync(this.certs.operator.certPath) };
  }

  /** The cluster CA certificate (PEM), for SDK clients. */
  caPem(): Buffer {
    return readFileSync(this.certs.ca.certPath);
  }

  /** A cached admin client of homeserver `id` (direct, not through the proxies). */
  admin(id: string): AdminRpc {
    let client = this.adminClients.get(id);
    if (client === undefined) {
      const credentials = clientChannelCredentials({ kind: "tls", ...this.credentials() });
      client = unaryClient(AdminService, this.get(id).peerAddress, credentials, { "grpc.ssl_target_name_override": "localhost", "grpc.enable_http_proxy": 0 });
      this.adminClients.set(id, client);
    }
    return client;
  }

  /** A cached raw ChannelService client of homeserver `id`. */
  channels(id: string): ChannelRpc {
    let client = this.channelClients.get(id);
    if (client === undefined) {
      client = unaryClient(ChannelService, this.get(id).clientAddress, grpc.credentials.createSsl(this.caPem()), { "grpc.ssl_target_name_override": "localhost", "grpc.enable_http_proxy": 0 });
      this.channelClients.set(id, client);
    }
    return client;
  }

  /** Homeserver `id`'s status, or undefined if it does not answer within `deadlineMs`. */
  async status(id: string, deadlineMs = 500): Promise<StatusResponse | undefined> {
    if (!this.isRunning(id) || this.get(id).paused) return undefined;
    try {
      return await this.admin(id).status({}, { deadlineMs });
    } catch {
      return undefined;
    }
  }

  /** The leader of the cluster group as its homeservers report it, once all answering agree. */
  async waitForLeader(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.ids().every((id) => !this.isRunning(id))) throw new Error("every homeserver process has exited");
      // A homeserver the harness started and did not kill has died (a crash, or a port taken): no wait helps.
      const died = this.ids().find((id) => this.get(id).child !== undefined && !this.isRunning(id));
      if (died !== undefined) throw new Error(`homeserver ${died} exited (${this.exitDescription(died)}) while waiting for a leader`);
      const statuses = (await Promise.all(this.ids().map((id) => this.status(id)))).filter((s) => s !== undefined);
      const leaders = new Set(statuses.map((s) => s.groups[0]?.leaderId ?? ""));
      const [leader] = [...leaders];
      if (statuses.length === this.nodes.size && leaders.size === 1 && leader !== undefined && leader !== "") return leader;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no agreed leader within ${timeoutMs} ms`);
  }

  /**
   * Waits until every homeserver's replicated directory lists every homeserver (each registers itself
   * once the cluster group has a leader); devices of a homeserver not listed yet are refused.
   */
  async waitForDirectory(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const statuses = await Promise.all(this.ids().map((id) => this.status(id)));
      if (statuses.every((s) => s !== undefined && this.ids().every((id) => s.directory.some((d) => d.nodeId === id)))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the directory did not list every homeserver within ${timeoutMs} ms`);
  }

  /** The tail of homeserver `id`'s log. */
  logTail(id: string, lines = 20): string {
    try {
      return readFileSync(join(this.options.root, `${id}.log`), "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  /** Stops every process (resuming paused ones), closes clients and proxies; removes files unless `keep`. */
  async close(keep: boolean): Promise<void> {
    for (const node of this.nodes.values()) if (node.paused) this.setPaused(node.id, false);
    await Promise.all(this.ids().map((id) => this.kill(id, "SIGTERM").catch(() => undefined)));
    for (const client of [...this.adminClients.values(), ...this.channelClients.values()]) client.close();
    await Promise.all([...this.nodes.values()].map((n) => n.proxy.close()));
    this.onClose();
    if (!keep) rmSync(this.options.root, { recursive: true, force: true });
  }
}
