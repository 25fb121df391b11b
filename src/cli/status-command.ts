/** `epochd status`: each homeserver's role, term, commit and applied index, its peers' match index, and the leader. */
import { resolve } from "node:path";
import { HomeserverStatus as ProtoHomeserverStatus, Role as ProtoRole, type StatusResponse } from "../gen/epochd/admin/v1/admin_pb.ts";
import { adminClient } from "./admin-client.ts";
import { parseArgs } from "./args.ts";
import { readLocalCluster } from "./cluster-layout.ts";

const help = `usage: epochd status [--data DIR] [--json] [--all-groups]
Asks every homeserver of the local cluster in DIR (./data) for its status: the
cluster group (directory), or with --all-groups every group it hosts (channels too).`;

const roleNames: Record<number, string> = {
  [ProtoRole.FOLLOWER]: "follower",
  [ProtoRole.PRE_CANDIDATE]: "pre-candidate",
  [ProtoRole.CANDIDATE]: "candidate",
  [ProtoRole.LEADER]: "leader",
};

/** One homeserver's status as printed (and as JSON). */
export interface HomeserverStatus {
  id: string;
  reachable: boolean;
  error?: string;
  groups: Array<{ groupId: string; role: string; term: number; commit: number; applied: number; leader: string; match: Record<string, number>; hibernating: boolean; votesHeld: boolean }>;
  peers: Record<string, string>;
  /** The cluster directory as this homeserver applied it. */
  directory?: Array<{ id: string; status: string; membership: string; peerAddress: string; clientAddress: string }>;
}

const directoryStatusNames: Record<number, string> = {
  [ProtoHomeserverStatus.ACTIVE]: "active",
  [ProtoHomeserverStatus.LEFT]: "left",
  [ProtoHomeserverStatus.BLOCKED]: "blocked",
};

function toStatus(id: string, response: StatusResponse): HomeserverStatus {
  return {
    id,
    reachable: true,
    groups: response.groups.map((g) => ({
      groupId: g.groupId,
      role: roleNames[g.role] ?? "unknown",
      term: Number(g.term),
      commit: Number(g.commitIndex),
      applied: Number(g.appliedIndex),
      leader: g.leaderId,
      match: Object.fromEntries(g.progress.map((p) => [p.nodeId, Number(p.matchIndex)])),
      hibernating: g.hibernating,
      votesHeld: g.votesHeld,
    })),
    peers: Object.fromEntries(response.peers.map((p) => [p.nodeId, ["unspecified", "connected", "connecting", "backoff"][p.streamState] ?? "unknown"])),
    directory: response.directory.map((d) => ({
      id: d.nodeId,
      status: directoryStatusNames[d.status] ?? "unknown",
      membership: d.voter ? "voter" : d.learner ? "learner" : "none",
      peerAddress: d.peerAddress,
      clientAddress: d.clientAddress,
    })),
  };
}

export async function statusCommand(args: string[]): Promise<number> {
  if (args.includes("--help")) {
    console.log(help);
    return 0;
  }
  const { flags } = parseArgs(args, new Set(["json", "all-groups"]));
  const allGroups = flags.has("all-groups");
  const dataDir = resolve(flags.get("data") ?? "./data");
  const cluster = readLocalCluster(dataDir);
  if (cluster === undefined) {
    console.error(`epochd status: no cluster.json in ${dataDir}; start one with \`epochd cluster up\``);
    return 1;
  }
  const statuses = await Promise.all(
    cluster.homeservers.map(async (h): Promise<HomeserverStatus> => {
      const client = adminClient(cluster, h.peerAddress);
      try {
        return toStatus(h.id, await client.status({ groupIds: allGroups ? [] : ["cluster"] }, { deadlineMs: 2000 }));
      } catch (error) {
        return { id: h.id, reachable: false, error: (error as Error).message, groups: [], peers: {} };
      } finally {
        client.close();
      }
    }),
  );
  const leaders = statuses.filter((s) => s.groups.some((g) => g.groupId === "cluster" && g.role === "leader")).map((s) => s.id);
  if (flags.has("json")) {
    console.log(JSON.stringify({ leader: leaders.length === 1 ? leaders[0] : null, leaders, homeservers: statuses }));
  } else {
    console.log("HOMESERVER  GROUP     ROLE       TERM  COMMIT  APPLIED  LEADER  PEER MATCH");
    for (const s of statuses) {
      if (!s.reachable) console.log(`${s.id.padEnd(11)} unreachable: ${s.error ?? ""}`);
      for (const g of s.groups) {
        const match = g.hibernating ? "(hibernating)" : Object.entries(g.match).map(([id, m]) => `${id}=${m}`).join(" ") + (g.votesHeld ? " (not voting: checking with its peers after a new data directory)" : "");
        console.log(`${s.id.padEnd(11)} ${g.groupId.padEnd(9)} ${g.role.padEnd(10)} ${String(g.term).padStart(4)}  ${String(g.commit).padStart(6)}  ${String(g.applied).padStart(7)}  ${g.leader.padEnd(6)}  ${match}`);
      }
    }
    console.log(leaders.length === 1 ? `leader: ${leaders[0]}` : `leaders: ${leaders.length === 0 ? "none" : leaders.join(", ")}`);
    // Joined homeservers are not in cluster.json: the directory lists every one.
    const directory = statuses.find((s) => s.reachable)?.directory ?? [];
    if (directory.length > 0) console.log("\nDIRECTORY   STATUS   MEMBER   PEER                   CLIENT");
    for (const d of directory) console.log(`${d.id.padEnd(11)} ${d.status.padEnd(8)} ${d.membership.padEnd(8)} ${d.peerAddress.padEnd(22)} ${d.clientAddress}`);
  }
  return statuses.every((s) => s.reachable) ? 0 : 1;
}
