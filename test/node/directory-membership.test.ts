/**
 * The directory's membership rules through the real cluster state machine on
 * RocksDB (invites consumed exactly once at apply, expiry by stamped time,
 * "left" is final, everything survives a restart), the token codec, the
 * reconciler's decisions and leave's quorum check.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { encodeSetHomeserver } from "../../src/node/directory-command.ts";
import { MembershipError } from "../../src/node/directory-invites.ts";
import { checkLeaveQuorum, type LeaveContext } from "../../src/node/directory-leave.ts";
import { decodeMembershipCommand, encodeMembershipCommand, type MembershipCommand } from "../../src/node/directory-membership-command.ts";
import type { MembershipResult } from "../../src/node/directory-membership.ts";
import { directoryVotersMax, nextMembershipAction, type MembershipFacts } from "../../src/node/directory-reconciler.ts";
import { encodeInviteToken, inviteSecretHash, InviteTokenError, parseInviteToken } from "../../src/node/directory-token.ts";
import type { RaftStatus } from "../../src/raft/raw-node.ts";
import { ConfChangeType, Role } from "../../src/raft/types.ts";
import { MachineHarness, testHomeserver } from "../identity/machine-harness.ts";

const seed = Number(process.env["FC_SEED"] ?? Date.now() % 2 ** 31);
console.log(`directory-membership: FC_SEED=${seed}`);

const nonce = () => randomBytes(8).toString("hex");
const hex64 = (byte: number) => Buffer.alloc(32, byte).toString("hex");

function invite(homeserverId: string, secret: Uint8Array, issuedAtMs = 1000, expiresAtMs = 10_000): MembershipCommand & { kind: "invite" } {
  return { kind: "invite", nonce: nonce(), inviteId: randomBytes(16).toString("hex"), homeserverId, secretHash: inviteSecretHash(secret), issuedAtMs, expiresAtMs, issuer: "hs1" };
}

function redeem(of: { inviteId: string; homeserverId: string }, secret: Uint8Array, keyByte: number, nowMs = 2000): MembershipCommand {
  const signingKey = Buffer.alloc(32, keyByte).toString("base64");
  return { kind: "redeem", nonce: nonce(), inviteId: of.inviteId, homeserverId: of.homeserverId, secretHash: inviteSecretHash(secret), nowMs, peerAddress: "127.0.0.1:7104", clientAddress: "127.0.0.1:7204", signingKey, keyHash: hex64(keyByte) };
}

describe("membership commands applied by the cluster state machine", () => {
  let harness: MachineHarness;
  const apply = async (...commands: MembershipCommand[]) => (await harness.applyAll(commands.map(encodeMembershipCommand))) as MembershipResult[];

  beforeEach(async () => {
    harness = await MachineHarness.open([testHomeserver("hs1"), testHomeserver("hs2")]);
  });
  afterEach(async () => harness.close());

  it("consumes an invite exactly once, even when two redeems share an apply round", async () => {
    const secret = randomBytes(32);
    const minted = invite("hs4", secret);
    expect(await apply(minted)).toEqual([{ ok: true, kind: "invite", homeserverId: "hs4" }]);
    const [first, rival, again] = await apply(redeem(minted, secret, 1), redeem(minted, secret, 2), redeem(minted, secret, 1));
    expect(first).toEqual({ ok: true, kind: "redeem", homeserverId: "hs4" });
    expect(rival).toMatchObject({ ok: false, code: "denied" });
    expect(again).toMatchObject({ ok: true }); // the same joiner asking again
    expect(harness.machine.homeservers().get("hs4")).toMatchObject({ status: "active", signingKey: Buffer.alloc(32, 1).toString("base64") });
    await harness.restart();
    expect(harness.machine.membership.invite(minted.inviteId)?.keyHash).toBe(hex64(1));
    expect(await apply(redeem(minted, secret, 3))).toMatchObject([{ ok: false, code: "denied" }]);
  });

  it("refuses a wrong secret, another homeserver id and an expired invite, changing nothing", async () => {
    const secret = randomBytes(32);
    const minted = invite("hs5", secret, 1000, 5000);
    await apply(minted);
    const results = await apply(redeem(minted, randomBytes(32), 1), redeem({ ...minted, homeserverId: "hs6" }, secret, 1), redeem(minted, secret, 1, 5000));
    expect(results.map((r) => (r.ok ? "ok" : r.code))).toEqual(["unauthenticated", "denied", "denied"]);
    expect(harness.machine.homeservers().has("hs5")).toBe(false);
    expect(harness.machine.homeservers().has("hs6")).toBe(false);
    expect(harness.machine.membership.invite(minted.inviteId)?.keyHash).toBeUndefined();
  });

  it("makes 'left' final: a homeserver's own registration cannot undo it, and no invite is minted for an active id", async () => {
    expect(await apply({ kind: "leave", nonce: nonce(), homeserverId: "hs2" })).toMatchObject([{ ok: true }]);
    const [registered] = (await harness.applyAll([encodeSetHomeserver({ id: "hs2", peerAddress: "127.0.0.1:1", clientAddress: "127.0.0.1:2", signingKey: "" })])) as Array<{ ok: boolean }>;
    expect(registered?.ok).toBe(false);
    expect(harness.machine.homeservers().get("hs2")?.status).toBe("left");
    expect(await apply(invite("hs1", randomBytes(32)))).toMatchObject([{ ok: false, code: "precondition" }]);
    // A left homeserver may be invited again.
    expect(await apply(invite("hs2", randomBytes(32)))).toMatchObject([{ ok: true }]);
  });

  it("answers any bytes with a refusal, never a throw", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (body) => {
        const [result] = (await harness.applyAll([Uint8Array.of(1, 7, ...body)])) as MembershipResult[];
        expect(result?.ok).toBe(false);
      }),
      { seed, numRuns: 50 },
    );
  });
});

describe("invite tokens and membership commands as bytes", () => {
  it("round-trip", () => {
    const token = { clusterId: "local-1", inviteId: "ab".repeat(16), homeserverId: "hs4", secret: new Uint8Array(randomBytes(32)), caFingerprint: "cd".repeat(32), joinAddress: "127.0.0.1:7201", expiresAtMs: 1_700_000_000_000 };
    expect(parseInviteToken(encodeInviteToken(token))).toEqual(token);
    const command = invite("hs4", randomBytes(32));
    expect(decodeMembershipCommand(encodeMembershipCommand(command).subarray(2))).toEqual(command);
  });

  it("refuse malformed tokens with a reason", () => {
    for (const text of ["", "epochd-invite1.", "epochd-invite1.e30", "nope.abc", `epochd-invite1.${"A".repeat(3000)}`]) {
      expect(() => parseInviteToken(text)).toThrow(InviteTokenError);
    }
  });
});

function raftStatus(fields: { voters: string[]; learners?: string[]; match?: Record<string, number>; commit?: number; id?: string }): RaftStatus {
  return {
    id: fields.id ?? "hs1",
    groupId: "cluster",
    term: 2,
    vote: "hs1",
    commit: fields.commit ?? 100,
    applied: fields.commit ?? 100,
    role: Role.Leader,
    leader: fields.id ?? "hs1",
    lastIndex: 100,
    lastTerm: 2,
    confState: { voters: fields.voters, votersOutgoing: [], learners: fields.learners ?? [], learnersNext: [] },
    votesHeld: false,
    progress: new Map(Object.entries(fields.match ?? {}).map(([id, match]) => [id, { match, next: match + 1, state: "replicate", learner: false }])),
  };
}

describe("the directory reconciler's decisions", () => {
  const records = (entries: Array<[string, "active" | "left"]>) => new Map(entries.map(([id, status]) => [id, { id, peerAddress: "127.0.0.1:1", clientAddress: "127.0.0.1:2", signingKey: "", status }]));
  const facts = (status: RaftStatus, directory: MembershipFacts["directory"], targets: Array<[string, number]> = [], blocked: string[] = []): MembershipFacts => ({
    status,
    directory,
    isBlocked: (id) => blocked.includes(id),
    catchUpTargets: new Map(targets),
  });

  it("adds a joiner as a learner, promotes it once caught up and only below the voter maximum", () => {
    const directory = records([["hs1", "active"], ["hs2", "active"], ["hs4", "active"]]);
    expect(nextMembershipAction(facts(raftStatus({ voters: ["hs1", "hs2"] }), directory))).toEqual({ kind: "change", type: ConfChangeType.AddLearner, nodeId: "hs4" });
    const learning = raftStatus({ voters: ["hs1", "hs2"], learners: ["hs4"], match: { hs4: 90 } });
    expect(nextMembershipAction(facts(learning, directory, [["hs4", 95]]))).toBeUndefined();
    const caughtUp = raftStatus({ voters: ["hs1", "hs2"], learners: ["hs4"], match: { hs4: 95 } });
    expect(nextMembershipAction(facts(caughtUp, directory, [["hs4", 95]]))).toEqual({ kind: "change", type: ConfChangeType.AddVoter, nodeId: "hs4" });
    expect(nextMembershipAction(facts(caughtUp, directory, [["hs4", 95]], ["hs4"]))).toBeUndefined();
    const full = Array.from({ length: directoryVotersMax }, (_, i) => `v${i}`);
    const atMax = raftStatus({ id: "v0", voters: full, learners: ["hs4"], match: { hs4: 100 } });
    const fullDirectory = records([...full.map((id): [string, "active"] => [id, "active"]), ["hs4", "active"]]);
    expect(nextMembershipAction(facts(atMax, fullDirectory, [["hs4", 0]]))).toBeUndefined();
  });

  it("removes a member that left, and a leader that left hands over to the voter furthest ahead", () => {
    const directory = records([["hs1", "active"], ["hs2", "active"], ["hs3", "left"]]);
    expect(nextMembershipAction(facts(raftStatus({ voters: ["hs1", "hs2", "hs3"] }), directory))).toEqual({ kind: "change", type: ConfChangeType.RemoveNode, nodeId: "hs3" });
    const selfLeft = records([["hs1", "left"], ["hs2", "active"], ["hs3", "active"]]);
    const status = raftStatus({ voters: ["hs1", "hs2", "hs3"], match: { hs1: 100, hs2: 80, hs3: 99 } });
    expect(nextMembershipAction(facts(status, selfLeft))).toEqual({ kind: "transfer", to: "hs3" });
  });
});

describe("leave's quorum check", () => {
  const context = (voters: string[], connected: string[]): LeaveContext =>
    ({
      selfId: "hs1",
      groupId: "cluster",
      driver: { groupIds: () => ["cluster"], status: () => raftStatus({ voters }), transferLeadership: () => undefined },
      isConnected: (peer: string) => connected.includes(peer),
    }) as unknown as LeaveContext;

  it("allows leaving when the other voters keep a reachable quorum, refuses otherwise", () => {
    expect(() => checkLeaveQuorum(context(["hs1", "hs2", "hs3"], ["hs2", "hs3"]))).not.toThrow();
    expect(() => checkLeaveQuorum(context(["hs1", "hs2", "hs3"], ["hs2"]))).toThrow(MembershipError);
    expect(() => checkLeaveQuorum(context(["hs1", "hs2", "hs3", "hs4"], ["hs2", "hs3"]))).not.toThrow();
    expect(() => checkLeaveQuorum(context(["hs1"], []))).toThrow(/only voter/);
    expect(() => checkLeaveQuorum(context(["hs2", "hs3"], []))).not.toThrow(); // a learner may always leave
  });
});
