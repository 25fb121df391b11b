/**
 * epochd.admin.v1.AdminService: the operator's API, served on the peer port
 * behind mutual TLS. Only a caller with an operator (or homeserver)
 * certificate of the cluster CA gets in; membership calls need the leader.
 */
import * as grpc from "@grpc/grpc-js";
import {
  AdminService,
  PeerStreamState as ProtoStreamState,
  ProgressState as ProtoProgressState,
  Role as ProtoRole,
} from "../gen/epochd/admin/v1/admin_pb.ts";
import { encodeIdentityCommand } from "../identity/identity-command.ts";
import type { IdentityResult } from "../identity/identity-state.ts";
import { NotLeaderError } from "../multiraft/errors.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import { encodeSetHomeserver, isValidHomeserverRecord } from "../node/directory-command.ts";
import type { RaftStatus } from "../raft/raw-node.ts";
import { ConfChangeType, Role, type GroupId, type NodeId } from "../raft/types.ts";
import { authenticatedIdentity, type CallWithAuthContext } from "../transport/credentials.ts";
import type { PeerTransport } from "../transport/peer-transport.ts";
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
}

const roles: Record<Role, ProtoRole> = {
  [Role.Follower]: ProtoRole.FOLLOWER,
  [Role.PreCandidate]: ProtoRole.PRE_CANDIDATE,
  [Role.Candidate]: ProtoRole.CANDIDATE,
  [Role.Leader]: ProtoRole.LEADER,
};
const progressStates = { probe: ProtoProgressState.PROBE, replicate: ProtoProgressState.REPLICATE, snapshot: ProtoProgressState.SNAPSHOT };
const streamStates = { connected: ProtoStreamState.CONNECTED, connecting: ProtoStreamState.CONNECTING, backoff: ProtoStreamState.BACKOFF };

function groupStatus(status: RaftStatus) {
  return {
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
    status: unaryHandler(AdminService.method.status, async (_request, call) => {
      authorize(call);
      const addresses = context.transport.peerAddresses();
      return {
        nodeId: context.selfId,
        groups: driver.groupIds().map((id) => groupStatus(driver.status(id))),
        peers: [...context.transport.peerStates()].map(([nodeId, state]) => ({ nodeId, address: addresses.get(nodeId) ?? "", streamState: streamStates[state] })),
      };
    }),
    addHomeserver: unaryHandler(AdminService.method.addHomeserver, async (request, call) => {
      authorize(call);
      const record = { id: request.nodeId, peerAddress: request.address, clientAddress: request.clientAddress, signingKey: "" };
      if (!isValidHomeserverRecord(record)) throw new ApiError(grpc.status.INVALID_ARGUMENT, "node_id, address and client_address must be a valid id and host:port pairs");
      requireLeader();
      const waitMs = remainingMs(call.getDeadline());
      await withDeadline(driver.propose(group, encodeSetHomeserver(record)), waitMs, "recording the homeserver");
      await withDeadline(driver.proposeConfChange(group, { steps: [{ type: ConfChangeType.AddLearner, nodeId: record.id }], leaveJoint: false }), waitMs, "adding the learner");
      // Promote only once the learner holds everything committed when it was added.
      const target = driver.status(group).commit;
      await waitFor(() => (driver.status(group).progress.get(record.id)?.match ?? 0) >= target, remainingMs(call.getDeadline()), "waiting for the learner to catch up");
      const voter = await withDeadline(
        driver.proposeConfChange(group, { steps: [{ type: ConfChangeType.AddVoter, nodeId: record.id }], leaveJoint: false }),
        remainingMs(call.getDeadline()),
        "promoting the learner",
      );
      return { voterIndex: BigInt(voter.index) };
    }),
    removeHomeserver: unaryHandler(AdminService.method.removeHomeserver, async (request, call) => {
      authorize(call);
      const status = driver.status(group);
      if (!status.confState.voters.includes(request.nodeId) && !status.confState.learners.includes(request.nodeId)) {
        throw new ApiError(grpc.status.FAILED_PRECONDITION, `${request.nodeId} is not a member`);
      }
      requireLeader();
      const applied = await withDeadline(
        driver.proposeConfChange(group, { steps: [{ type: ConfChangeType.RemoveNode, nodeId: request.nodeId }], leaveJoint: false }),
        remainingMs(call.getDeadline()),
        "removing the homeserver",
      );
      return { index: BigInt(applied.index) };
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
