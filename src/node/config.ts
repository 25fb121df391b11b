/**
 * A homeserver's configuration: defaults that work, a YAML file, environment
 * variables (EPOCHD_ELECTION_TIMEOUT_MS, ...) and command-line flags
 * (--election-timeout-ms, ...), later ones overriding earlier ones.
 */
import { readFileSync } from "node:fs";
import { isAbsolute, join, resolve, dirname } from "node:path";
import { parse as parseYaml } from "yaml";
import { isValidHomeserverId } from "../transport/tls.ts";

/** A member of the initial cluster. */
export interface PeerConfig {
  readonly id: string;
  /** host:port of its peer (Raft) service. */
  readonly peerAddress: string;
  /** host:port of its client API. */
  readonly clientAddress: string;
}

/** Everything a homeserver process needs to start. */
export interface NodeConfig {
  /** This homeserver's id, as in its certificate (letters, digits, '-', '_'). */
  readonly id: string;
  /** The cluster's name, the same on every homeserver; certificates name it. */
  readonly clusterId: string;
  /** Where RocksDB keeps this homeserver's data. */
  readonly dataDir: string;
  /** host:port the peer service (Raft between homeservers, admin API) listens on; mutual TLS. */
  readonly peerListen: string;
  /** host:port the client API listens on. */
  readonly clientListen: string;
  /** host:port of the Prometheus metrics endpoint; empty to disable. */
  readonly metricsListen: string;
  /** The initial members of the cluster (this one included). */
  readonly peers: readonly PeerConfig[];
  /** Start a new cluster from `peers` when the data directory is empty; false to join an existing one. */
  readonly bootstrap: boolean;
  /** A follower that hears no leader for this long (randomized up to twice) campaigns. */
  readonly electionTimeoutMs: number;
  /** A leader's heartbeat interval. */
  readonly heartbeatIntervalMs: number;
  /** Length of one Raft tick; the timeouts above are whole multiples of it. */
  readonly tickIntervalMs: number;
  /** Plaintext peer links and client API, for local experiments only. */
  readonly insecure: boolean;
  /** PEM files: the cluster CA, this homeserver's certificate and key. */
  readonly tlsCaCert: string;
  readonly tlsCert: string;
  readonly tlsKey: string;
  /**
   * PEM file of the cluster CA's private key; optional. A homeserver that has
   * it mints invites and signs the certificates of homeservers joining with one.
   */
  readonly tlsCaKey: string;
  /** fsync every write that must be durable. Off only for tests and benchmarks that say so. */
  readonly sync: boolean;
  /** Compact a group's log after this many applied entries. */
  readonly snapshotEveryEntries: number;
  /** Entries kept behind a compaction for followers slightly behind. */
  readonly snapshotKeepEntries: number;
  /** Compact a group's log also once the entries applied since the last compaction hold this many bytes (the uncompacted log is held in memory). */
  readonly snapshotEveryBytes: number;
  /** Of the entries kept behind a compaction, only as many as hold at most this many bytes. */
  readonly snapshotKeepBytes: number;
  /** A channel group quiet this long leaves memory until its next message or request; 0: only `loadedGroupsMax` unloads. */
  readonly hibernateAfterMs: number;
  /** Most channel groups kept in memory; beyond it the quiet ones leave, longest quiet first. 0: no bound. */
  readonly loadedGroupsMax: number;
  /** How often to hand over leadership of loaded channel groups when this homeserver leads more than its share; 0 never. */
  readonly balanceLeadersEveryMs: number;
  /** pino log level. */
  readonly logLevel: string;
}

/** The defaults: a single homeserver "hs1" on 127.0.0.1. */
export const defaultNodeConfig: NodeConfig = {
  id: "hs1",
  clusterId: "epochd-local",
  dataDir: "./data/hs1",
  peerListen: "127.0.0.1:7101",
  clientListen: "127.0.0.1:7201",
  metricsListen: "127.0.0.1:7301",
  peers: [],
  bootstrap: true,
  electionTimeoutMs: 1000,
  heartbeatIntervalMs: 100,
  tickIntervalMs: 50,
  insecure: false,
  tlsCaCert: "",
  tlsCert: "",
  tlsKey: "",
  tlsCaKey: "",
  sync: true,
  snapshotEveryEntries: 10_000,
  snapshotKeepEntries: 5_000,
  snapshotEveryBytes: 64 * 1024 * 1024,
  snapshotKeepBytes: 16 * 1024 * 1024,
  hibernateAfterMs: 60_000,
  loadedGroupsMax: 4096,
  balanceLeadersEveryMs: 5_000,
  logLevel: "info",
};

