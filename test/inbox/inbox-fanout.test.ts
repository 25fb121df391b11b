/**
 * Who gets what: the fan-out of accepted channel events and direct messages
 * into the local inboxes of one homeserver (hs1), with the real channel state
 * machine, real ts-mls commits and messages, and inboxes on real RocksDB.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { ApplyBatch } from "../../src/multiraft/apply-batch.ts";
import { ChannelStateMachine, type ChannelResult } from "../../src/channel/channel-state-machine.ts";
import { EntryKind, GapReason } from "../../src/gen/epochd/inbox/v1/inbox_pb.ts";
import { ChannelCommandSchema, type ChannelCommand } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { encodeDirectCommand } from "../../src/inbox/direct-command.ts";
import { InboxFanout } from "../../src/inbox/inbox-fanout.ts";
import { InboxStore } from "../../src/inbox/inbox-store.ts";
import { localWriter } from "../../src/inbox/local-write.ts";
import { EntryType } from "../../src/raft/types.ts";
import { StorageEngine } from "../../src/storage/storage-engine.ts";
import { buildGroup, makeApplicationMessage, makeCommit, makeDevice, memberOf } from "../fixtures/mls-group.ts";

type CommandInit = NonNullable<MessageInitShape<typeof ChannelCommandSchema>["command"]>;

const dirs: string[] = [];
const engines: StorageEngine[] = [];
afterEach(async () => {
  for (const engine of engines.splice(0)) await engine.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** hs1's inboxes on real RocksDB, filled by applying channel commands through the real channel state machine. */
async function fanoutOnHs1() {
  const dir = mkdtempSync(join(tmpdir(), "epochd-fanout-"));
  dirs.push(dir);
  const engine = await StorageEngine.open(dir, { sync: false });
  engines.push(engine);
  const group = await engine.openGroup("cluster", ["hs1"]);
  const store = new InboxStore({ scan: (p, l, f) => group.scan(p, l, f), write: localWriter(engine, group) }, { entriesMax: 100, bytesMax: 1 << 20, directBytesMax: 1024 });
  const key = new Uint8Array(32);
  const channels = new ChannelStateMachine({ clusterId: "test", signingKeyOf: () => key });
  const fanout = new InboxFanout("hs1", store, channels);
  const stored = new Map<string, Uint8Array>();
  let index = 0;
  const apply = async (command: CommandInit): Promise<ChannelResult> => {
    const round = fanout.begin();
    const batch = new ApplyBatch(0x43, async (k) => stored.get(Buffer.from(k).toString("hex")));
    const parsed = create(ChannelCommandSchema, { command }) as ChannelCommand;
    const at = ++index;
    const result = await round.channelCommand(parsed, at, () => channels.apply(parsed, at, batch));
    for (const write of batch.writes) if ("value" in write) stored.set(Buffer.from(write.key).toString("hex"), write.value);
    await engine.apply([{ group, appliedIndex: at, writes: round.writes }]);
    round.afterWrite();
    return result;
  };
  const kinds = async (deviceId: string) => (await store.read(deviceId, 0n, 100)).map((e) => [EntryKind[e.kind], e.messageId]);
  return { engine, group, store, channels, fanout, apply, kinds };
}

