/**
 * The exchange turns complete certificates into log entries. Each must be proposed once when it
 * completes, by the group's leader, and again only if the log has not recorded it several seconds
 * later: proposing every pending certificate on every turn of the event loop, or again after one
 * second, or by every homeserver that completed it, multiplied the log's work under load.
 * Real Ed25519 keys and a real collector; the peer stream and the log are the exchange's edges.
 */
import { generateKeyPairSync, sign } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it, vi } from "vitest";
import { channelCommandOp } from "../../src/channel/channel-command.ts";
import { entryBody } from "../../src/multiraft/entry-payload.ts";
import { ChannelCommandSchema } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";
import { CertificateCollector } from "../../src/node/certificate-collector.ts";
import { CertificateExchange, followerReproposeMs, leaderReproposeMs, resendIntervalMs, signatureBatchTopic } from "../../src/node/certificate-exchange.ts";
import type { ChannelResult } from "../../src/channel/channel-state-machine.ts";

const clusterId = "test-cluster";
const ids = ["hs1", "hs2", "hs3"];
const keys = new Map(ids.map((id) => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url"));
  return [id, { raw, sign: (m: Uint8Array) => new Uint8Array(sign(null, m, privateKey)) }] as const;
}));

/** hs1's exchange wired to a collector, with hs2's and hs3's exchanges feeding it their batches. */
function cluster() {
  const proposed: Array<{ channelId: string; epochs: bigint[] }> = [];
  /** What hs2 and hs3 forwarded to the leader. */
  const forwarded: string[] = [];
  const exchanges = new Map<string, CertificateExchange>();
  for (const id of ids) {
    let exchange: CertificateExchange | undefined;
    const collector = new CertificateCollector(clusterId, (signer) => keys.get(signer)?.raw, (c) => exchange!.onComplete(c));
    exchange = new CertificateExchange({
      selfId: id,
      key: { publicKeyRaw: keys.get(id)!.raw, sign: keys.get(id)!.sign },
      collector,
      sendNotice: (to, topic, payload) => {
        expect(topic).toBe(signatureBatchTopic);
        exchanges.get(to)!.onNotice(id, payload);
      },
      propose: (channelId, data) => {
        if (id !== "hs1") {
          forwarded.push(`${id}/${channelId}`);
          return true;
        }
        const command = fromBinary(ChannelCommandSchema, entryBody(data, channelCommandOp)!);
        if (command.command.case !== "signatures") throw new Error("not a signatures entry");
        proposed.push({ channelId, epochs: command.command.value.items.map((item) => item.epoch) });
        return true;
      },
      isLeader: () => id === "hs1",
    });
    exchanges.set(id, exchange);
  }
  return { proposed, forwarded, exchanges };
}

function accepted(channelId: string, epoch: bigint): Extract<ChannelResult, { kind: "commit-accepted" }> {
  return { ok: true, kind: "commit-accepted", channelId, epoch, commitHash: new Uint8Array(32).fill(Number(epoch)), voters: ids } as Extract<ChannelResult, { kind: "commit-accepted" }>;
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

afterEach(() => {
  vi.useRealTimers();
});

describe("CertificateExchange", () => {
  it("proposes each complete certificate once, however many turns pass, and again only after the repropose interval", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    const { proposed, forwarded, exchanges } = cluster();
    for (const exchange of exchanges.values()) exchange.start();
    for (let epoch = 1n; epoch <= 3n; epoch++) {
      for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted(`ch${epoch}`, epoch), Number(epoch));
      for (let i = 0; i < 5; i++) await turn();
    }
    // More commits completing elsewhere keep the exchange busy: none of the first three comes back.
    for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted("other", 9n), 9);
    for (let i = 0; i < 5; i++) await turn();
    expect(proposed.map((p) => p.channelId).sort()).toEqual(["ch1", "ch2", "ch3", "other"]);
    // Not recorded yet a few seconds later: the entries are still on their way through a loaded log.
    vi.advanceTimersByTime(leaderReproposeMs - resendIntervalMs);
    expect(proposed).toHaveLength(4);
    expect(forwarded).toEqual([]);
    // Not recorded the repropose interval later: proposed once more, each, by the leader only.
    vi.advanceTimersByTime(2 * resendIntervalMs);
    expect(proposed.map((p) => p.channelId).sort()).toEqual(["ch1", "ch1", "ch2", "ch2", "ch3", "ch3", "other", "other"]);
    expect(forwarded).toEqual([]);
    // Much later, the others forward theirs too: for a leader that lost them.
    vi.advanceTimersByTime(followerReproposeMs - leaderReproposeMs);
    expect(forwarded.filter((f) => f.startsWith("hs2/")).sort()).toEqual(["hs2/ch1", "hs2/ch2", "hs2/ch3", "hs2/other"]);
    // Recorded by the log: never again.
    for (const [channelId, epoch] of [["ch1", 1n], ["ch2", 2n], ["ch3", 3n], ["other", 9n]] as const) {
      exchanges.get("hs1")!.onChannelResult({ ok: true, kind: "signatures", certified: [{ channelId, epoch }] });
    }
    const before = proposed.length;
    vi.advanceTimersByTime(3 * followerReproposeMs);
    expect(proposed).toHaveLength(before);
    for (const exchange of exchanges.values()) exchange.stop();
  });
});