/** A configuration that is invalid; the message names the option. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Key = keyof NodeConfig;
const numberKeys: Key[] = ["electionTimeoutMs", "heartbeatIntervalMs", "tickIntervalMs", "snapshotEveryEntries", "snapshotKeepEntries", "snapshotEveryBytes", "snapshotKeepBytes", "hibernateAfterMs", "loadedGroupsMax", "balanceLeadersEveryMs"];
const booleanKeys: Key[] = ["bootstrap", "insecure", "sync"];
const pathKeys: Key[] = ["dataDir", "tlsCaCert", "tlsCert", "tlsKey", "tlsCaKey"];

/** `electionTimeoutMs` -> `election-timeout-ms`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `electionTimeoutMs` -> `EPOCHD_ELECTION_TIMEOUT_MS`. */
export function envName(key: string): string {
  return `EPOCHD_${flagName(key).replace(/-/g, "_").toUpperCase()}`;
}

/** Parses `id=peerHost:port/clientHost:port,...`. */
export function parsePeers(text: string): PeerConfig[] {
  if (text.trim() === "") return [];
  return text.split(",").map((item) => {
    const match = /^([^=]+)=([^/]+)\/(.+)$/.exec(item.trim());
    if (match === null) throw new ConfigError(`peers: "${item}" is not id=peerHost:port/clientHost:port`);
    return { id: match[1]!, peerAddress: match[2]!, clientAddress: match[3]! };
  });
}

function coerce(key: Key, value: unknown, source: string): unknown {
  if (key === "peers") {
    if (typeof value === "string") return parsePeers(value);
    if (!Array.isArray(value)) throw new ConfigError(`${source}: peers must be a list`);
    return value.map((p: unknown) => {
      const peer = p as Record<string, unknown>;
      if (typeof peer["id"] !== "string" || typeof peer["peerAddress"] !== "string" || typeof peer["clientAddress"] !== "string") {
        throw new ConfigError(`${source}: each peer needs id, peerAddress and clientAddress`);
      }
      return { id: peer["id"], peerAddress: peer["peerAddress"], clientAddress: peer["clientAddress"] };
    });
  }
  if (numberKeys.includes(key)) {
    const n = typeof value === "number" ? value : Number(value);
    if (!Number.isFinite(n)) throw new ConfigError(`${source}: ${key} must be a number, got "${String(value)}"`);
    return n;
  }
  if (booleanKeys.includes(key)) {
    if (typeof value === "boolean") return value;
    if (value === "true" || value === "1" || value === "") return true;
    if (value === "false" || value === "0") return false;
    throw new ConfigError(`${source}: ${key} must be true or false, got "${String(value)}"`);
  }
  if (typeof value !== "string") throw new ConfigError(`${source}: ${key} must be a string`);
  return value;
}

/**
 * Builds the configuration from the defaults, `--config FILE` (YAML), the
 * environment and `flags` (already split as `{ "election-timeout-ms": "500" }`).
 * Relative paths in a file are relative to that file.
 */
