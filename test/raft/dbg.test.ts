import { it, expect } from "vitest";
import { TestCluster, text } from "./harness.ts";
import { ConfChangeType, Role } from "../../src/raft/types.ts";
import { MemoryStorage } from "../../src/raft/memory-storage.ts";
const change = (type: ConfChangeType, nodeId: string) => ({ steps: [{ type, nodeId }], leaveJoint: false });
it("dbg: a fresh copy of the group's first voter replays the bootstrap and is its only voter", () => {
  const c = new TestCluster(["a"], { maxMessageBytes: 1 });
  c.elect("a");
  const a = c.get("a");
  for (const id of ["b", "c"]) {
    c.add(id);
    a.node.proposeConfChange(change(ConfChangeType.AddLearner, id)); c.stabilize();
    a.node.proposeConfChange(change(ConfChangeType.AddVoter, id)); c.stabilize();
  }
  for (let i = 0; i < 5; i++) { a.node.propose(text(`w${i}`)); c.stabilize(); }
  a.node.transferLeadership("b"); c.stabilize();
  expect(c.leaders()).toEqual(["b"]);
  const b = c.get("b");
  // a loses its copy: b removes it and adds it back with a new one.
  c.isolate("a");
  b.node.proposeConfChange(change(ConfChangeType.RemoveNode, "a")); c.stabilize();
  const fresh = c.add("a", new MemoryStorage());
  b.node.proposeConfChange(change(ConfChangeType.AddVoter, "a")); 
  // Deliver only the first Append entries to fresh a.
  c.heal();
  for (let round = 0; round < 6; round++) { c.processReadies(); c.deliver(); }
  console.log("fresh a", fresh.node.status().applied, fresh.node.status().lastIndex, fresh.node.confState());
  c.isolate("a");
  for (let i = 0; i < 50; i++) { fresh.node.tick(); c.stabilize(); }
  console.log("fresh a role", fresh.node.status().role, fresh.node.status().term, fresh.node.status().commit, "b commit", b.node.status().commit);
});
