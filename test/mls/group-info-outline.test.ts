/**
 * The GroupInfo outline (a hand-written walk of the TLS encoding) must give the same answers as the full
 * ts-mls decode on everything the full decode accepts: real GroupInfos of groups of 1 to 9 devices, and
 * fuzzed mutations of them. It must never throw. Seed from FC_SEED, printed at start.
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { decodeGroupInfoMessage } from "../../src/mls/group-view.ts";
import { outlineGroupInfoMessage } from "../../src/mls/group-info-outline.ts";
import { buildGroup, makeCommit, makeDevice, memberOf } from "../fixtures/mls-group.ts";

const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`GroupInfo outline: FC_SEED=${seed}`);

function agree(bytes: Uint8Array): "both-accept" | "both-reject" | "outline-only" {
  const full = decodeGroupInfoMessage(bytes);
  const outline = outlineGroupInfoMessage(bytes);
  if ("reason" in full) return "reason" in outline ? "both-reject" : "outline-only";
  if ("reason" in outline) console.log("MISMATCH", outline.reason, Buffer.from(bytes).toString("hex"));
  expect("reason" in outline ? outline.reason : "accepted").toBe("accepted");
  if ("reason" in outline) return "both-reject";
  expect(outline.epoch).toBe(full.context.epoch);
  expect(Buffer.from(outline.groupId).toString("hex")).toBe(Buffer.from(full.context.groupId).toString("hex"));
  expect(outline.signer).toBe(full.groupInfo.signer);
  expect(outline.members).toEqual(full.members);
  return "both-accept";
}

describe("outlineGroupInfoMessage", () => {
  const samples: Uint8Array[] = [];

  beforeAll(async () => {
    const ids = ["alice@hs1", "bob@hs2", "carol@hs3", "dave@hs1", "erin@hs2", "frank@hs3", "grace@hs1", "heidi@hs2", "ivan@hs3"];
    const group = await buildGroup(ids);
    samples.push(group.initialGroupInfo, group.view.groupInfo);
    const alice = memberOf(group, "alice@hs1").state;
    const removed = await makeCommit(alice, { remove: [3, 5] });
    samples.push(removed.nextGroupInfo);
    const judy = await makeDevice("judy@hs4");
    samples.push((await makeCommit(removed.newState, { add: [judy.keyPackage.publicPackage] })).nextGroupInfo);
    samples.push((await makeCommit(alice, { publicMessage: false })).nextGroupInfo);
    samples.push((await buildGroup(["solo@hs9"])).initialGroupInfo);
  }, 60_000);

  it("reads exactly what the full decode reads from real GroupInfos (1 to 9 members, blanks, adds, removes)", () => {
    for (const bytes of samples) expect(agree(bytes)).toBe("both-accept");
  });

  it("agrees with the full decode on fuzzed GroupInfos and never throws (property)", () => {
    const counts = { "both-accept": 0, "both-reject": 0, "outline-only": 0 };
    fc.assert(
      fc.property(fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean()), { minLength: 1, maxLength: 3 }), (which, edits) => {
        let bytes = samples[which % samples.length]!.slice();
        for (const [at, mask, truncate] of edits) {
          if (truncate) bytes = bytes.slice(0, at % bytes.length);
          else if (bytes.length > 0) bytes[at % bytes.length]! ^= mask;
        }
        counts[agree(bytes)]++;
      }),
      { seed, numRuns: 400 },
    );
    console.log(`GroupInfo outline vs full decode on fuzzed input: ${JSON.stringify(counts)}`);
    expect(counts["both-reject"]).toBeGreaterThan(0);
  });
});
