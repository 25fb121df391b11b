/**
 * Property: no input makes a check throw. Random bytes are rejected; a random mutation of a valid message
 * is either rejected or, when it still verifies (e.g. a flipped membership tag, which a server cannot
 * check), yields the same result as the original. Seed from FC_SEED, printed at start.
 */
import { beforeAll, describe, expect, test } from "vitest";
import fc from "fast-check";
import {
  inspectApplicationMessage,
  inspectMessage,
  inspectPrivateCommit,
  inspectWelcome,
  verifyInitialGroupInfo,
  verifyNextGroupInfo,
  verifyPublicCommit,
  verifyPublicProposal,
  type PublicGroupView,
  type VerifiedCommit,
} from "../../src/mls/index.ts";
import { buildGroup, makeApplicationMessage, makeCommit, makeDevice, makeProposal, memberOf } from "../fixtures/mls-group.ts";

const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`mls fuzz: FC_SEED=${seed}`);
const numRuns = 120;

/** One edit of a byte string. */
type Mutation =
  | { kind: "flip"; at: number; mask: number }
  | { kind: "truncate"; at: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; count: number }
  | { kind: "overwrite"; at: number; bytes: Uint8Array };

const mutationArb: fc.Arbitrary<Mutation[]> = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
    fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ kind: fc.constant("overwrite" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
  ),
  { minLength: 1, maxLength: 3 },
);

function mutate(original: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let bytes = original.slice();
  for (const m of mutations) {
    const at = bytes.length === 0 ? 0 : m.at % bytes.length;
    if (m.kind === "flip") bytes[at] = (bytes[at] ?? 0) ^ m.mask;
    else if (m.kind === "truncate") bytes = bytes.slice(0, at);
    else if (m.kind === "insert") bytes = new Uint8Array([...bytes.subarray(0, at), ...m.bytes, ...bytes.subarray(at)]);
    else if (m.kind === "delete") bytes = new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + m.count)]);
    else bytes.set(m.bytes.subarray(0, Math.max(0, bytes.length - at)), at);
  }
  return bytes;
}

/** The parts of a verified commit a mutation must not change (the hash names the bytes, so it may). */
function commitSummary(c: VerifiedCommit): unknown {
  return { sender: c.sender, adds: c.adds, removes: c.removes, updates: c.updates, hasPath: c.hasPath, refs: c.proposalRefs, next: c.next };
}

describe("fuzzing the checks", () => {
  let view: PublicGroupView;
  let groupId: Uint8Array;
  let initialGroupInfo: Uint8Array;
  let commitBytes: Uint8Array;
  let nextGroupInfo: Uint8Array;
  let welcome: Uint8Array;
  let proposal: Uint8Array;
  let application: Uint8Array;
  let original: VerifiedCommit;

  beforeAll(async () => {
    const group = await buildGroup(["alice@hs1", "bob@hs2", "carol@hs3"]);
    view = group.view;
    groupId = group.groupId;
    initialGroupInfo = group.initialGroupInfo;
    const dave = await makeDevice("dave@hs4");
    const alice = memberOf(group, "alice@hs1").state;
    const pending = await makeCommit(alice, { add: [dave.keyPackage.publicPackage], remove: [2] });
    commitBytes = pending.commit;
    nextGroupInfo = pending.nextGroupInfo;
    welcome = pending.welcome ?? new Uint8Array();
    proposal = (await makeProposal(memberOf(group, "bob@hs2").state, { proposalType: "remove", remove: { removed: 2 } })).bytes;
    application = (await makeApplicationMessage(alice, "fuzz me")).bytes;
    const verified = await verifyPublicCommit(view, commitBytes);
    if (!verified.ok) throw new Error(verified.reason);
    original = verified;
  });

  test("random bytes are rejected by every check, never thrown on", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 1500 }), async (bytes) => {
        expect((await verifyPublicCommit(view, bytes)).ok).toBe(false);
        expect((await verifyPublicProposal(view, bytes)).ok).toBe(false);
        expect((await verifyNextGroupInfo(view, original, bytes)).ok).toBe(false);
        expect((await verifyInitialGroupInfo(groupId, bytes)).ok).toBe(false);
        expect(inspectPrivateCommit(view, bytes).ok).toBe(false);
        expect(inspectApplicationMessage(groupId, bytes).ok).toBe(false);
        expect(inspectWelcome(bytes).ok).toBe(false);
        const inspected = inspectMessage(bytes);
        if (inspected.ok) expect(["public", "private", "welcome", "group_info", "key_package"]).toContain(inspected.wireformat);
      }),
      { seed, numRuns },
    );
  });

  test("mutated commits and GroupInfos: rejected, or the same result as the original", async () => {
    await fc.assert(
      fc.asyncProperty(mutationArb, mutationArb, async (onCommit, onGroupInfo) => {
        const commit = await verifyPublicCommit(view, mutate(commitBytes, onCommit));
        if (commit.ok) expect(commitSummary(commit)).toEqual(commitSummary(original));
        const next = await verifyNextGroupInfo(view, original, mutate(nextGroupInfo, onGroupInfo));
        if (next.ok) expect(next.members.map((m) => m.deviceId)).toEqual(["alice@hs1", "bob@hs2", "dave@hs4"]);
        if (commit.ok) {
          const both = await verifyNextGroupInfo(view, commit, nextGroupInfo);
          // A mutated confirmation tag passes the commit check (only members can verify it) but not this one.
          if (both.ok) expect(commit.confirmationTag).toEqual(original.confirmationTag);
        }
      }),
      { seed, numRuns },
    );
  });

  test("mutated proposals, Welcomes, application messages and initial GroupInfos never throw", async () => {
    const proposalResult = await verifyPublicProposal(view, proposal);
    if (!proposalResult.ok) throw new Error(proposalResult.reason);
    await fc.assert(
      fc.asyncProperty(mutationArb, async (mutations) => {
        const p = await verifyPublicProposal(view, mutate(proposal, mutations));
        if (p.ok) expect([p.kind, p.sender, p.ref, p.remove]).toEqual([proposalResult.kind, proposalResult.sender, proposalResult.ref, proposalResult.remove]);
        const w = inspectWelcome(mutate(welcome, mutations));
        if (w.ok) expect(w.recipients.length).toBeGreaterThan(0);
        const a = inspectApplicationMessage(groupId, mutate(application, mutations));
        if (a.ok) expect(typeof a.epoch).toBe("bigint");
        const i = await verifyInitialGroupInfo(groupId, mutate(initialGroupInfo, mutations));
        if (i.ok) expect(i.members.map((m) => m.deviceId)).toEqual(["alice@hs1"]);
        expect(typeof inspectMessage(mutate(commitBytes, mutations)).ok).toBe("boolean");
      }),
      { seed, numRuns },
    );
  });
});
