/**
 * epochd.admin.v1.TestGroupService: test and benchmark only. Hosts many
 * plain Raft groups (src/multiraft/test-groups.ts) so the multi-group runtime
 * (quiescence, coalesced heartbeats, one RocksDB, one stream per peer) can be
 * tested and measured on real processes. Served on the peer port behind
 * mutual TLS, like AdminService; never on the client port.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { TestGroupService } from "../gen/epochd/admin/v1/test_groups_pb.ts";
import { encodePut, keyBytesMax, valueBytesMax } from "../kv/kv-command.ts";
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import { TestGroups, testGroupsMax } from "../multiraft/test-groups.ts";
import type { NodeId } from "../raft/types.ts";
import type { StorageEngine } from "../storage/storage-engine.ts";
import { authenticatedIdentity, type CallWithAuthContext } from "../transport/credentials.ts";
import { isValidHomeserverId } from "../transport/tls.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";

/** What the test group service needs from the homeserver. */
export interface TestGroupContext {
  readonly driver: RaftDriver;
  readonly groups: TestGroups;
  /** Plaintext mode: no certificate to check. */
  readonly insecure: boolean;
}

/** Most voters of one test group. */
const votersMax = 9;

function checkVoters(voters: readonly NodeId[]): void {
  if (voters.length === 0 || voters.length > votersMax || new Set(voters).size !== voters.length || !voters.every(isValidHomeserverId)) {
    throw new ApiError(grpc.status.INVALID_ARGUMENT, `voters must be 1 to ${votersMax} distinct homeserver ids`);
  }
}

function checkKey(key: Uint8Array): void {
  if (key.byteLength === 0 || key.byteLength > keyBytesMax) throw new ApiError(grpc.status.INVALID_ARGUMENT, `key must be 1 to ${keyBytesMax} bytes`);
}

/** Registers TestGroupService on `server` (the peer server, behind mutual TLS). */
export function addTestGroupService(server: grpc.Server, context: TestGroupContext): void {
  const { driver, groups } = context;
  const authorize = (call: CallWithAuthContext) => {
    if (context.insecure) return;
    if (authenticatedIdentity(call) === null) throw new ApiError(grpc.status.UNAUTHENTICATED, "an operator certificate of this cluster is required");
  };
  const requireGroup = (groupId: string) => {
    if (!groups.has(groupId)) throw new ApiError(grpc.status.NOT_FOUND, `no test group ${JSON.stringify(groupId.slice(0, 64))} here`);
  };

  server.addService(serviceDefinition(TestGroupService), {
    createTestGroups: unaryHandler(TestGroupService.method.createTestGroups, async (request, call) => {
      authorize(call);
      checkVoters(request.voters);
      if (request.count === 0 || request.count > testGroupsMax || request.first + request.count > 2 ** 31) {
        throw new ApiError(grpc.status.INVALID_ARGUMENT, `count must be 1 to ${testGroupsMax} and first + count below 2^31`);
      }
      try {
        return await groups.create(request.first, request.count, request.voters);
      } catch (error) {
        if (error instanceof RangeError) throw new ApiError(grpc.status.FAILED_PRECONDITION, error.message);
        throw error;
      }
    }),
    putTestGroup: unaryHandler(TestGroupService.method.putTestGroup, async (request, call) => {
      authorize(call);
      requireGroup(request.groupId);
      checkKey(request.key);
      if (request.value.byteLength > valueBytesMax) throw new ApiError(grpc.status.INVALID_ARGUMENT, `value must be at most ${valueBytesMax} bytes`);
      const applied = await withDeadline(groups.put(request.groupId, encodePut(request.key, request.value)), remainingMs(call.getDeadline()), "waiting for the write to commit");
      return { index: BigInt(applied.index) };
    }),
    getTestGroup: unaryHandler(TestGroupService.method.getTestGroup, async (request, call) => {
      authorize(call);
      requireGroup(request.groupId);
      checkKey(request.key);
      const value = await groups.get(request.groupId, request.key);
      return { found: value !== undefined, value: value ?? new Uint8Array(0) };
    }),
    testGroupsStatus: unaryHandler(TestGroupService.method.testGroupsStatus, async (_request, call) => {
      authorize(call);
      const counts = driver.counts();
      return { testGroups: groups.count(), allGroups: counts.groups, awakeGroups: counts.awake, leading: groups.leading() };
    }),
  } satisfies grpc.UntypedServiceImplementation);
}

/** What {@link hostTestGroups} needs. */
export interface HostTestGroupsOptions {
  readonly selfId: NodeId;
  readonly engine: StorageEngine;
  readonly driver: RaftDriver;
  readonly logger: Logger;
  readonly insecure: boolean;
}

/**
 * Reopens the test groups stored here (after a restart) and serves
 * TestGroupService on the peer server: the homeserver's one line of wiring.
 */
export async function hostTestGroups(server: grpc.Server, options: HostTestGroupsOptions): Promise<TestGroups> {
  const groups = new TestGroups(options.selfId, options.engine, options.driver, options.logger.child({ component: "test-groups" }));
  await groups.reopen();
  addTestGroupService(server, { driver: options.driver, groups, insecure: options.insecure });
  return groups;
}
