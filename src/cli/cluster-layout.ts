/**
 * The files of a local cluster made by `epochd cluster up`: one config, data
 * directory and log per homeserver, certificates, and cluster.json, which
 * `epochd status` and `epochd cluster down` read to find the homeservers.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** One homeserver of a local cluster. */
export interface LocalHomeserver {
  readonly id: string;
  readonly peerAddress: string;
  readonly clientAddress: string;
  readonly metricsAddress: string;
  readonly configPath: string;
  readonly logPath: string;
  /** The process id while `cluster up` runs it. */
  pid?: number | undefined;
}

/** What cluster.json holds. */
export interface LocalCluster {
  readonly dataDir: string;
  readonly insecure: boolean;
  /** The operator's client certificate, for the admin API. */
  readonly operatorCert: string;
  readonly operatorKey: string;
  readonly caCert: string;
  readonly homeservers: LocalHomeserver[];
  /** The pid of the `cluster up` process supervising them. */
  supervisorPid?: number | undefined;
}

/** Path of cluster.json in `dataDir`. */
export function clusterFile(dataDir: string): string {
  return join(dataDir, "cluster.json");
}

/** Reads cluster.json, or returns undefined when there is none. */
export function readLocalCluster(dataDir: string): LocalCluster | undefined {
  const path = clusterFile(dataDir);
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as LocalCluster;
}
