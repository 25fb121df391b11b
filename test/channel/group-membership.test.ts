/**
 * How a channel's group follows its members (src/channel/group-membership.ts): the leader's next step
 * towards voters = the members' homeservers, one membership change at a time.
 */
import { describe, expect, it } from "vitest";
import { noCatchUpFloor } from "../../src/raft/types.ts";
import { believesLeaveNotice, followsMembers, membershipSettled, nextMembershipStep } from "../../src/channel/group-membership.ts";
import type { ConfState } from "../../src/raft/types.ts";

const conf = (voters: string[], learners: string[] = [], votersOutgoing: string[] = []): ConfState => ({ voters, learners, votersOutgoing, learnersNext: [] });
const matches = (m: Record<string, number>) => (id: string) => m[id] ?? 0;

describe("a channel group following its members", () => {
  it("compares voters and members' homeservers as sets", () => {
    expect(followsMembers(["hs2", "hs1"], ["hs1", "hs2"])).toBe(true);
    expect(followsMembers(["hs1"], ["hs1", "hs2"])).toBe(false);
    expect(followsMembers(["hs1", "hs2"], ["hs1"])).toBe(false);
    expect(membershipSettled(conf(["hs1", "hs2"]), ["hs1", "hs2"])).toBe(true);
    expect(membershipSettled(conf(["hs1", "hs2"], ["hs3"]), ["hs1", "hs2"])).toBe(false);
    expect(membershipSettled(conf(["hs1", "hs2"], [], ["hs1"]), ["hs1", "hs2"])).toBe(false);
  });

  it("adds a missing homeserver as a learner, promotes it only once caught up, then removes homeservers without members", () => {
    expect(nextMembershipStep(["hs1", "hs2"], conf(["hs1"]), matches({}), 10)).toEqual({ kind: "add-learner", homeserver: "hs2" });
    expect(nextMembershipStep(["hs1", "hs2"], conf(["hs1"], ["hs2"]), matches({ hs2: 0 }), 10)).toEqual({ kind: "remind-learner", homeserver: "hs2" });
    expect(nextMembershipStep(["hs1", "hs2"], conf(["hs1"], ["hs2"]), matches({ hs2: 9 }), 10)).toEqual({ kind: "remind-learner", homeserver: "hs2" });
    expect(nextMembershipStep(["hs1", "hs2"], conf(["hs1"], ["hs2"]), matches({ hs2: 10 }), 10)).toEqual({ kind: "promote", homeserver: "hs2" });
    expect(nextMembershipStep(["hs1", "hs2"], conf(["hs1", "hs2"]), matches({}), 10)).toBeUndefined();
    // hs3 lost its last member; hs4 gained one: the add comes first, the removal after.
    expect(nextMembershipStep(["hs1", "hs4"], conf(["hs1", "hs3"]), matches({}), 10)).toEqual({ kind: "add-learner", homeserver: "hs4" });
    expect(nextMembershipStep(["hs1", "hs4"], conf(["hs1", "hs3", "hs4"]), matches({}), 10)).toEqual({ kind: "remove", homeserver: "hs3" });
    // The leader's own homeserver leaves too when it has no member left.
    expect(nextMembershipStep(["hs2"], conf(["hs1", "hs2"]), matches({}), 10)).toEqual({ kind: "remove", homeserver: "hs1" });
  });

  it("waits while in a joint configuration, and never empties the group", () => {
    expect(nextMembershipStep(["hs1"], conf(["hs1"], [], ["hs1", "hs2"]), matches({}), 10)).toBeUndefined();
    expect(nextMembershipStep([], conf(["hs1"]), matches({}), 10)).toBeUndefined();
  });
});

describe("believesLeaveNotice", () => {
  const members = conf(["hs2", "hs3", "hs4"]);
  const copy = { confState: members, term: 5, confIndex: 40, lastIndex: 60, lastTerm: 5, floor: noCatchUpFloor };
  const notice = { from: "hs3", term: 5, confIndex: 40, lastIndex: 60 };

  it("believes a member of the copy's membership about a membership no older, in a term no older", () => {
    expect(believesLeaveNotice(notice, copy)).toBe(true);
    expect(believesLeaveNotice({ ...notice, term: 6, confIndex: 50, lastIndex: 90 }, copy)).toBe(true);
  });

  it("refuses a deposed leader, an older membership, and a copy that took entries past the notice", () => {
    expect(believesLeaveNotice({ ...notice, term: 4 }, copy)).toBe(false);
    expect(believesLeaveNotice({ ...notice, confIndex: 39 }, copy)).toBe(false);
    expect(believesLeaveNotice({ ...notice, lastIndex: 59 }, copy)).toBe(false);
    expect(believesLeaveNotice({ ...notice, term: 6, lastIndex: 90 }, { ...copy, term: 6, lastTerm: 6, lastIndex: 91 })).toBe(false);
  });

  it("believes it over entries past the leader's last index that are of an earlier term: they never committed", () => {
    // The copy holds two entries from a leader deposed before it sent them on; the leader of term 7 never had them.
    const stale = { ...copy, term: 7, lastIndex: 62, lastTerm: 5 };
    expect(believesLeaveNotice({ ...notice, term: 7, confIndex: 41, lastIndex: 61 }, stale)).toBe(true);
    expect(believesLeaveNotice({ ...notice, term: 7, confIndex: 41, lastIndex: 61 }, { ...stale, lastTerm: 7 })).toBe(false);
  });

  it("refuses a notice sent before the request that made the copy: behind its catch-up floor", () => {
    // A copy made anew at the request of a member whose commit index was 58 in term 5 (it holds nothing yet).
    const fresh = { ...copy, lastIndex: 0, lastTerm: 0, confIndex: 0, confState: conf([]), floor: { index: 58, term: 5 } };
    expect(believesLeaveNotice({ ...notice, confIndex: 30, lastIndex: 57 }, fresh)).toBe(false);
    expect(believesLeaveNotice({ ...notice, term: 4, confIndex: 30, lastIndex: 90 }, fresh)).toBe(false);
    expect(believesLeaveNotice({ ...notice, confIndex: 30, lastIndex: 58 }, fresh)).toBe(true);
  });

  it("believes the leader of a strictly newer membership the copy never saw, and no other outsider", () => {
    // A copy removed long ago may know none of the homeservers that lead now.
    expect(believesLeaveNotice({ ...notice, from: "hs1", confIndex: 41 }, copy)).toBe(true);
    expect(believesLeaveNotice({ ...notice, from: "hs1" }, copy)).toBe(false);
    expect(believesLeaveNotice({ ...notice, from: "hs1", confIndex: 41, term: 4 }, copy)).toBe(false);
  });
});
