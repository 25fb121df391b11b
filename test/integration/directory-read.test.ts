/**
 * ListHomeservers is a linearizable read of the cluster directory: a client
 * that finds a certificate's signer missing from its copy asks again, and the
 * answer must hold every key the cluster group committed before the call,
 * whichever homeserver answers. A homeserver cut off from the cluster group's
 * quorum therefore does not answer from its own applied state.
 */
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unaryClient } from "../../src/api/grpc-service.ts";
import { ChannelClient } from "../../src/client/channel-client.ts";
import { Device } from "../../src/client/device.ts";
import { ChannelService } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ProcessCluster } from "./process-cluster.ts";

describe("ListHomeservers on a real 3-homeserver cluster", () => {
  let cluster: ProcessCluster;
  const directoryAt = (id: string) => unaryClient(ChannelService, cluster.get(id).clientAddress, cluster.clientCredentials(), { "grpc.ssl_target_name_override": "localhost" });

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3);
    cluster.startAll();
    await cluster.waitForLeader();
  }, 60_000);

  afterAll(async () => {
    await cluster?.close();
  });

  it("answers every homeserver's key from any homeserver, and nothing from one cut off from the quorum", async () => {
    const ids = ["hs1", "hs2", "hs3"];
    // Every homeserver registers its signing key through the cluster group at start.
    const deadline = Date.now() + 15_000;
    for (const id of ids) {
      const client = directoryAt(id);
      for (;;) {
        const directory = await client.listHomeservers({}, { deadlineMs: 5_000 });
        const keyed = directory.homeservers.filter((h) => h.signingKey.byteLength === 32).map((h) => h.homeserverId);
        if (keyed.length === 3 || Date.now() > deadline) {
          expect(keyed.sort()).toEqual(ids);
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      client.close();
    }

    // hs3 alone: with hs1 and hs2 paused, no quorum confirms a read index, so it must not answer.
    const lone = directoryAt("hs3");
    cluster.setPaused("hs1", true);
    cluster.setPaused("hs2", true);
    try {
      const error = await lone.listHomeservers({}, { deadlineMs: 1_500 }).then(
        () => undefined,
        (e: unknown) => e as grpc.ServiceError,
      );
      expect(error, "a homeserver cut off from the quorum answered the directory from its applied state").toBeDefined();
      expect([grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE]).toContain(error!.code);
    } finally {
      cluster.setPaused("hs1", false);
      cluster.setPaused("hs2", false);
    }
    // Back in touch with the quorum, it answers again.
    const healed = Date.now() + 20_000;
    for (;;) {
      const answer = await lone.listHomeservers({}, { deadlineMs: 2_000 }).catch(() => undefined);
      if (answer !== undefined) {
        expect(answer.homeservers.map((h) => h.homeserverId).sort()).toEqual(ids);
        break;
      }
      expect(Date.now(), "hs3 did not answer the directory after the others resumed").toBeLessThan(healed);
      await new Promise((r) => setTimeout(r, 100));
    }
    lone.close();
  }, 60_000);

  it("the SDK asks another homeserver when its own does not answer a directory read in time", async () => {
    const device = await Device.create("dr@hs3");
    const client = new ChannelClient({ device, address: cluster.get("hs3").clientAddress, tls: { caPem: cluster.caPem() }, tlsServerName: "localhost", callDeadlineMs: 700, backoffStartMs: 20, attemptsMax: 8 });
    try {
      await client.directory(); // learns the other homeservers' addresses
      cluster.setPaused("hs3", true);
      try {
        const directory = await client.directory(true);
        expect([...directory.keys.keys()].sort()).toEqual(["hs1", "hs2", "hs3"]);
        expect(client.stats.addressSwitches).toBeGreaterThanOrEqual(1);
      } finally {
        cluster.setPaused("hs3", false);
      }
    } finally {
      client.close();
    }
  }, 60_000);
});
