/**
 * epochd.admin.v1.JoinService: a new homeserver redeems an invite token.
 * Served on the client port (server TLS, no client certificate: the joiner
 * has none yet). Nothing here trusts the caller: GetClusterInfo returns only
 * public facts, and Join changes nothing unless the token's secret matches
 * an unused, unexpired invite of the replicated directory. Cheap checks come
 * first (no openssl run for an unknown invite or a wrong secret), and few
 * joins run at once.
 */
import { createHash } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { JoinService, type JoinRequest } from "../gen/epochd/admin/v1/join_pb.ts";
import { isValidHomeserverRecord } from "../node/directory-command.ts";
import { redeemInvite, type InviteContext } from "../node/directory-invites.ts";
import { checkRedeem } from "../node/directory-membership.ts";
import { inviteSecretBytes, inviteSecretHash, isValidInviteId } from "../node/directory-token.ts";
import { isValidHomeserverId, publicKeyHash } from "../transport/tls.ts";
import { membershipStatus } from "./admin-service.ts";
import { remainingMs } from "./deadline.ts";
import { ApiError } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";

/** Joins handled at once; more get RESOURCE_EXHAUSTED. */
export const joinsInFlightMax = 4;
/** Largest certificate signing request accepted. */
export const certificateRequestBytesMax = 8192;

/** What the join service needs from the homeserver. */
export interface JoinContext {
  readonly invites: InviteContext;
  /** PEM of the cluster CA; empty without TLS. */
  readonly caCertificatePem: string;
  /** A linearizable read point of the directory group (so a just-minted invite is seen). */
  readIndex(): Promise<unknown>;
}

function validate(request: JoinRequest, insecure: boolean): void {
  const record = { id: request.homeserverId, peerAddress: request.peerAddress, clientAddress: request.clientAddress, signingKey: Buffer.from(request.signingKey).toString("base64") };
  if (!isValidInviteId(request.inviteId) || request.secret.byteLength !== inviteSecretBytes) throw new ApiError(grpc.status.INVALID_ARGUMENT, "invite_id and secret must come from an invite token");
  if (!isValidHomeserverId(request.homeserverId)) throw new ApiError(grpc.status.INVALID_ARGUMENT, "homeserver_id must be a DNS label");
  if (request.signingKey.byteLength !== 32 || !isValidHomeserverRecord(record)) throw new ApiError(grpc.status.INVALID_ARGUMENT, "peer_address and client_address must be host:port, signing_key 32 bytes");
  if (!insecure && (request.certificateRequest === "" || request.certificateRequest.length > certificateRequestBytesMax)) {
    throw new ApiError(grpc.status.INVALID_ARGUMENT, `certificate_request must be a PEM request of at most ${certificateRequestBytesMax} bytes`);
  }
}

/** The hash binding the invite to the joiner's key: its TLS public key, or its signing key without TLS. */
async function joinerKeyHash(request: JoinRequest, insecure: boolean): Promise<string> {
  if (insecure) return createHash("sha256").update(request.signingKey).digest("hex");
  try {
    return await publicKeyHash(request.certificateRequest);
  } catch {
    throw new ApiError(grpc.status.INVALID_ARGUMENT, "certificate_request is not a valid, self-signed PEM request");
  }
}

/** Registers JoinService on `server` (the client server). */
export function addJoinService(server: grpc.Server, context: JoinContext): void {
  const { invites } = context;
  let inFlight = 0;
  server.addService(serviceDefinition(JoinService), {
    getClusterInfo: unaryHandler(JoinService.method.getClusterInfo, async () => ({ clusterId: invites.clusterId, caCertificate: context.caCertificatePem })),
    join: unaryHandler(JoinService.method.join, async (request, call) => {
      validate(request, invites.insecure);
      if (inFlight >= joinsInFlightMax) throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, "too many joins at once; try again shortly");
      inFlight++;
      try {
        await context.readIndex();
        const secretHash = inviteSecretHash(request.secret);
        // Unknown invite or wrong secret: refused before any costly work.
        const early = checkRedeem(invites.membership.invite(request.inviteId), { secretHash, homeserverId: request.homeserverId, keyHash: "", nowMs: 0 });
        if (early !== undefined && !early.ok && early.code === "unauthenticated") throw new ApiError(grpc.status.UNAUTHENTICATED, early.reason);
        const keyHash = await joinerKeyHash(request, invites.insecure);
        const redeemed = await redeemInvite(
          invites,
          {
            inviteId: request.inviteId,
            secret: request.secret,
            homeserverId: request.homeserverId,
            peerAddress: request.peerAddress,
            clientAddress: request.clientAddress,
            signingKey: Buffer.from(request.signingKey).toString("base64"),
            csrPem: request.certificateRequest,
            keyHash,
          },
          remainingMs(call.getDeadline()),
        ).catch((error: unknown) => {
          throw membershipStatus(error);
        });
        return {
          clusterId: invites.clusterId,
          certificate: redeemed.certificatePem,
          caCertificate: context.caCertificatePem,
          members: redeemed.members.map((m) => ({ nodeId: m.id, peerAddress: m.peerAddress, clientAddress: m.clientAddress })),
        };
      } finally {
        inFlight--;
      }
    }),
  } satisfies grpc.UntypedServiceImplementation);
}
