/**
 * The exchange turns complete certificates into log entries. Each must be proposed once, by the
 * group's leader, inside the entry of the channel's next command or after the record delay, and again only
 * if the log has not recorded it several seconds later: proposing every pending certificate on
 * every turn of the event loop, or again after one second, or by every homeserver that completed
 * it, multiplied the log's work under load, and so did an entry of its own for every certificate.
 * Real Ed25519 keys and a real collector; the peer stream and the log are the exchange's edges.
 */
import { generateKeyPairSync, sign } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it, vi } from "vitest";
import { channelCommandOp } from "../../src/channel/channel-command.ts";
import { entryBody } from "../../src/multiraft/entry-payload.ts";
import { ChannelCommandSchema, type CommitSignatures } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";
import { CertificateCollector } from "../../src/node/certificate-collector.ts";
import { CertificateExchange, followerReproposeMs, leaderReproposeMs, recordDelayMs, resendIntervalMs, signatureBatchTopic } from "../../src/node/certificate-exchange.ts";
import type { ChannelResult } from "../../src/channel/channel-state-machine.ts";

const clusterId = "test-cluster";
const ids = ["hs1", "hs2", "hs3"];
const keys = new Map(ids.map((id) => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url"));
  return [id, { raw, sign: (m: Uint8Array) => new Uint8Array(sign(null, m, privateKey)) }] as const;
}));

/** Each recorded signature goes to the log with the key it was checked with (apply verifies against it). */
function expectSignerKeysLogged(items: readonly CommitSignatures[]): void {
  for (const item of items) {
    const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
    expect(item.signerKeys.map(hex)).toEqual(item.signatures.map((s) => hex(keys.get(s.homeserverId)!.raw)));
  }
}

/** hs1's exchange wired to a collector, with hs2's and hs3's exchanges feeding it their batches. */
function cluster(
  recordAtOnce?: (channelId: string) => boolean,
  leaderOf?: (self: string, channelId: string) => string | undefined,
  dropped: (from: string, to: string) => boolean = () => false,
) {
  const proposed: Array<{ channelId: string; epochs: bigint[] }> = [];
  /** What hs2 and hs3 forwarded to the leader. */
  const forwarded: string[] = [];
  const exchanges = new Map<string, CertificateExchange>();
  const notices = { count: 0 };
  for (const id of ids) {
    let exchange: CertificateExchange | undefined;
    const collector = new CertificateCollector(clusterId, (signer) => keys.get(signer)?.raw, (c) => exchange!.onComplete(c));
    exchange = new CertificateExchange({
      selfId: id,
      key: { publicKeyRaw: keys.get(id)!.raw, sign: keys.get(id)!.sign },
      collector,
      sendNotice: (to, topic, payload) => {
        expect(topic).toBe(signatureBatchTopic);
        notices.count += 1;
        if (!dropped(id, to)) exchanges.get(to)!.onNotice(id, payload);
      },
      propose: (channelId, data) => {
        if (id !== "hs1") {
          forwarded.push(`${id}/${channelId}`);
          return true;
        }
        const command = fromBinary(ChannelCommandSchema, entryBody(data, channelCommandOp)!);
        if (command.command.case !== "signatures") throw new Error("not a signatures entry");
        expectSignerKeysLogged(command.command.value.items);
        proposed.push({ channelId, epochs: command.command.value.items.map((item) => item.epoch) });
        return true;
      },
      isLeader: () => id === "hs1",
      ...(leaderOf === undefined ? {} : { leaderOf: (channelId: string) => leaderOf(id, channelId) }),
      ...(recordAtOnce === undefined ? {} : { recordAtOnce: (c: { channelId: string }) => recordAtOnce(c.channelId) }),
    });
    exchanges.set(id, exchange);
  }
  /**
   * The leader appending a command to `channelId`'s log: what the exchange adds to the entry, as
   * recorded certificates (only the `certificates` field, so that it can follow any command's encoding).
   */
  const alongside = (channelId: string) => {
    const extra = fromBinary(ChannelCommandSchema, exchanges.get("hs1")!.takeAlongside(channelId));
    expect(extra.command.case).toBeUndefined();
    expect(extra.requestId).toHaveLength(0);
    expectSignerKeysLogged(extra.certificates);
    if (extra.certificates.length > 0) proposed.push({ channelId, epochs: extra.certificates.map((item) => item.epoch) });
  };
  return { proposed, forwarded, exchanges, notices, alongside };
}

