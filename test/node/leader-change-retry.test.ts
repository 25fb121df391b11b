import { describe, expect, it } from "vitest";
import { NotLeaderError, OutcomeUnknownError, ProposalRefusedError } from "../../src/multiraft/errors.ts";
import { changingLeader, retryWhileLeaderChanges } from "../../src/node/leader-change-retry.ts";

/** An attempt that fails with `errors` in turn, then resolves with "ordered"; counts its calls. */
function scripted(errors: Error[]) {
  const calls = { attempts: 0, leaderWaits: 0 };
  const attempt = async () => {
    const error = errors[calls.attempts++];
    if (error !== undefined) throw error;
    return "ordered";
  };
  const leaderKnown = async () => {
    calls.leaderWaits++;
  };
  return { calls, attempt, leaderKnown };
}

describe("retryWhileLeaderChanges", () => {
  it("orders the command once the group has a leader again, after refusals of a hand-over and of a follower knowing no leader", async () => {
    const { calls, attempt, leaderKnown } = scripted([
      new ProposalRefusedError("channel/c", "leadership-transfer"),
      new NotLeaderError("channel/c", ""),
      new NotLeaderError("channel/c", "hs2"),
    ]);
    await expect(retryWhileLeaderChanges(attempt, leaderKnown, Date.now() + 2000)).resolves.toBe("ordered");
    expect(calls).toEqual({ attempts: 4, leaderWaits: 3 });
  });

  it("does not retry what may have been ordered or was refused for another reason", async () => {
    for (const error of [new OutcomeUnknownError("channel/c", "lost"), new ProposalRefusedError("channel/c", "overloaded"), new Error("disk")]) {
      const { calls, attempt, leaderKnown } = scripted([error]);
      await expect(retryWhileLeaderChanges(attempt, leaderKnown, Date.now() + 2000)).rejects.toBe(error);
      expect(calls.attempts).toBe(1);
    }
  });

  it("gives up with the last refusal once the deadline passed", async () => {
    const refusal = new NotLeaderError("channel/c", "");
    const started = Date.now();
    await expect(retryWhileLeaderChanges(() => Promise.reject(refusal), async () => undefined, started + 60)).rejects.toBe(refusal);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("tells a leader change from other failures", () => {
    expect(changingLeader(new NotLeaderError("g", ""))).toBe(true);
    expect(changingLeader(new ProposalRefusedError("g", "leadership-transfer"))).toBe(true);
    expect(changingLeader(new ProposalRefusedError("g", "overloaded"))).toBe(false);
    expect(changingLeader(new OutcomeUnknownError("g", "x"))).toBe(false);
  });
});
