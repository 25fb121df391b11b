/** A client for a homeserver's admin API, as the operator: with the operator certificate, or plaintext. */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { unaryClient, type UnaryClient } from "../api/grpc-service.ts";
import { AdminService } from "../gen/epochd/admin/v1/admin_pb.ts";
import { clientChannelCredentials } from "../transport/credentials.ts";
import type { LocalCluster } from "./cluster-layout.ts";

/** An admin client of one homeserver. */
export type AdminClient = UnaryClient<(typeof AdminService)["method"]>;

/** Opens an admin client for the homeserver whose peer service listens at `peerAddress`. */
export function adminClient(cluster: Pick<LocalCluster, "insecure" | "caCert" | "operatorCert" | "operatorKey">, peerAddress: string, options: grpc.ChannelOptions = {}): AdminClient {
  const credentials = cluster.insecure
    ? grpc.credentials.createInsecure()
    : clientChannelCredentials({ kind: "tls", ca: readFileSync(cluster.caCert), cert: readFileSync(cluster.operatorCert), key: readFileSync(cluster.operatorKey) });
  // Certificates name 127.0.0.1 and localhost; a host name (not an IP) as TLS server name avoids a Node deprecation.
  return unaryClient(AdminService, peerAddress, credentials, cluster.insecure ? options : { ...options, "grpc.ssl_target_name_override": "localhost" });
}