function accepted(channelId: string, epoch: bigint): Extract<ChannelResult, { kind: "commit-accepted" }> {
  return { ok: true, kind: "commit-accepted", channelId, epoch, commitHash: new Uint8Array(32).fill(Number(epoch)), voters: ids } as Extract<ChannelResult, { kind: "commit-accepted" }>;
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

afterEach(() => {
  vi.useRealTimers();
});

describe("CertificateExchange", () => {
  it("records each complete certificate once: with its channel's next command, else on its own after the record delay; again only after the repropose interval", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    const { proposed, forwarded, exchanges, notices, alongside } = cluster();
    for (const exchange of exchanges.values()) exchange.start();
    for (let epoch = 1n; epoch <= 3n; epoch++) {
      for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted(`ch${epoch}`, epoch), Number(epoch));
      for (let i = 0; i < 5; i++) await turn();
    }
    for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted("other", 9n), 9);
    for (let i = 0; i < 5; i++) await turn();
    // Complete everywhere, and nothing proposed yet: each waits for its channel's next command.
    for (const [channelId, epoch] of [["ch1", 1n], ["ch2", 2n], ["ch3", 3n], ["other", 9n]] as const) {
      for (const id of ids) expect(exchanges.get(id)!.pendingCount(), id).toBe(4);
      expect(proposed.some((p) => p.channelId === channelId && p.epochs.includes(epoch))).toBe(false);
    }
    expect(proposed).toEqual([]);
    // A command for ch2 on the leader takes ch2's certificate along, in its entry, once.
    alongside("ch2");
    alongside("ch2");
    expect(proposed).toEqual([{ channelId: "ch2", epochs: [2n] }]);
    // The others wait out the record delay, then go on their own; complete batches are not resent meanwhile.
    const noticesBefore = notices.count;
    vi.advanceTimersByTime(recordDelayMs - resendIntervalMs);
    expect(proposed).toHaveLength(1);
    expect(notices.count).toBe(noticesBefore);
    vi.advanceTimersByTime(resendIntervalMs);
    expect(proposed.map((p) => p.channelId).sort()).toEqual(["ch1", "ch2", "ch3", "other"]);
    // Not recorded the repropose interval after each was proposed: proposed once more, by the leader only.
    vi.advanceTimersByTime(leaderReproposeMs - recordDelayMs - resendIntervalMs);
    expect(proposed).toHaveLength(4);
    vi.advanceTimersByTime(resendIntervalMs);
    expect(proposed.map((p) => p.channelId).sort()).toEqual(["ch1", "ch2", "ch2", "ch3", "other"]);
    vi.advanceTimersByTime(recordDelayMs);
    expect(proposed.map((p) => p.channelId).sort()).toEqual(["ch1", "ch1", "ch2", "ch2", "ch3", "ch3", "other", "other"]);
    expect(forwarded).toEqual([]);
    // Much later, the others forward theirs too: for a leader that lost them.
    vi.advanceTimersByTime(followerReproposeMs - leaderReproposeMs - recordDelayMs);
    expect(forwarded.filter((f) => f.startsWith("hs2/")).sort()).toEqual(["hs2/ch1", "hs2/ch2", "hs2/ch3", "hs2/other"]);
    // Recorded by the log: never again, not even along with a command.
    for (const [channelId, epoch] of [["ch1", 1n], ["ch2", 2n], ["ch3", 3n], ["other", 9n]] as const) {
      for (const exchange of exchanges.values()) exchange.onChannelResult({ ok: true, kind: "signatures", certified: [{ channelId, epoch }] });
    }
    for (const exchange of exchanges.values()) expect(exchange.pendingCount()).toBe(0);
    const before = proposed.length;
    alongside("ch1");
    vi.advanceTimersByTime(3 * followerReproposeMs);
    expect(proposed).toHaveLength(before);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("records at once a certificate a homeserver that did not vote on it waits for", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    const { proposed, exchanges } = cluster((channelId) => channelId === "joined");
    for (const exchange of exchanges.values()) exchange.start();
    for (const channelId of ["joined", "usual"]) for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted(channelId, 4n), 4);
    for (let i = 0; i < 5; i++) await turn();
    expect(proposed).toEqual([{ channelId: "joined", epochs: [4n] }]);
    vi.advanceTimersByTime(recordDelayMs);
    expect(proposed.map((p) => p.channelId)).toEqual(["joined", "usual"]);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("a follower of a three-voter group sends its batch to the leader alone, and every voter still completes", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    const { exchanges, notices } = cluster(undefined, () => "hs1");
    for (const exchange of exchanges.values()) exchange.start();
    for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted("trio", 5n), 5);
    for (let i = 0; i < 5; i++) await turn();
    // hs1 to hs2 and hs3; hs2 and hs3 to hs1 only.
    expect(notices.count).toBe(4);
    for (const id of ids) expect(exchanges.get(id)!.pendingCount(), id).toBe(1);
    // Complete everywhere: nothing is sent again.
    vi.advanceTimersByTime(5 * resendIntervalMs);
    expect(notices.count).toBe(4);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("followers whose leader never signed complete at the first resend, which goes to every voter", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    const { exchanges, notices } = cluster(undefined, () => "hs1");
    for (const exchange of exchanges.values()) exchange.start();
    // hs1 led, then went away before it applied the commit: hs2 and hs3 send theirs to it alone.
    for (const id of ["hs2", "hs3"]) exchanges.get(id)!.onCommitAccepted(accepted("orphan", 2n), 2);
    for (let i = 0; i < 5; i++) await turn();
    expect(notices.count).toBe(2);
    expect(exchanges.get("hs2")!.pendingCount()).toBe(0);
    expect(exchanges.get("hs3")!.pendingCount()).toBe(0);
    vi.advanceTimersByTime(resendIntervalMs);
    for (const id of ["hs2", "hs3"]) expect(exchanges.get(id)!.pendingCount(), id).toBe(1);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("a follower that lost its leader's batch completes at the first resend: the other follower answers its widened batch", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    // hs1's batch to hs3 is lost (a link reconnecting, say): hs1 and hs2 complete at once, hs3 does not.
    const { exchanges } = cluster(undefined, () => "hs1", (from, to) => from === "hs1" && to === "hs3");
    for (const exchange of exchanges.values()) exchange.start();
    for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted("lossy", 7n), 7);
    for (let i = 0; i < 5; i++) await turn();
    expect(exchanges.get("hs2")!.pendingCount()).toBe(1);
    expect(exchanges.get("hs3")!.pendingCount()).toBe(0);
    // hs3 widens at its first resend; hs2, whose own batch went to hs1 alone, sends it to hs3 on receipt.
    vi.advanceTimersByTime(resendIntervalMs);
    expect(exchanges.get("hs3")!.pendingCount()).toBe(1);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("followers that take different homeservers for the leader all complete: a batch one did not expect is answered", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    // A transfer from hs1 to hs2 under way: hs2 still takes hs1 for the leader, hs1 already takes hs2, hs3 takes hs1.
    const views: Record<string, string> = { hs1: "hs2", hs2: "hs1", hs3: "hs1" };
    const { exchanges } = cluster(undefined, (self) => views[self]);
    for (const exchange of exchanges.values()) exchange.start();
    for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted("crossed", 8n), 8);
    for (let i = 0; i < 5; i++) await turn();
    // hs1 and hs2 sent to each other alone; hs3 sent to hs1, which had not sent to hs3 and answers with its own.
    for (const id of ids) expect(exchanges.get(id)!.pendingCount(), id).toBe(1);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("sends its own batch again every second while the certificate is incomplete here", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "Date"] });
    const { exchanges, notices } = cluster();
    for (const exchange of exchanges.values()) exchange.start();
    // Only hs2 applied the commit: its batch reaches peers that cannot count it yet, and nothing completes.
    exchanges.get("hs2")!.onCommitAccepted(accepted("lonely", 1n), 1);
    for (let i = 0; i < 5; i++) await turn();
    const first = notices.count;
    expect(first).toBe(2);
    vi.advanceTimersByTime(3 * resendIntervalMs);
    expect(notices.count).toBe(first + 3 * 2);
    for (const exchange of exchanges.values()) exchange.stop();
  });

  it("signing at store time: the certificate is complete when the leader applies the commit, and nobody signs it again", async () => {
    const { exchanges, notices } = cluster(undefined, () => "hs1");
    const commit = { channelId: "c1", epoch: 4n, commitHash: new Uint8Array(32).fill(4), logIndex: 7n, voters: ids };
    // Every voter stored the entry in its term right after what it applied, and signed it at once.
    for (const exchange of exchanges.values()) {
      exchange.onCommitStored(commit);
      exchange.signNow();
    }
    const signed = notices.count;
    // Followers send to the leader alone (a quorum with its signature); the leader to both.
    expect(signed).toBe(4);
    // The leader applies it: complete at once, in the same turn, with no batch to wait for.
    exchanges.get("hs1")!.onCommitAccepted(accepted("c1", 4n), 7);
    expect(exchanges.get("hs1")!.pendingCount()).toBe(1);
    for (const id of ["hs2", "hs3"]) exchanges.get(id)!.onCommitAccepted(accepted("c1", 4n), 7);
    for (let i = 0; i < 5; i++) await turn();
    for (const id of ids) expect(exchanges.get(id)!.pendingCount(), id).toBe(1);
    expect(notices.count).toBe(signed);
  });

  it("signing at store time: a commit applied otherwise than it was signed (another index) is signed again when applied", async () => {
    const { exchanges, notices } = cluster(undefined, () => "hs1");
    // hs2 signed the commit at index 7 when it stored it; the log then decided it at index 8 (the entry was replaced).
    exchanges.get("hs2")!.onCommitStored({ channelId: "c1", epoch: 4n, commitHash: new Uint8Array(32).fill(4), logIndex: 7n, voters: ids });
    exchanges.get("hs2")!.signNow();
    const before = notices.count;
    for (const exchange of exchanges.values()) exchange.onCommitAccepted(accepted("c1", 4n), 8);
    for (let i = 0; i < 5; i++) await turn();
    // hs2 signed again, over index 8 (the leader's batch to two, each follower's to the leader): every
    // voter completes the certificate of what the log decided.
    expect(notices.count).toBe(before + 2 + 1 + 1);
    for (const id of ids) expect(exchanges.get(id)!.pendingCount(), id).toBe(1);
  });
});
