/**
 * epochd.identity.v1.IdentityService: devices publish their identity records
 * at their own homeserver, which checks its name policy (the rules of
 * src/identity/publish-rules.ts against its applied index), adds its
 * sponsorship signature and proposes them; apply checks everything again.
 * Lookups are answered from the local index after a read-index round.
 */
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { ClientAuthenticator } from "../auth/client-authenticator.ts";
import { DeviceIdentityBodySchema, IdentityService, type DeviceIdentityRecord } from "../gen/epochd/identity/v1/identity_pb.ts";
import { isRejection } from "../identity/device-record.ts";
import { encodeIdentityCommand } from "../identity/identity-command.ts";
import type { IdentityResult } from "../identity/identity-state.ts";
import { checkPublish } from "../identity/publish-rules.ts";
import { sponsorRecord } from "../identity/sponsor.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { ClusterStateMachine } from "../node/cluster-state-machine.ts";
import { Role, type GroupId } from "../raft/types.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";
import { refusalError } from "./identity-status.ts";
import { RateLimiter } from "./rate-limiter.ts";

/** Publishes one user may make: a burst, then a steady rate. */
export const identityPublishLimit = { burst: 10, perSecond: 1 };
/** Largest page of ListSponsoredDevices. */
export const sponsoredPageMax = 1000;

/** What the identity service needs from the homeserver. */
export interface IdentityContext {
  readonly homeserverId: string;
  readonly driver: RaftDriver;
  readonly groupId: GroupId;
  readonly machine: ClusterStateMachine;
  /** Signs with this homeserver's directory key (its sponsorship). */
  sign(message: Uint8Array): Uint8Array;
  readonly authenticator: ClientAuthenticator;
}

/** How often a follower looks whether the records it forwarded were applied. */
const appliedPollMs = 20;
/**
 * How often a follower forwards the proposal again while its records have not appeared: a forwarded
 * proposal is fire-and-forget (lost when the leader changes or the peer stream is not up yet, e.g.
 * just after the cluster started), and waiting out the caller's whole deadline for it helped nobody.
 * A duplicate is harmless: apply refuses the second copy (not a higher sequence) and the first counts.
 */
const reforwardEveryMs = 1_000;

/**
 * Proposes the sponsored records. The leader learns the apply result; a follower (the device must publish
 * at its own homeserver, which may not lead) forwards the proposal and watches its own index until the
 * very records appear there, or a different newer record of one of them (lost to a concurrent update),
 * forwarding the proposal again every reforwardEveryMs.
 */
async function proposeAndWait(context: IdentityContext, data: Uint8Array, records: readonly DeviceIdentityRecord[], waitMs: number): Promise<void> {
  const { driver, groupId } = context;
  if (driver.status(groupId).role === Role.Leader) {
    const applied = await withDeadline(driver.propose(groupId, data), waitMs, "waiting for the records to commit");
    const result = applied.result as IdentityResult;
    if (!result.ok) throw refusalError(result);
    return;
  }
  if (!driver.proposeAnywhere(groupId, data)) throw new ApiError(grpc.status.UNAVAILABLE, "no leader known, retry");
  const index = context.machine.identity.index;
  const wanted = records.map((r) => ({ body: Buffer.from(r.body), deviceId: checkRecordDeviceId(r) }));
  const until = Date.now() + waitMs;
  let forwardedAtMs = Date.now();
  while (Date.now() < until) {
    if (Date.now() - forwardedAtMs >= reforwardEveryMs) {
      forwardedAtMs = Date.now();
      driver.proposeAnywhere(groupId, data);
    }
    const stored = wanted.map((w) => index.record(w.deviceId)?.record.body);
    if (stored.every((body, i) => body !== undefined && wanted[i]!.body.equals(body))) return;
    if (stored.some((body, i) => body !== undefined && !wanted[i]!.body.equals(body) && isNewer(index.record(wanted[i]!.deviceId)!.body.sequence, wanted[i]!.body))) {
      throw new ApiError(grpc.status.FAILED_PRECONDITION, "a concurrent update of these devices won");
    }
    await new Promise((resolve) => setTimeout(resolve, appliedPollMs));
  }
  throw new ApiError(grpc.status.DEADLINE_EXCEEDED, "the records were not applied in time (refused at apply, or still in flight): read them back with GetDevice");
}

function checkRecordDeviceId(record: DeviceIdentityRecord): string {
  return fromBinary(DeviceIdentityBodySchema, record.body).deviceId;
}

function isNewer(storedSequence: bigint, wantedBody: Buffer): boolean {
  return storedSequence >= fromBinary(DeviceIdentityBodySchema, wantedBody).sequence;
}

/** Registers IdentityService on `server` (the client server). */
export function addIdentityService(server: grpc.Server, context: IdentityContext): void {
  const { driver, groupId, machine } = context;
  const index = machine.identity.index;
  const limiter = new RateLimiter(identityPublishLimit);
  const readable = async (call: grpc.ServerUnaryCall<Buffer, Buffer>) => {
    await context.authenticator.authenticate(call.metadata);
    await withDeadline(driver.readIndex(groupId), remainingMs(call.getDeadline()), "confirming the read index");
  };
  server.addService(serviceDefinition(IdentityService), {
    publishIdentity: unaryHandler(IdentityService.method.publishIdentity, async (request, call) => {
      const checked = checkPublish(request.records, { clusterId: machine.clusterId, signingKeyOf: () => undefined, requireSponsor: false }, index);
      if (isRejection(checked)) throw refusalError(checked);
      const foreign = checked.find((d) => d.body.homeserverId !== context.homeserverId);
      if (foreign !== undefined) throw new ApiError(grpc.status.FAILED_PRECONDITION, `${foreign.body.deviceId} is sponsored by ${foreign.body.homeserverId}: publish it there`);
      if (limiter.take(checked[0]!.body.userName) > 0) throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, "too many identity updates for this user, retry later");
      const records = checked.map((d) => sponsorRecord(d.record, context.sign));
      const data = encodeIdentityCommand({ command: { case: "publish", value: { records } } });
      await proposeAndWait(context, data, records, remainingMs(call.getDeadline()));
      return { records };
    }),
    getDevice: unaryHandler(IdentityService.method.getDevice, async (request, call) => {
      await readable(call);
      const deviceId = request.deviceId !== "" ? request.deviceId : index.deviceIdByKey(request.devicePublicKey);
      const found = deviceId === undefined ? undefined : index.record(deviceId);
      if (found === undefined) throw new ApiError(grpc.status.NOT_FOUND, "no such device");
      return { record: found.record, current: index.isCurrent(found.body.deviceId) };
    }),
    listUserDevices: unaryHandler(IdentityService.method.listUserDevices, async (request, call) => {
      await readable(call);
      return { records: index.userDevices(request.userName).map((d) => d.record) };
    }),
    listSponsoredDevices: unaryHandler(IdentityService.method.listSponsoredDevices, async (request, call) => {
      await readable(call);
      const limit = request.limit === 0 || request.limit > sponsoredPageMax ? sponsoredPageMax : request.limit;
      return { records: index.sponsoredBy(request.homeserverId, request.afterDeviceId, limit).map((d) => d.record) };
    }),
  } satisfies grpc.UntypedServiceImplementation);
}
