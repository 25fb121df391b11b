/**
 * epochd.admin.v1.AdminService: the operator's API, served on the peer port
 * behind mutual TLS. Only a caller with an operator (or homeserver)
 * certificate of the cluster CA gets in; membership calls need the leader.
 */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import {
  AdminService,
  HomeserverStatus as ProtoHomeserverStatus,
  PeerStreamState as ProtoStreamState,
  ProgressState as ProtoProgressState,
  Role as ProtoRole,
} from "../gen/epochd/admin/v1/admin_pb.ts";
import { encodeIdentityCommand } from "../identity/identity-command.ts";
import type { IdentityResult } from "../identity/identity-state.ts";
import { NotLeaderError } from "../multiraft/errors.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import { encodeSetHomeserver, isValidHomeserverRecord, type HomeserverRecord } from "../node/directory-command.ts";
import { createInvite, inviteLifetimeMsDefault, MembershipError, type InviteContext } from "../node/directory-invites.ts";
import { leaveCluster, type LeaveContext } from "../node/directory-leave.ts";
import { encodeMembershipCommand } from "../node/directory-membership-command.ts";
import { directoryVotersMax } from "../node/directory-reconciler.ts";
import type { RaftStatus } from "../raft/raw-node.ts";
import { Role, type GroupId, type NodeId } from "../raft/types.ts";
import { authenticatedIdentity, type CallWithAuthContext } from "../transport/credentials.ts";
import type { PeerTransport } from "../transport/peer-transport.ts";
import { isValidHomeserverId } from "../transport/tls.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";

/** What the admin service needs from the homeserver. */
export interface AdminContext {
  readonly selfId: NodeId;
  readonly driver: RaftDriver;
  readonly transport: PeerTransport;
  /** The group the cluster's membership lives in. */
  readonly clusterGroupId: GroupId;
  /** Plaintext mode: no certificate to check. */
  readonly insecure: boolean;
  /** The cluster directory: invites, leaving, statuses. */
  readonly directory: AdminDirectory;
}

/** The directory side of the admin API. */
export interface AdminDirectory {
  readonly invites: InviteContext;
  readonly leave: LeaveContext;
  isBlocked(homeserverId: string): boolean;
  /** Called once this homeserver has left: it stops. */
  onLeft(): void;
}

/** Maps a membership refusal to its gRPC status. */
export function membershipStatus(error: unknown): unknown {
  if (!(error instanceof MembershipError)) return error;
  const codes = {
    invalid: grpc.status.INVALID_ARGUMENT,
    unauthenticated: grpc.status.UNAUTHENTICATED,
    denied: grpc.status.PERMISSION_DENIED,
    precondition: grpc.status.FAILED_PRECONDITION,
    unavailable: grpc.status.UNAVAILABLE,
  };
  return new ApiError(codes[error.code], error.message);
}

/** The directory as Status reports it, with this homeserver's view of the group's membership. */
function directoryEntries(records: Iterable<HomeserverRecord>, status: RaftStatus, isBlocked: (id: string) => boolean) {
  return [...records].sort((a, b) => a.id.localeCompare(b.id)).map((r) => ({
    nodeId: r.id,
    peerAddress: r.peerAddress,
    clientAddress: r.clientAddress,
    status: r.status === "left" ? ProtoHomeserverStatus.LEFT : isBlocked(r.id) ? ProtoHomeserverStatus.BLOCKED : ProtoHomeserverStatus.ACTIVE,
    voter: status.confState.voters.includes(r.id),
    learner: status.confState.learners.includes(r.id),
  }));
}

const roles: Record<Role, ProtoRole> = {
  [Role.Follower]: ProtoRole.FOLLOWER,
  [Role.PreCandidate]: ProtoRole.PRE_CANDIDATE,
  [Role.Candidate]: ProtoRole.CANDIDATE,
  [Role.Leader]: ProtoRole.LEADER,
};
const progressStates = { probe: ProtoProgressState.PROBE, replicate: ProtoProgressState.REPLICATE, snapshot: ProtoProgressState.SNAPSHOT };
const streamStates = { connected: ProtoStreamState.CONNECTED, connecting: ProtoStreamState.CONNECTING, backoff: ProtoStreamState.BACKOFF };