describe("inbox fan-out", () => {
  it("queues commits for the epoch's members, Welcomes for the added, messages for current members, direct messages for their target; only local devices", async () => {
    const { engine, group, store, channels, fanout, apply, kinds } = await fanoutOnHs1();
    const tree = await buildGroup(["alice@hs1"]);
    await apply({ case: "createChannel", value: { channelId: "c", groupInfo: tree.initialGroupInfo, contentType: "text/plain" } });
    const carol = await makeDevice("carol@hs1");
    const bob = await makeDevice("bob@hs2");
    const add = await makeCommit(memberOf(tree, "alice@hs1").state, { add: [carol.keyPackage.publicPackage, bob.keyPackage.publicPackage] });
    expect(await apply({ case: "submitCommit", value: { channelId: "c", epoch: 0n, commit: add.commit, nextGroupInfo: add.nextGroupInfo, welcome: add.welcome! } })).toMatchObject({ ok: true, kind: "commit-accepted" });
    const carolLeaf = channels.channel("c")!.members.find((m) => m.deviceId === "carol@hs1")!.leafIndex;
    const remove = await makeCommit(add.newState, { remove: [carolLeaf] });
    expect(await apply({ case: "submitCommit", value: { channelId: "c", epoch: 1n, commit: remove.commit, nextGroupInfo: remove.nextGroupInfo, welcome: new Uint8Array(0) } })).toMatchObject({ ok: true });
    const message = await makeApplicationMessage(remove.newState, "hello");
    expect(await apply({ case: "sendMessage", value: { channelId: "c", epoch: 2n, message: message.bytes } })).toMatchObject({ ok: true, kind: "message-accepted" });

    expect(await kinds("alice@hs1")).toEqual([["COMMIT", "c#1"], ["COMMIT", "c#2"], ["MESSAGE", "c#3"]]);
    expect(await kinds("carol@hs1")).toEqual([["WELCOME", "c#1/welcome"], ["COMMIT", "c#2"]]);
    expect(await kinds("bob@hs2")).toEqual([]);
    const welcome = (await store.read("carol@hs1", 0n, 1))[0]!;
    expect(welcome.payload).toEqual(add.welcome);

    const round = fanout.begin();
    const nonce = new Uint8Array(16).fill(7);
    const local = round.direct({ index: 10, term: 1, type: EntryType.Normal, data: encodeDirectCommand({ targetDeviceId: "carol@hs1", senderDeviceId: "bob@hs2", payload: Uint8Array.of(1, 2), nonce }) });
    const remote = round.direct({ index: 11, term: 1, type: EntryType.Normal, data: encodeDirectCommand({ targetDeviceId: "bob@hs2", senderDeviceId: "alice@hs1", payload: Uint8Array.of(3), nonce }) });
    const broken = round.direct({ index: 12, term: 1, type: EntryType.Normal, data: Uint8Array.of(1, 6, 0xff, 0xff) });
    await engine.apply([{ group, appliedIndex: 12, writes: round.writes }]);
    round.afterWrite();
    expect(local).toEqual({ ok: true, queuedHere: true, messageId: `direct/bob@hs2/${"07".repeat(16)}` });
    expect(remote).toMatchObject({ ok: true, queuedHere: false });
    expect(broken).toMatchObject({ ok: false, code: "invalid" });
    expect((await kinds("carol@hs1")).at(-1)).toEqual(["DIRECT", `direct/bob@hs2/${"07".repeat(16)}`]);
    expect(await kinds("bob@hs2")).toEqual([]);
  });
  it("after a snapshot, every local member of each restored channel gets one gap marker, also when the take-up runs again after a crash", async () => {
    const { apply, kinds, fanout, store } = await fanoutOnHs1();
    const tree = await buildGroup(["alice@hs1"]);
    await apply({ case: "createChannel", value: { channelId: "c", groupInfo: tree.initialGroupInfo, contentType: "text/plain" } });
    const carol = await makeDevice("carol@hs1");
    const bob = await makeDevice("bob@hs2");
    const add = await makeCommit(memberOf(tree, "alice@hs1").state, { add: [carol.keyPackage.publicPackage, bob.keyPackage.publicPackage] });
    expect(await apply({ case: "submitCommit", value: { channelId: "c", epoch: 0n, commit: add.commit, nextGroupInfo: add.nextGroupInfo, welcome: add.welcome! } })).toMatchObject({ ok: true });
    await fanout.afterSnapshot(40, ["c"]);
    await fanout.afterSnapshot(40, ["c"]); // the take-up again, as after a crash before its index was recorded
    expect((await kinds("alice@hs1")).at(-1)).toEqual(["GAP", "gap/40/c"]);
    expect((await kinds("carol@hs1")).at(-1)).toEqual(["GAP", "gap/40/c"]);
    expect((await kinds("alice@hs1")).filter(([kind]) => kind === "GAP")).toHaveLength(1);
    const [gap] = (await store.read("alice@hs1", 0n, 100)).filter((e) => e.kind === EntryKind.GAP);
    expect(gap).toMatchObject({ channelId: "c", gapReason: GapReason.SNAPSHOT, logIndex: 40n });
    expect(await kinds("bob@hs2")).toEqual([]);
  });
});
