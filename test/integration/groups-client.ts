/**
 * A client of TestGroupService (the test-only many-groups API on the peer
 * port) for a {@link ProcessCluster}: creates the same test groups on every
 * homeserver, finds leaders, and writes to a group through its leader,
 * following "not leader" hints. Used by the many-groups test and benchmark.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { unaryClient, type UnaryClient } from "../../src/api/grpc-service.ts";
import { TestGroupService } from "../../src/gen/epochd/admin/v1/test_groups_pb.ts";
import { testGroupId } from "../../src/multiraft/test-groups.ts";
import { clientChannelCredentials } from "../../src/transport/credentials.ts";
import type { ProcessCluster } from "./process-cluster.ts";

export type TestGroupClient = UnaryClient<(typeof TestGroupService)["method"]>;

const encoder = new TextEncoder();

/** Clients of every homeserver's TestGroupService, and the leaders last seen. */
export class GroupsClient {
  private readonly clients = new Map<string, TestGroupClient>();
  /** Group id -> homeserver believed to lead it. */
  readonly leaders = new Map<string, string>();

  constructor(private readonly cluster: ProcessCluster) {}

  /** The client of homeserver `id` (operator certificate of the cluster). */
  client(id: string): TestGroupClient {
    let client = this.clients.get(id);
    if (client === undefined) {
      const certs = join(this.cluster.root, "certs");
      const credentials = clientChannelCredentials({
        kind: "tls", ca: readFileSync(join(certs, "ca.crt")), key: readFileSync(join(certs, "operator.key")), cert: readFileSync(join(certs, "operator.crt")),
      });
      client = unaryClient(TestGroupService, this.cluster.get(id).peerAddress, credentials, { "grpc.ssl_target_name_override": "localhost", "grpc.max_receive_message_length": 64 << 20 });
      this.clients.set(id, client);
    }
    return client;
  }

  /** Creates test groups `first .. first + count - 1` on every homeserver of `voters`; resolves with the time it took. */
  async create(first: number, count: number, voters: string[], deadlineMs = 600_000): Promise<number> {
    const start = performance.now();
    await Promise.all(voters.map((id) => this.client(id).createTestGroups({ first, count, voters }, { deadlineMs })));
    return performance.now() - start;
  }

  /** Asks `among` which groups they lead; refreshes {@link leaders}. Returns per homeserver the awake and total group counts. */
  async refreshLeaders(among: string[]): Promise<Map<string, { awake: number; groups: number; leading: number }>> {
    const counts = new Map<string, { awake: number; groups: number; leading: number }>();
    await Promise.all(
      among.map(async (id) => {
        const status = await this.client(id).testGroupsStatus({}, { deadlineMs: 30_000 });
        for (const groupId of status.leading) this.leaders.set(groupId, id);
        counts.set(id, { awake: status.awakeGroups, groups: status.allGroups, leading: status.leading.length });
      }),
    );
    return counts;
  }

  /** One write attempt to group number `n`; returns whether it was acknowledged, updating the leader guess. */
  async put(n: number, key: string, value: string, among: string[]): Promise<boolean> {
    const groupId = testGroupId(n);
    const target = this.leaders.get(groupId) ?? among[n % among.length]!;
    try {
      await this.client(target).putTestGroup({ groupId, key: encoder.encode(key), value: encoder.encode(value) }, { deadlineMs: 5000 });
      this.leaders.set(groupId, target);
      return true;
    } catch (error) {
      const status = error as grpc.ServiceError;
      const hint = status.metadata?.get("epochd-leader-id")[0];
      if (status.code === grpc.status.FAILED_PRECONDITION && typeof hint === "string" && among.includes(hint)) this.leaders.set(groupId, hint);
      else this.leaders.set(groupId, among[(among.indexOf(target) + 1) % among.length]!);
      return false;
    }
  }

  /** Writes until acknowledged or `timeoutMs` passes; returns the milliseconds it took. */
  async putUntilAcked(n: number, key: string, value: string, among: string[], timeoutMs = 30_000): Promise<number> {
    const start = Date.now();
    for (let attempt = 0; Date.now() - start < timeoutMs && attempt < 10_000; attempt++) {
      if (await this.put(n, key, value, among)) return Date.now() - start;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`write to ${testGroupId(n)} not acknowledged within ${timeoutMs} ms`);
  }

  /** The value of `key` in group `n` as applied on homeserver `id`. */
  async get(id: string, n: number, key: string): Promise<string | undefined> {
    const response = await this.client(id).getTestGroup({ groupId: testGroupId(n), key: encoder.encode(key) }, { deadlineMs: 5000 });
    return response.found ? new TextDecoder().decode(response.value) : undefined;
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