export function loadNodeConfig(flags: ReadonlyMap<string, string>, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const merged: Record<string, unknown> = { ...defaultNodeConfig };
  const keys = Object.keys(defaultNodeConfig) as Key[];
  const configPath = flags.get("config") ?? env["EPOCHD_CONFIG"];
  if (configPath !== undefined) {
    let parsed: unknown;
    try {
      parsed = parseYaml(readFileSync(configPath, "utf8"));
    } catch (error) {
      throw new ConfigError(`cannot read config file ${configPath}: ${(error as Error).message}`);
    }
    const base = dirname(resolve(configPath));
    for (const [name, value] of Object.entries((parsed ?? {}) as Record<string, unknown>)) {
      if (!keys.includes(name as Key)) throw new ConfigError(`${configPath}: unknown option "${name}"`);
      let v = coerce(name as Key, value, configPath);
      if (pathKeys.includes(name as Key) && typeof v === "string" && v !== "" && !isAbsolute(v)) v = join(base, v);
      merged[name] = v;
    }
  }
  for (const key of keys) {
    const value = env[envName(key)];
    if (value !== undefined) merged[key] = coerce(key, value, `environment ${envName(key)}`);
  }
  for (const [name, value] of flags) {
    if (name === "config") continue;
    const key = keys.find((k) => flagName(k) === name);
    if (key === undefined) throw new ConfigError(`unknown flag --${name}`);
    merged[key] = coerce(key, value, `--${name}`);
  }
  const config = merged as unknown as NodeConfig;
  validateNodeConfig(config);
  return config;
}

/** Checks every option and the relations between them; throws {@link ConfigError}. */
export function validateNodeConfig(config: NodeConfig): void {
  if (!isValidHomeserverId(config.id)) throw new ConfigError(`id "${config.id}" is not a valid homeserver id`);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(config.clusterId)) throw new ConfigError(`clusterId "${config.clusterId}" must be 1 to 64 characters of [A-Za-z0-9._-]`);
  for (const key of ["peerListen", "clientListen"] as const) {
    if (!/^[^:]+:\d{1,5}$/.test(config[key])) throw new ConfigError(`${key} "${config[key]}" is not host:port`);
  }
  if (config.metricsListen !== "" && !/^[^:]+:\d{1,5}$/.test(config.metricsListen)) throw new ConfigError(`metricsListen "${config.metricsListen}" is not host:port`);
  const { electionTimeoutMs, heartbeatIntervalMs, tickIntervalMs } = config;
  if (tickIntervalMs < 1) throw new ConfigError("tickIntervalMs must be at least 1");
  if (heartbeatIntervalMs < tickIntervalMs) throw new ConfigError("heartbeatIntervalMs must be at least tickIntervalMs");
  if (electionTimeoutMs < 3 * heartbeatIntervalMs) throw new ConfigError("electionTimeoutMs must be at least 3 x heartbeatIntervalMs");
  if (config.snapshotKeepEntries >= config.snapshotEveryEntries) throw new ConfigError("snapshotKeepEntries must be below snapshotEveryEntries");
  if (config.snapshotEveryBytes < 1) throw new ConfigError("snapshotEveryBytes must be at least 1");
  if (config.snapshotKeepBytes >= config.snapshotEveryBytes) throw new ConfigError("snapshotKeepBytes must be below snapshotEveryBytes");
  if (config.hibernateAfterMs < 0) throw new ConfigError("hibernateAfterMs must be 0 (never) or more");
  if (config.loadedGroupsMax < 0) throw new ConfigError("loadedGroupsMax must be 0 (no bound) or more");
  if (config.balanceLeadersEveryMs < 0) throw new ConfigError("balanceLeadersEveryMs must be 0 (never) or more");
  if (!config.insecure && (config.tlsCaCert === "" || config.tlsCert === "" || config.tlsKey === "")) {
    throw new ConfigError("TLS needs tlsCaCert, tlsCert and tlsKey (or run with --insecure for plaintext)");
  }
  const ids = new Set<string>();
  for (const peer of config.peers) {
    if (!isValidHomeserverId(peer.id) || ids.has(peer.id)) throw new ConfigError(`peers: bad or repeated id "${peer.id}"`);
    ids.add(peer.id);
  }
  if (config.bootstrap && config.peers.length > 0 && !ids.has(config.id)) throw new ConfigError(`peers must include this homeserver (${config.id}) to bootstrap`);
}

/** Election and heartbeat timeouts in ticks. */
export function raftTicks(config: NodeConfig): { electionTimeoutTicks: number; heartbeatTicks: number } {
  return {
    electionTimeoutTicks: Math.round(config.electionTimeoutMs / config.tickIntervalMs),
    heartbeatTicks: Math.max(1, Math.round(config.heartbeatIntervalMs / config.tickIntervalMs)),
  };
}
