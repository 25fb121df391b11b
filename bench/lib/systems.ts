/**
 * The systems a Raft benchmark compares, behind one interface: start a local
 * 3-member cluster, open a write target for a mode (stream or unary) against
 * its leader, report its processes, stop it by pid. The benchmark runs both
 * side by side and alternates their phases, so a change in the machine's load
 * hits both alike.
 */
import * as grpc from "@grpc/grpc-js";
import { epochdChannel, findEpochdLeader, startEpochdCluster, stopEpochdCluster } from "./epochd-cluster.ts";
import { join } from "node:path";
import { createCertificateAuthority, issueHomeserverCertificate } from "../../src/transport/tls.ts";
import { startEtcdCluster, stopEtcdCluster, waitForEtcdLeader, type EtcdTlsFiles } from "./etcd-cluster.ts";
import { epochdPutPath, etcdPutPath, putStreamTarget, unaryPutTarget } from "./grpc-targets.ts";
import type { WriteTarget } from "./load.ts";

/** How writes travel: many on one PutStream, or one unary call each. */
export type WriteMode = "stream" | "unary";

/** A write target on a connection to the current leader; `close` ends both. */
export interface OpenTarget {
  readonly target: WriteTarget;
  /** The process name of the leader the target writes to. */
  readonly leaderName: string;
  close(): void;
}

/** A running cluster under test. */
export interface SystemUnderTest {
  readonly system: string;
  readonly version: string;
  readonly processes: ReadonlyArray<{ readonly name: string; readonly pid: number }>;
  readonly modes: readonly WriteMode[];
  /** Finds the current leader (it may have changed since the last phase) and opens a target on it. */
  open(mode: WriteMode): Promise<OpenTarget>;
  stop(): Promise<void>;
}

/** Starts a 3-homeserver epochd cluster in `dataDir` and finds its leader. */
export async function startEpochd(dataDir: string, insecure: boolean, env: Readonly<Record<string, string>>): Promise<SystemUnderTest> {
  const cluster = await startEpochdCluster({ dataDir, insecure, nodes: 3, env });
  try {
    await findEpochdLeader(cluster);
  } catch (error) {
    await stopEpochdCluster(cluster);
    throw error;
  }
  return {
    system: "epochd",
    version: `node ${process.version}, ${insecure ? "plaintext" : "TLS"}`,
    processes: cluster.homeservers.map((h) => ({ name: h.id, pid: h.pid })),
    modes: ["stream", "unary"],
    async open(mode) {
      const leaderAddress = await findEpochdLeader(cluster);
      const leaderName = cluster.homeservers.find((h) => h.clientAddress === leaderAddress)?.id ?? leaderAddress;
      const channel = epochdChannel(cluster, leaderAddress);
      if (mode === "unary") return { target: unaryPutTarget(channel, epochdPutPath), leaderName, close: () => channel.close() };
      const stream = putStreamTarget(channel);
      return {
        target: stream,
        leaderName,
        close: () => {
          stream.close();
          channel.close();
        },
      };
    },
    stop: () => stopEpochdCluster(cluster),
  };
}

/**
 * Starts a 3-member etcd cluster in `dataDir` and finds its leader; with
 * `tls`, TLS as epochd runs it (a CA and one member certificate made in
 * `dataDir/certs` by the same code as `epochd cluster up`).
 */
export async function startEtcd(dataDir: string, tls = false): Promise<SystemUnderTest> {
  let files: EtcdTlsFiles | undefined;
  if (tls) {
    const certs = join(dataDir, "certs");
    const ca = await createCertificateAuthority(certs);
    const member = await issueHomeserverCertificate(ca, certs, "etcd");
    files = { caCertPath: ca.certPath, certPath: member.certPath, keyPath: member.keyPath };
  }
  const cluster = await startEtcdCluster(dataDir, 3, 30_000, files);
  const credentials = cluster.caCert === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(cluster.caCert);
  return {
    system: "etcd",
    version: `${cluster.version}, ${tls ? "TLS" : "plaintext"}`,
    processes: cluster.members.map((m) => ({ name: m.name, pid: m.pid })),
    modes: ["unary"],
    async open() {
      const leader = await waitForEtcdLeader(cluster, 15_000);
      const channel = new grpc.Client(leader.clientAddress, credentials);
      return { target: unaryPutTarget(channel, etcdPutPath), leaderName: leader.name, close: () => channel.close() };
    },
    stop: () => stopEtcdCluster(cluster),
  };
}
