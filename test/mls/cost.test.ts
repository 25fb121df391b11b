/**
 * Measures what the server-side check of one PublicMessage commit costs (verifyPublicCommit +
 * verifyNextGroupInfo) for groups of 8 and 32 members. Prints the numbers; asserts only that the checks
 * pass (no timed assertions: the machine is shared).
 */
import { describe, expect, test } from "vitest";
import { performance } from "node:perf_hooks";
import { verifyNextGroupInfo, verifyPublicCommit, type PublicGroupView } from "../../src/mls/index.ts";
import { commitAccepted, createTestGroup, makeCommit, makeDevice, type PendingCommit } from "../fixtures/mls-group.ts";
import type { ClientState } from "ts-mls";

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/**
 * Times both checks. Wall time is what apply waits; CPU time (this process, user + system) is reported too
 * because the shared machine is often oversubscribed, which inflates wall time several-fold.
 */
async function timeCheck(view: PublicGroupView, pending: PendingCommit): Promise<{ commitMs: number; groupInfoMs: number; cpuMs: number; view: PublicGroupView }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const commit = await verifyPublicCommit(view, pending.commit);
  const t1 = performance.now();
  if (!commit.ok) throw new Error(commit.reason);
  const next = await verifyNextGroupInfo(view, commit, pending.nextGroupInfo);
  const t2 = performance.now();
  if (!next.ok) throw new Error(next.reason);
  const cpu = process.cpuUsage(cpu0);
  return { commitMs: t1 - t0, groupInfoMs: t2 - t1, cpuMs: (cpu.user + cpu.system) / 1000, view: next.view };
}

async function measure(members: number, emptyCommits: number, addCommits: number): Promise<string> {
  const creator = await makeDevice("m0@hs1");
  const created = await createTestGroup(creator.keyPackage);
  const others = await Promise.all(Array.from({ length: members - 1 }, (_, i) => makeDevice(`m${i + 1}@hs${(i % 3) + 1}`)));
  const first = await makeCommit(created.state, { add: others.map((o) => o.keyPackage.publicPackage) });
  let state: ClientState = commitAccepted(first);
  let view: PublicGroupView = { groupId: state.groupContext.groupId, epoch: 1n, groupInfo: first.nextGroupInfo };
  const rows: { kind: string; commitMs: number; groupInfoMs: number; cpuMs: number; commitBytes: number; groupInfoBytes: number }[] = [];
  for (let i = 0; i < emptyCommits + addCommits; i++) {
    const kind = i < emptyCommits ? "empty" : "add";
    const pending = kind === "empty" ? await makeCommit(state) : await makeCommit(state, { add: [(await makeDevice(`n${i}@hs2`)).keyPackage.publicPackage] });
    const timed = await timeCheck(view, pending);
    rows.push({ kind, commitMs: timed.commitMs, groupInfoMs: timed.groupInfoMs, cpuMs: timed.cpuMs, commitBytes: pending.commit.length, groupInfoBytes: pending.nextGroupInfo.length });
    view = timed.view;
    state = commitAccepted(pending);
  }
  expect(view.epoch).toBe(BigInt(1 + emptyCommits + addCommits));
  return ["empty", "add"]
    .map((kind) => {
      const r = rows.slice(kind === "empty" ? 1 : emptyCommits).filter((row) => row.kind === kind); // first empty = warm-up
      const c = median(r.map((x) => x.commitMs));
      const g = median(r.map((x) => x.groupInfoMs));
      return `${members} members, ${kind} commit (n=${r.length}): verifyPublicCommit ${c.toFixed(1)} ms + verifyNextGroupInfo ${g.toFixed(1)} ms = ${(c + g).toFixed(1)} ms wall, ${median(r.map((x) => x.cpuMs)).toFixed(1)} ms CPU (medians); commit ${median(r.map((x) => x.commitBytes))} B, GroupInfo ${median(r.map((x) => x.groupInfoBytes))} B`;
    })
    .join("\n");
}

describe("cost of the server-side commit check", () => {
  test("groups of 8 and 32 members", async () => {
    const lines = [await measure(8, 9, 4), await measure(32, 9, 4)];
    console.log(`mls check cost (medians):\n${lines.join("\n")}`);
  });
});
