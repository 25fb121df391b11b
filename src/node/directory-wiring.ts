/**
 * Composes the cluster directory's moving parts for a homeserver: the
 * certificate issuer (when it holds the CA key), the invite and leave
 * contexts the admin and join services use, and the membership reconciler.
 * Kept out of homeserver.ts so the composition root only starts and stops it.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { AdminDirectory } from "../api/admin-service.ts";
import { unaryClient } from "../api/grpc-service.ts";
import type { JoinContext } from "../api/join-service.ts";
import { AdminService } from "../gen/epochd/admin/v1/admin_pb.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { GroupId, NodeId } from "../raft/types.ts";
import { peerChannelCredentials } from "../transport/credentials.ts";
import type { PeerTransport } from "../transport/peer-transport.ts";
import type { PeerCredentials } from "../transport/tls.ts";
import type { ClusterStateMachine } from "./cluster-state-machine.ts";
import type { NodeConfig } from "./config.ts";
import { fileIssuer, type InviteContext } from "./directory-invites.ts";
import type { LeaveContext, RemoteMembership } from "./directory-leave.ts";
import { DirectoryReconciler } from "./directory-reconciler.ts";

/** What the directory parts need from the homeserver. */
export interface DirectoryWiringOptions {
  readonly config: NodeConfig;
  readonly credentials: PeerCredentials;
  readonly groupId: GroupId;
  readonly driver: RaftDriver;
  readonly transport: PeerTransport;
  readonly stateMachine: ClusterStateMachine;
  readonly logger: Logger;
  /** Called once this homeserver has left the cluster. */
  readonly onLeft: () => void;
}

/** The directory parts of a running homeserver. */
export interface DirectoryParts {
  readonly admin: AdminDirectory;
  readonly join: JoinContext;
  readonly reconciler: DirectoryReconciler;
}

/** Refuses to start a homeserver whose data directory says it left the cluster. */
export function assertNotLeft(stateMachine: ClusterStateMachine, selfId: string): void {
  if (stateMachine.homeservers().get(selfId)?.status === "left") {
    throw new Error(`${selfId} has left its cluster; to rejoin, get a new invite and join with a new data directory`);
  }
}

/** Builds the directory parts; the reconciler is not started yet. */
export function wireDirectory(options: DirectoryWiringOptions): DirectoryParts {
  const { config, credentials, driver, stateMachine, groupId } = options;
  const tls = credentials.kind === "tls" ? credentials : undefined;
  const issuer = tls !== undefined && config.tlsCaKey !== "" ? fileIssuer({ certPath: config.tlsCaCert, keyPath: config.tlsCaKey }) : undefined;
  const directory = () => stateMachine.homeservers();
  const proposeAnywhere = (data: Uint8Array) => driver.proposeAnywhere(groupId, data);
  const invites: InviteContext = {
    selfId: config.id,
    clusterId: config.clusterId,
    clientAddress: config.clientListen,
    insecure: config.insecure,
    issuer,
    membership: stateMachine.membership,
    directory,
    proposeAnywhere,
  };
  const leave: LeaveContext = {
    selfId: config.id,
    groupId,
    driver,
    isConnected: (peer) => options.transport.peerStates().get(peer) === "connected",
    membership: stateMachine.membership,
    directory,
    proposeAnywhere,
    askMembership: (id) => askMembership(credentials, directory().get(id)?.peerAddress, id, groupId),
  };
  const isBlocked = (id: string) => stateMachine.identity.index.isBlocked(id);
  const reconciler = new DirectoryReconciler({ groupId, driver, directory, isBlocked, logger: options.logger.child({ component: "directory" }) });
  return {
    admin: { invites, leave, isBlocked, onLeft: options.onLeft },
    join: { invites, caCertificatePem: tls?.ca.toString("utf8") ?? "", readIndex: () => driver.readIndex(groupId) },
    reconciler,
  };
}

/** Asks homeserver `id`'s admin API, as this homeserver, for its view of group `groupId`. */
async function askMembership(credentials: PeerCredentials, address: string | undefined, id: NodeId, groupId: GroupId): Promise<RemoteMembership | undefined> {
  if (address === undefined) return undefined;
  const channel = credentials.kind === "insecure" ? grpc.credentials.createInsecure() : peerChannelCredentials(credentials, id);
  // TLS names the server by homeserver id (its certificate's DNS SAN), as peer links do.
  const client = unaryClient(AdminService, address, channel, credentials.kind === "tls" ? { "grpc.ssl_target_name_override": id } : {});
  try {
    const status = await client.status({ groupIds: [groupId] }, { deadlineMs: 1000 });
    const group = status.groups.find((g) => g.groupId === groupId);
    if (group === undefined) return undefined;
    return { leaderId: group.leaderId, members: [...group.voters, ...group.learners], appliedIndex: Number(group.appliedIndex) };
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}
