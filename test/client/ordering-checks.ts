/**
 * What the channel-ordering property checks after a run, read from each homeserver separately (follower
 * reads go through ReadIndex, so they are linearizable):
 *  (a) the log of every homeserver hosting the channel (those of its members at the end) holds exactly one
 *      commit per epoch 0..N-1, in order, and the logs are identical; every commit a device was told won its epoch is that epoch's commit in the log;
 *  (b) every commit's certificate verifies (verifyCertificate) against the directory keys, with the voters
 *      the homeservers of the tree in that epoch (from the GroupInfos the devices submitted);
 *  (c) every remaining member has a handle at epoch N with the same epoch authenticator;
 *  (d) every message sent in an epoch reached every remaining member that belonged to the channel since
 *      that epoch, with the same text.
 */
import type * as grpc from "@grpc/grpc-js";
import { expect } from "vitest";
import { importEd25519PublicKey, verifyCertificate } from "../../src/client/certificate.ts";
import { sha256, toHex } from "../../src/client/mls-codec.ts";
import { EventKind, type ChannelEvent } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { decodeGroupInfoMessage } from "../../src/mls/index.ts";
import type { ChannelRpc, OrderingRun } from "./ordering-harness.ts";
import type { HomeserverId } from "./ordering-schedule.ts";

const eventPagesMax = 1_000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads a channel's whole event log from one homeserver (bounded in pages). */
export async function readLog(rpc: ChannelRpc, channelId: string, metadata: grpc.Metadata): Promise<ChannelEvent[]> {
  const events: ChannelEvent[] = [];
  let after = 0n;
  for (let page = 0; page < eventPagesMax; page++) {
    const response = await rpc.listEvents({ channelId, afterSequence: after, limit: 0 }, { deadlineMs: 10_000, metadata: metadata.clone() });
    events.push(...response.events);
    const last = response.events.at(-1);
    if (last === undefined || last.sequence >= response.lastSequence) return events;
    after = last.sequence;
  }
  throw new Error(`the log of ${channelId} has more than ${eventPagesMax} pages`);
}

function describeEvent(e: ChannelEvent): string {
  return `${e.sequence}:${EventKind[e.kind]}@${e.epoch}:${toHex(sha256(e.payload)).slice(0, 16)}`;
}

function homeserversOfGroupInfo(groupInfo: Uint8Array | undefined, what: string): string[] {
  if (groupInfo === undefined) throw new Error(`no GroupInfo recorded for ${what}`);
  const decoded = decodeGroupInfoMessage(groupInfo);
  if ("reason" in decoded) throw new Error(`${what}: ${decoded.reason}`);
  return [...new Set(decoded.members.map((m) => m.homeserver))].sort();
}

/** (a) One commit per epoch 0..N-1 on every homeserver, identical logs, and the answers devices got agree. */
function checkOrdering(run: OrderingRun, logs: ReadonlyMap<HomeserverId, ChannelEvent[]>, epoch: bigint): void {
  const reference = logs.get("hs1")!;
  for (const [homeserver, events] of logs) {
    expect(events.map(describeEvent), `the log on ${homeserver} differs from hs1's`).toEqual(reference.map(describeEvent));
  }
  const commits = reference.filter((e) => e.kind === EventKind.COMMIT);
  expect(commits.map((c) => c.epoch), "exactly one commit per epoch 0..N-1, in order").toEqual(Array.from({ length: Number(epoch) }, (_, i) => BigInt(i)));
  for (const [answeredEpoch, hashes] of run.submissions.answered) {
    const logged = commits[Number(answeredEpoch)];
    expect(logged, `a device was answered a commit for epoch ${answeredEpoch}, which the log does not have`).toBeDefined();
    expect([...hashes], `devices were answered different commits for epoch ${answeredEpoch}`).toEqual([toHex(sha256(logged!.payload))]);
  }
}

/** (b) Every certificate on one homeserver; returns the reason of the first incomplete one (to read again). */
function checkCertificates(run: OrderingRun, homeserver: HomeserverId, commits: ChannelEvent[], directory: Directory): string | undefined {
  let votersOfEpoch = homeserversOfGroupInfo(run.submissions.initialGroupInfo, "epoch 0");
  for (const commit of commits) {
    const commitHash = sha256(commit.payload);
    expect(commit.certificate, `${homeserver}: the commit of epoch ${commit.epoch} has no certificate`).toBeDefined();
    const verdict = verifyCertificate(commit.certificate!, { clusterId: directory.clusterId, channelId: run.channelId, epoch: commit.epoch, commitHash }, votersOfEpoch, directory.keys);
    if (!verdict.ok && verdict.incomplete === true) return `${homeserver} epoch ${commit.epoch}: ${verdict.reason}`;
    expect(verdict, `${homeserver}: certificate of epoch ${commit.epoch}`).toEqual({ ok: true });
    votersOfEpoch = homeserversOfGroupInfo(run.submissions.nextGroupInfos.get(toHex(commitHash)), `the commit ending epoch ${commit.epoch}`);
  }
  return undefined;
}

