/**
 * Shortens a brand-new cluster's first election: on a group that has never
 * had a leader (term 1 or less), the first of its initial voters in id order
 * campaigns as soon as its peer streams reach a quorum, instead of waiting
 * out an election timeout that mostly measures how long the other processes
 * took to start. Only one voter does it, so the votes do not split; if it is
 * down, the others elect on their timeouts as usual. Campaigning is always
 * safe in Raft: this changes timing only.
 */
import type { RaftDriver } from "../multiraft/raft-driver.ts";
import type { PeerStreamState } from "../transport/peer-transport.ts";

/** How often the peer streams are looked at, and for how long at most. */
export const firstElectionPollMs = 20;
export const firstElectionWaitMaxMs = 10_000;

/** Starts watching; returns a function that stops it. */
export function hastenFirstElection(options: {
  readonly selfId: string;
  readonly groupId: string;
  readonly initialVoters: readonly string[];
  readonly driver: RaftDriver;
  readonly peerStates: () => ReadonlyMap<string, PeerStreamState>;
}): () => void {
  const { selfId, groupId, initialVoters, driver } = options;
  const first = [...initialVoters].sort()[0];
  const status = driver.status(groupId);
  if (first !== selfId || initialVoters.length < 2 || status.term > 1 || status.leader !== "") return () => {};
  const quorum = Math.floor(initialVoters.length / 2) + 1;
  const startedAt = Date.now();
  const timer = setInterval(() => {
    const now = driver.status(groupId);
    if (now.leader !== "" || now.term > 1 || Date.now() - startedAt > firstElectionWaitMaxMs) {
      clearInterval(timer);
      return;
    }
    const connected = [...options.peerStates()].filter(([id, state]) => state === "connected" && initialVoters.includes(id)).length;
    if (connected + 1 >= quorum) {
      clearInterval(timer);
      driver.campaign(groupId);
    }
  }, firstElectionPollMs);
  return () => clearInterval(timer);
}
