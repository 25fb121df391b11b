/**
 * `epochd join --token TOKEN`: a new homeserver joins a cluster. It makes its
 * keys (the TLS key never leaves it), checks that the homeserver it reached
 * presents the CA the token names, redeems the token (JoinService.Join, on
 * that homeserver's client port), writes its certificate and config into its
 * data directory, and then runs as `epochd start` would. The cluster adds it
 * as a learner and promotes it to voter while the directory group has fewer
 * than 5 voters. Later starts: `epochd start --config DIR/epochd.yaml`.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { stringify as toYaml } from "yaml";
import { unaryClient } from "../api/grpc-service.ts";
import { JoinService, type JoinResponse } from "../gen/epochd/admin/v1/join_pb.ts";
import { flagName } from "../node/config.ts";
import { certificateFingerprint, InviteTokenError, parseInviteToken, type InviteToken } from "../node/directory-token.ts";
import { loadOrCreateSigningKey } from "../node/signing-key.ts";
import { identityFromCertificate } from "../transport/credentials.ts";
import { createCertificateRequest } from "../transport/tls.ts";
import { UsageError, parseArgs } from "./args.ts";
import { describeError } from "./invite-command.ts";
import { startCommand } from "./start-command.ts";

const help = `usage: epochd join --token TOKEN --peer-listen HOST:PORT --client-listen HOST:PORT
                   [--cluster HOST:PORT] [--id ID] [--data-dir DIR] [--metrics-listen HOST:PORT]
                   [--no-start] [any option of epochd start, e.g. --election-timeout-ms MS]
Joins the cluster that made TOKEN (epochd invite) as a new homeserver. --cluster is the client address of a
homeserver of that cluster (default: the one in the token). Keys, certificate and config (epochd.yaml) go
into DIR (./data/ID); then the homeserver runs in the foreground, unless --no-start.`;

/** Options of `epochd start` that join passes into the config it writes. */
const passThrough = ["electionTimeoutMs", "heartbeatIntervalMs", "tickIntervalMs", "sync", "snapshotEveryEntries", "snapshotKeepEntries", "snapshotEveryBytes", "snapshotKeepBytes", "hibernateAfterMs", "loadedGroupsMax", "balanceLeadersEveryMs", "logLevel"] as const;
/** How many times a Join that could not be answered is asked again. */
const joinAttempts = 5;

interface JoinPlan {
  readonly token: InviteToken;
  readonly cluster: string;
  readonly id: string;
  readonly dataDir: string;
  readonly peerListen: string;
  readonly clientListen: string;
  readonly metricsListen: string;
  readonly start: boolean;
  readonly extra: Record<string, string>;
}

function plan(args: string[]): JoinPlan {
  const { flags } = parseArgs(args, new Set(["no-start"]));
  const tokenText = flags.get("token");
  if (tokenText === undefined) throw new UsageError("--token is needed");
  const token = parseInviteToken(tokenText);
  const id = flags.get("id") ?? token.homeserverId;
  if (id !== token.homeserverId) throw new UsageError(`the token is for homeserver ${token.homeserverId}, not ${id}`);
  const peerListen = flags.get("peer-listen");
  const clientListen = flags.get("client-listen");
  if (peerListen === undefined || clientListen === undefined) throw new UsageError("--peer-listen and --client-listen are needed");
  const extra: Record<string, string> = {};
  for (const key of passThrough) {
    const value = flags.get(flagName(key));
    if (value !== undefined) extra[key] = value;
  }
  return {
    token,
    cluster: flags.get("cluster") ?? token.joinAddress,
    id,
    dataDir: resolve(flags.get("data-dir") ?? join("data", id)),
    peerListen,
    clientListen,
    metricsListen: flags.get("metrics-listen") ?? "",
    start: !flags.has("no-start"),
    extra,
  };
}

/** Fetches the cluster's CA over an unverified connection and checks it against the token's fingerprint. */
async function verifiedCa(p: JoinPlan): Promise<string> {
  const unverified = grpc.credentials.createSsl(null, null, null, { rejectUnauthorized: false, checkServerIdentity: () => undefined });
  const client = unaryClient(JoinService, p.cluster, unverified, { "grpc.ssl_target_name_override": "localhost" });
  try {
    const info = await client.getClusterInfo({}, { deadlineMs: 10_000 });
    if (info.clusterId !== p.token.clusterId) throw new Error(`${p.cluster} serves cluster ${info.clusterId}, not ${p.token.clusterId}`);
    if (info.caCertificate === "" || certificateFingerprint(info.caCertificate) !== p.token.caFingerprint) {
      throw new Error(`${p.cluster} presents a CA that is not the one the token names: not the invited cluster`);
    }
    return info.caCertificate;
  } finally {
    client.close();
  }
}

