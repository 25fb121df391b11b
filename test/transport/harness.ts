/**
 * Test harness for the peer transport: real grpc-js servers on 127.0.0.1
 * with ephemeral ports, certificates made with openssl, a capturing logger,
 * and bounded waits.
 */
import * as grpc from "@grpc/grpc-js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import type { GroupId, Message, NodeId } from "../../src/raft/types.ts";
import { serverCredentials } from "../../src/transport/credentials.ts";
import { peerServerOptions } from "../../src/transport/peer-service.ts";
import { PeerTransport, type PeerTransportOptions } from "../../src/transport/peer-transport.ts";
import {
  createCertificateAuthority,
  issueHomeserverCertificate,
  issueOperatorCertificate,
  loadTlsMaterial,
  type PeerCredentials,
  type TlsMaterial,
} from "../../src/transport/tls.ts";

/** Polls `condition` every 5 ms; fails after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A pino logger whose JSON lines the test can read. */
export function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>); } });
  return { logger, lines };
}

/** Certificates of one test run: a cluster CA with hs1..hs3, an unknown hs9 and an operator; another CA with a rogue hs2. */
export interface TestCertificates {
  readonly dir: string;
  readonly homeservers: ReadonlyMap<string, TlsMaterial>;
  readonly unknownHomeserver: TlsMaterial;
  readonly operator: TlsMaterial;
  /** hs2's id, signed by another CA, trusting the cluster CA. */
  readonly rogue: TlsMaterial;
  cleanup(): Promise<void>;
}

/** Makes every certificate the tests need, in a temporary directory. */
export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), "epochd-tls-"));
  const ca = await createCertificateAuthority(join(dir, "ca"));
  const homeservers = new Map<string, TlsMaterial>();
  for (const id of ["hs1", "hs2", "hs3"]) homeservers.set(id, await loadTlsMaterial(await issueHomeserverCertificate(ca, join(dir, "ca"), id)));
  const unknownHomeserver = await loadTlsMaterial(await issueHomeserverCertificate(ca, join(dir, "ca"), "hs9"));
  const operator = await loadTlsMaterial(await issueOperatorCertificate(ca, join(dir, "ca")));
  const otherCa = await createCertificateAuthority(join(dir, "other"));
  const rogueFiles = await issueHomeserverCertificate(otherCa, join(dir, "other"), "hs2");
  const rogue = { ...(await loadTlsMaterial(rogueFiles)), ca: homeservers.get("hs1")!.ca };
  return { dir, homeservers, unknownHomeserver, operator, rogue, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A gRPC server bound to 127.0.0.1 (port 0 picks a free port). */
export async function startServer(credentials: PeerCredentials, port = 0, server = new grpc.Server(peerServerOptions())): Promise<{ server: grpc.Server; address: string }> {
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, serverCredentials(credentials), (error, p) => (error === null ? resolve(p) : reject(error)));
  });
  return { server, address: `127.0.0.1:${bound}` };
}

/** Stops a server at once (tests do not wait for graceful drains). */
export function stopServer(server: grpc.Server): void {
  server.forceShutdown();
}

/** One homeserver's transport side in a test: server, transport, and what it received. */
export interface TestNode {
  readonly id: NodeId;
  readonly address: string;
  readonly server: grpc.Server;
  readonly transport: PeerTransport;
  readonly received: Array<{ from: NodeId; message: Message }>;
  readonly snapshotStatus: Array<{ to: NodeId; groupId: GroupId; ok: boolean }>;
  readonly logLines: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** Creates the transports of `ids` on bound servers; every node knows every other. */
export async function startNodes(
  ids: readonly NodeId[],
  credentialsOf: (id: NodeId) => PeerCredentials,
  extra: Partial<PeerTransportOptions> = {},
  ports: ReadonlyMap<NodeId, number> = new Map(),
): Promise<TestNode[]> {
  const servers = new Map<NodeId, { server: grpc.Server; address: string }>();
  for (const id of ids) servers.set(id, await startServer(credentialsOf(id), ports.get(id) ?? 0));
  return ids.map((id) => {
    const { server, address } = servers.get(id)!;
    const peers = new Map([...servers].filter(([peer]) => peer !== id).map(([peer, s]) => [peer, s.address]));
    return startNode(id, server, address, peers, credentialsOf(id), extra);
  });
}

/** Builds one node's transport around an already bound server. */
export function startNode(
  id: NodeId, server: grpc.Server, address: string, peers: ReadonlyMap<NodeId, string>,
  credentials: PeerCredentials, extra: Partial<PeerTransportOptions> = {},
): TestNode {
  const received: TestNode["received"] = [];
  const snapshotStatus: TestNode["snapshotStatus"] = [];
  const { logger, lines } = capturingLogger();
  const transport = new PeerTransport({
    selfId: id, peers, credentials, logger,
    onMessages: (from, messages) => { for (const message of messages) received.push({ from, message }); },
    onSnapshotStatus: (to, groupId, ok) => snapshotStatus.push({ to, groupId, ok }),
    backoff: { minMs: 20, maxMs: 200 },
    ...extra,
  });
  transport.register(server);
  return {
    id, address, server, transport, received, snapshotStatus, logLines: lines,
    stop: async () => {
      await transport.close();
      stopServer(server);
    },
  };
}
