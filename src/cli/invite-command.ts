/**
 * `epochd invite --id NEW_ID [--ttl 1h]`: asks a homeserver of the cluster
 * (its admin API on the peer port, over mutual TLS) to mint a single-use,
 * expiring invite token for a new homeserver, and prints it with the
 * `epochd join` command line to run on the new homeserver.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { unaryClient, type UnaryClient } from "../api/grpc-service.ts";
import { AdminService } from "../gen/epochd/admin/v1/admin_pb.ts";
import { ConfigError, loadNodeConfig } from "../node/config.ts";
import { clientChannelCredentials } from "../transport/credentials.ts";
import { UsageError, parseArgs } from "./args.ts";
import { readLocalCluster } from "./cluster-layout.ts";

const help = `usage: epochd invite --id NEW_ID [--ttl 1h] [--admin HOST:PORT] [--data DIR | --config FILE] [--json]
Mints a single-use invite token for a new homeserver NEW_ID, valid for --ttl (s, m, h or d; default 1h,
at most 7d). The admin call goes to --admin (a homeserver's peer address) with the operator certificate of
the local cluster in DIR (./data), or with the identity of the homeserver configured in FILE. The homeserver
asked must hold the cluster CA key (tlsCaKey). Prints the token and the command to run on the new homeserver.`;

/** Where an operator command sends its admin call, and as whom. */
export interface OperatorTarget {
  readonly address: string;
  /** Opens an admin client to `address` (default: the target's). */
  client(address?: string): UnaryClient<(typeof AdminService)["method"]>;
}

/**
 * The admin endpoint and credentials from the flags: `--config FILE` uses that
 * homeserver's own TLS identity and peer address; otherwise the local
 * cluster's operator certificate (cluster.json in `--data`, ./data).
 */
export function operatorTarget(flags: ReadonlyMap<string, string>): OperatorTarget {
  const configPath = flags.get("config");
  let address: string | undefined = flags.get("admin");
  let credentials: grpc.ChannelCredentials;
  let insecure: boolean;
  if (configPath !== undefined) {
    const config = loadNodeConfig(new Map([["config", configPath]]));
    insecure = config.insecure;
    address ??= config.peerListen;
    credentials = insecure
      ? grpc.credentials.createInsecure()
      : clientChannelCredentials({ kind: "tls", ca: readFileSync(config.tlsCaCert), cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) });
  } else {
    const dataDir = resolve(flags.get("data") ?? "./data");
    const cluster = readLocalCluster(dataDir);
    if (cluster === undefined) throw new UsageError(`no cluster.json in ${dataDir}: give --config FILE of a homeserver, or --data DIR of a local cluster`);
    insecure = cluster.insecure;
    address ??= cluster.homeservers[0]?.peerAddress;
    credentials = insecure
      ? grpc.credentials.createInsecure()
      : clientChannelCredentials({ kind: "tls", ca: readFileSync(cluster.caCert), cert: readFileSync(cluster.operatorCert), key: readFileSync(cluster.operatorKey) });
  }
  if (address === undefined) throw new UsageError("--admin HOST:PORT is needed");
  const target = address;
  // Certificates name localhost; a host name as TLS server name avoids a Node deprecation for IPs.
  const options: grpc.ChannelOptions = insecure ? {} : { "grpc.ssl_target_name_override": "localhost" };
  return { address: target, client: (to = target) => unaryClient(AdminService, to, credentials, options) };
}

/** Parses a duration like 90s, 30m, 1h, 2d, or plain milliseconds. */
export function parseDurationMs(text: string): number {
  const match = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (match === null) throw new UsageError(`"${text}" is not a duration like 30m, 1h or 2d`);
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };
  return Number(match[1]) * units[match[2] ?? "ms"]!;
}

/** A command's failure as one line: the gRPC status name and message. */
export function describeError(error: unknown): string {
  const e = error as Partial<grpc.ServiceError>;
  return e.code !== undefined ? `${grpc.status[e.code]}: ${e.details ?? e.message}` : String(error);
}

export async function inviteCommand(args: string[]): Promise<number> {
  if (args.includes("--help")) {
    console.log(help);
    return 0;
  }
  let target: OperatorTarget;
  let id: string;
  let ttlMs: number;
  let json: boolean;
  try {
    const { flags, positional } = parseArgs(args, new Set(["json"]));
    id = flags.get("id") ?? positional[0] ?? "";
    if (id === "") throw new UsageError("--id NEW_ID is needed");
    ttlMs = parseDurationMs(flags.get("ttl") ?? "1h");
    json = flags.has("json");
    target = operatorTarget(flags);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(`epochd invite: ${error.message}\n\n${help}`);
      return 2;
    }
    throw error;
  }
  const client = target.client();
  try {
    const invite = await client.createInvite({ homeserverId: id, ttlMs: BigInt(ttlMs) }, { deadlineMs: 20_000 });
    const expires = new Date(Number(invite.expiresAtMs)).toISOString();
    if (json) console.log(JSON.stringify({ token: invite.token, joinAddress: invite.joinAddress, expiresAt: expires }));
    else {
      console.log(`invite for ${id}, single use, valid until ${expires}:\n${invite.token}\n`);
      console.log(`on the new homeserver:\n  epochd join --cluster ${invite.joinAddress} --token ${invite.token} --peer-listen HOST:PORT --client-listen HOST:PORT`);
    }
    return 0;
  } catch (error) {
    console.error(`epochd invite: ${describeError(error)}`);
    return 1;
  } finally {
    client.close();
  }
}