/** Channel credentials trusting only `caPem`, and only a server with a homeserver certificate. */
function clusterCredentials(caPem: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(caPem), null, null, {
    checkServerIdentity: (_host, cert) => (identityFromCertificate(cert)?.role === "homeserver" ? undefined : new Error("the server is not a homeserver of the cluster")),
  });
}

/** The TLS key and request, made once and reused if join is run again after a lost answer. */
async function certificateRequest(tlsDir: string, id: string): Promise<string> {
  const keyPath = join(tlsDir, `${id}.key`);
  const csrPath = join(tlsDir, `${id}.csr`);
  if (existsSync(keyPath) && existsSync(csrPath)) return readFileSync(csrPath, "utf8");
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  const csr = await createCertificateRequest(keyPath, id);
  writeFileSync(csrPath, csr);
  return csr;
}

async function redeem(p: JoinPlan, credentials: grpc.ChannelCredentials, csr: string, signingKey: Uint8Array): Promise<JoinResponse> {
  const options: grpc.ChannelOptions = p.token.caFingerprint === "" ? {} : { "grpc.ssl_target_name_override": "localhost" };
  const client = unaryClient(JoinService, p.cluster, credentials, options);
  const request = {
    inviteId: p.token.inviteId,
    secret: p.token.secret,
    homeserverId: p.id,
    peerAddress: p.peerListen,
    clientAddress: p.clientListen,
    signingKey,
    certificateRequest: csr,
  };
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await client.join(request, { deadlineMs: 20_000 });
      } catch (error) {
        const code = (error as Partial<grpc.ServiceError>).code;
        const retryable = code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED || code === grpc.status.RESOURCE_EXHAUSTED;
        if (!retryable || attempt >= joinAttempts) throw error;
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  } finally {
    client.close();
  }
}

/** Writes the certificate and epochd.yaml; returns the config's path. */
function writeConfig(p: JoinPlan, answer: JoinResponse): string {
  const config: Record<string, unknown> = {
    id: p.id,
    clusterId: answer.clusterId,
    dataDir: ".",
    peerListen: p.peerListen,
    clientListen: p.clientListen,
    metricsListen: p.metricsListen,
    peers: answer.members.map((m) => ({ id: m.nodeId, peerAddress: m.peerAddress, clientAddress: m.clientAddress })),
    bootstrap: false,
    insecure: p.token.caFingerprint === "",
    ...p.extra,
  };
  if (p.token.caFingerprint !== "") {
    writeFileSync(join(p.dataDir, "tls", "ca.crt"), answer.caCertificate);
    writeFileSync(join(p.dataDir, "tls", `${p.id}.crt`), answer.certificate);
    Object.assign(config, { tlsCaCert: "tls/ca.crt", tlsCert: `tls/${p.id}.crt`, tlsKey: `tls/${p.id}.key` });
  }
  const path = join(p.dataDir, "epochd.yaml");
  writeFileSync(path, toYaml(config));
  return path;
}

export async function joinCommand(args: string[]): Promise<number> {
  if (args.includes("--help")) {
    console.log(help);
    return 0;
  }
  let p: JoinPlan;
  try {
    p = plan(args);
  } catch (error) {
    if (error instanceof UsageError || error instanceof InviteTokenError) {
      console.error(`epochd join: ${error.message}\n\n${help}`);
      return 2;
    }
    throw error;
  }
  if (existsSync(join(p.dataDir, "db"))) {
    console.error(`epochd join: ${p.dataDir} already holds a homeserver; start it with \`epochd start --config ${join(p.dataDir, "epochd.yaml")}\``);
    return 1;
  }
  let configPath: string;
  try {
    mkdirSync(p.dataDir, { recursive: true, mode: 0o700 });
    const signingKey = loadOrCreateSigningKey(p.dataDir).publicKeyRaw;
    const tls = p.token.caFingerprint !== "";
    const credentials = tls ? clusterCredentials(await verifiedCa(p)) : grpc.credentials.createInsecure();
    const csr = tls ? await certificateRequest(join(p.dataDir, "tls"), p.id) : "";
    const answer = await redeem(p, credentials, csr, signingKey);
    configPath = writeConfig(p, answer);
    console.log(`joined cluster ${answer.clusterId} as ${p.id} (members: ${answer.members.map((m) => m.nodeId).join(", ")}); config in ${configPath}`);
  } catch (error) {
    console.error(`epochd join: ${describeError(error)}`);
    return 1;
  }
  if (!p.start) return 0;
  console.log(`starting; later starts: epochd start --config ${configPath}`);
  return startCommand(["--config", configPath]);
}