interface Directory {
  readonly clusterId: string;
  readonly keys: ReadonlyMap<string, ReturnType<typeof importEd25519PublicKey>>;
}

async function readDirectory(rpc: ChannelRpc): Promise<Directory> {
  const response = await rpc.listHomeservers({}, { deadlineMs: 10_000 });
  return { clusterId: response.clusterId, keys: new Map(response.homeservers.map((h) => [h.homeserverId, importEd25519PublicKey(h.signingKey)] as const)) };
}

/** (c) Every member has an up-to-date handle, and all share the epoch and its authenticator. */
function checkMembers(run: OrderingRun, epoch: bigint): void {
  const members = [...run.memberIds()].sort();
  expect(run.current().map((p) => p.id).sort(), "devices with a channel handle = members of the owner's tree").toEqual(members);
  const views = run.current().map((p) => ({ id: p.id, member: p.handle!.isMember(), epoch: p.handle!.epoch(), authenticator: toHex(p.handle!.epochAuthenticator()) }));
  const owner = views.find((v) => v.id === run.owner.id)!;
  for (const view of views) expect(view, `${view.id} against the owner`).toEqual({ id: view.id, member: true, epoch, authenticator: owner.authenticator });
}

/**
 * (d) Messages: each sent message is in the log once and reached every member that belonged since its
 * epoch. A message whose outcome its sender could not learn (removed while an attempt went unanswered)
 * may be in the log too, once, known by the text the owner read.
 */
function checkMessages(run: OrderingRun, events: ChannelEvent[]): number {
  const messages = events.filter((e) => e.kind === EventKind.MESSAGE);
  const ownerRead = new Map(run.owner.received.flatMap((r) => (r.kind === "message" ? [[r.sequence, new TextDecoder().decode(r.data)] as const] : [])));
  const sent = new Map(run.sent);
  const maybe = [...run.maybeSent];
  for (const message of messages) {
    if (sent.has(message.sequence)) continue;
    const at = maybe.findIndex((m) => m.text === ownerRead.get(message.sequence));
    if (at < 0) continue;
    sent.set(message.sequence, maybe[at]!);
    maybe.splice(at, 1);
  }
  expect(messages.map((m) => m.sequence).sort(), "the log's messages are exactly those the devices sent (or may have)").toEqual([...sent.keys()].sort());
  let deliveries = 0;
  for (const receiver of run.current()) {
    const got = new Map(receiver.received.flatMap((r) => (r.kind === "message" ? [[r.sequence, new TextDecoder().decode(r.data)] as const] : [])));
    const skipped = receiver.received.filter((r) => r.kind === "skipped");
    for (const message of messages) {
      const from = sent.get(message.sequence)!;
      if (from.sender === receiver.id || message.epoch < receiver.handle!.joinedAtEpoch) continue;
      expect(got.get(message.sequence), `${receiver.id} (member since epoch ${receiver.handle!.joinedAtEpoch}) did not get message ${message.sequence} of epoch ${message.epoch} from ${from.sender}; skipped: ${JSON.stringify(skipped.map((s) => s.kind === "skipped" && s.reason))}`).toBe(from.text);
      deliveries++;
    }
  }
  return deliveries;
}

/** The result of the checks, for the test's totals. */
export interface CheckSummary {
  readonly epoch: bigint;
  readonly members: number;
  readonly messages: number;
  readonly deliveries: number;
}

/** Runs checks (a) to (d) on a settled run; throws (vitest assertion errors) on any violation. */
export async function checkRun(run: OrderingRun, rawByHomeserver: ReadonlyMap<HomeserverId, ChannelRpc>, certificateWaitMs = 5_000): Promise<CheckSummary> {
  const epoch = run.owner.handle!.epoch();
  const directory = await readDirectory(rawByHomeserver.get("hs1")!);
  // The channel's group is on the homeservers of its members (the owner, on hs1, is one to the end).
  const hosting = new Set(run.owner.handle!.members().map((m) => m.deviceId.slice(m.deviceId.indexOf("@") + 1)));
  const deadline = Date.now() + certificateWaitMs;
  for (;;) {
    const logs = new Map<HomeserverId, ChannelEvent[]>();
    for (const [homeserver, rpc] of rawByHomeserver) {
      if (hosting.has(homeserver)) logs.set(homeserver, await readLog(rpc, run.channelId, await run.ownerMetadata(homeserver)));
    }
    checkOrdering(run, logs, epoch);
    const incomplete = [...logs.keys()].map((hs) => checkCertificates(run, hs, logs.get(hs)!.filter((e) => e.kind === EventKind.COMMIT), directory)).find((r) => r !== undefined);
    if (incomplete !== undefined) {
      if (Date.now() > deadline) throw new Error(`a certificate stayed incomplete: ${incomplete}`);
      await sleep(100);
      continue;
    }
    checkMembers(run, epoch);
    const deliveries = checkMessages(run, logs.get("hs1")!);
    return { epoch, members: run.current().length, messages: run.sent.size, deliveries };
  }
}