function groupStatus(status: RaftStatus, hibernating: boolean) {
  return {
    hibernating,
    votesHeld: status.votesHeld,
    groupId: status.groupId,
    role: roles[status.role],
    term: BigInt(status.term),
    commitIndex: BigInt(status.commit),
    appliedIndex: BigInt(status.applied),
    lastIndex: BigInt(status.lastIndex),
    leaderId: status.leader,
    voters: [...new Set([...status.confState.voters, ...status.confState.votersOutgoing])],
    learners: [...status.confState.learners, ...status.confState.learnersNext],
    progress: [...status.progress].map(([nodeId, p]) => ({
      nodeId,
      matchIndex: BigInt(p.match),
      nextIndex: BigInt(p.next),
      state: progressStates[p.state],
      learner: p.learner,
    })),
  };
}

/** How often a leadership transfer that has not happened yet is asked for again. */
const transferRetryMs = 500;

/** Polls `check` every 20 ms until it holds or `waitMs` passes. */
async function waitFor(check: () => boolean, waitMs: number, what: string): Promise<void> {
  const until = Date.now() + waitMs;
  while (!check()) {
    if (Date.now() > until) throw new ApiError(grpc.status.DEADLINE_EXCEEDED, `timed out ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Registers AdminService on `server` (the peer server, behind mutual TLS). */
export function addAdminService(server: grpc.Server, context: AdminContext): void {
  const { driver, clusterGroupId: group } = context;
  const authorize = (call: CallWithAuthContext) => {
    if (context.insecure) return;
    if (authenticatedIdentity(call) === null) throw new ApiError(grpc.status.UNAUTHENTICATED, "an operator certificate of this cluster is required");
  };
  const requireLeader = () => {
    const status = driver.status(group);
    if (status.role !== Role.Leader) throw new NotLeaderError(group, status.leader);
  };

  server.addService(serviceDefinition(AdminService), {
    status: unaryHandler(AdminService.method.status, async (request, call) => {
      authorize(call);
      const addresses = context.transport.peerAddresses();
      return {
        nodeId: context.selfId,
        groups: (request.groupIds.length === 0 ? driver.groupIds() : request.groupIds.filter((id) => driver.hosts(id))).map((id) => groupStatus(driver.status(id), driver.isDormant(id))),
        peers: [...context.transport.peerStates()].map(([nodeId, state]) => ({ nodeId, address: addresses.get(nodeId) ?? "", streamState: streamStates[state] })),
        directory: directoryEntries(context.directory.invites.directory().values(), driver.status(group), (id) => context.directory.isBlocked(id)),
      };
    }),
    addHomeserver: unaryHandler(AdminService.method.addHomeserver, async (request, call) => {
      authorize(call);
      const record = { id: request.nodeId, peerAddress: request.address, clientAddress: request.clientAddress, signingKey: "" };
      if (!isValidHomeserverRecord(record)) throw new ApiError(grpc.status.INVALID_ARGUMENT, "node_id, address and client_address must be a valid id and host:port pairs");
      requireLeader();
      const recorded = await withDeadline(driver.propose(group, encodeSetHomeserver(record)), remainingMs(call.getDeadline()), "recording the homeserver");
      const result = recorded.result as { ok: boolean; reason?: string };
      if (!result.ok) throw new ApiError(grpc.status.FAILED_PRECONDITION, result.reason ?? "refused");
      // The directory reconciler adds it as a learner and promotes it once caught up, while voters are fewer than the maximum.
      await waitFor(
        () => {
          const conf = driver.status(group).confState;
          return conf.voters.includes(record.id) || (conf.learners.includes(record.id) && conf.voters.length >= directoryVotersMax);
        },
        remainingMs(call.getDeadline()),
        "waiting for the homeserver to join the directory group",
      );
      const status = driver.status(group);
      return { voterIndex: BigInt(status.applied), voter: status.confState.voters.includes(record.id) };
    }),
    removeHomeserver: unaryHandler(AdminService.method.removeHomeserver, async (request, call) => {
      authorize(call);
      const status = driver.status(group);
      if (!status.confState.voters.includes(request.nodeId) && !status.confState.learners.includes(request.nodeId)) {
        throw new ApiError(grpc.status.FAILED_PRECONDITION, `${request.nodeId} is not a member`);
      }
      requireLeader();
      const nonce = randomBytes(12).toString("hex");
      const applied = await withDeadline(driver.propose(group, encodeMembershipCommand({ kind: "leave", nonce, homeserverId: request.nodeId })), remainingMs(call.getDeadline()), "marking it left");
      const result = applied.result as { ok: boolean; reason?: string };
      if (!result.ok) throw new ApiError(grpc.status.FAILED_PRECONDITION, result.reason ?? "refused");
      // The directory reconciler removes a member marked left.
      await waitFor(() => {
        const conf = driver.status(group).confState;
        return !conf.voters.includes(request.nodeId) && !conf.learners.includes(request.nodeId);
      }, remainingMs(call.getDeadline()), "waiting for the removal");
      return { index: BigInt(driver.status(group).applied) };
    }),
    createInvite: unaryHandler(AdminService.method.createInvite, async (request, call) => {
      authorize(call);
      if (!isValidHomeserverId(request.homeserverId)) throw new ApiError(grpc.status.INVALID_ARGUMENT, "homeserver_id must be a DNS label");
      const lifetimeMs = request.ttlMs === 0n ? inviteLifetimeMsDefault : Number(request.ttlMs);
      try {
        const invite = await createInvite(context.directory.invites, request.homeserverId, lifetimeMs, remainingMs(call.getDeadline()));
        return { token: invite.token, joinAddress: context.directory.invites.clientAddress, expiresAtMs: BigInt(invite.expiresAtMs) };
      } catch (error) {
        throw membershipStatus(error);
      }
    }),
    leave: unaryHandler(AdminService.method.leave, async (_request, call) => {
      const caller = authenticatedIdentity(call);
      if (!context.insecure && (caller === null || (caller.role === "homeserver" && caller.id !== context.selfId))) {
        throw new ApiError(grpc.status.PERMISSION_DENIED, "only an operator or this homeserver itself may make it leave");
      }
      try {
        const left = await leaveCluster(context.directory.leave, remainingMs(call.getDeadline()));
        setImmediate(() => context.directory.onLeft());
        return { index: BigInt(left.index) };
      } catch (error) {
        throw membershipStatus(error);
      }
    }),
    transferLeadership: unaryHandler(AdminService.method.transferLeadership, async (request, call) => {
      authorize(call);
      const groupId = request.groupId === "" ? group : request.groupId;
      const status = driver.status(groupId);
      if (!status.confState.voters.includes(request.toNodeId)) throw new ApiError(grpc.status.INVALID_ARGUMENT, `${request.toNodeId} is not a voter of ${groupId}`);
      if (status.role !== Role.Leader) throw new NotLeaderError(groupId, status.leader);
      // The core abandons a transfer that does not finish within an election timeout (the target may
      // refuse to campaign while it has conf changes to apply, as one just promoted does): ask again.
      let askedAt = 0;
      await waitFor(
        () => {
          if (driver.status(groupId).leader === request.toNodeId) return true;
          if (Date.now() - askedAt >= transferRetryMs) {
            askedAt = Date.now();
            driver.transferLeadership(groupId, request.toNodeId);
          }
          return false;
        },
        remainingMs(call.getDeadline()),
        "waiting for the transfer",
      );
      return { leaderId: request.toNodeId, term: BigInt(driver.status(groupId).term) };
    }),
    setHomeserverBlocked: unaryHandler(AdminService.method.setHomeserverBlocked, async (request, call) => {
      authorize(call);
      const data = encodeIdentityCommand({ command: { case: "setBlocked", value: { homeserverId: request.homeserverId, blocked: request.blocked } } });
      const applied = await withDeadline(driver.propose(group, data), remainingMs(call.getDeadline()), "recording the block");
      const result = applied.result as IdentityResult;
      if (!result.ok) throw new ApiError(grpc.status.INVALID_ARGUMENT, result.reason);
      return { index: BigInt(applied.index) };
    }),
  } satisfies grpc.UntypedServiceImplementation);
}
