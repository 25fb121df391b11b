/**
 * The `epochd` command line: one subcommand per file, loaded on demand so that
 * `epochd sim` does not pay for gRPC and RocksDB, and `epochd start` does not
 * pay for the simulator.
 */

/** A subcommand: parses its own arguments and resolves to a process exit code. */
export type Command = (args: string[]) => Promise<number>;

const commands: Record<string, { summary: string; load: () => Promise<Command> }> = {
  start: {
    summary: "run one homeserver in the foreground",
    load: async () => (await import("./start-command.ts")).startCommand,
  },
  cluster: {
    summary: "cluster up: run a local cluster of homeservers on 127.0.0.1; cluster down: stop it",
    load: async () => (await import("./cluster-command.ts")).clusterCommand,
  },
  invite: {
    summary: "mint a single-use invite token for a new homeserver",
    load: async () => (await import("./invite-command.ts")).inviteCommand,
  },
  join: {
    summary: "join a cluster with an invite token, then run as that homeserver",
    load: async () => (await import("./join-command.ts")).joinCommand,
  },
  leave: {
    summary: "make a homeserver leave its cluster (after handing its groups over), then stop",
    load: async () => (await import("./leave-command.ts")).leaveCommand,
  },
  demo: {
    summary: "against the running local cluster: three devices, a channel, messages and a commit race",
    load: async () => (await import("./demo-command.ts")).demoCommand,
  },
  status: {
    summary: "show each homeserver's role, term, commit and applied index, and the leader",
    load: async () => (await import("./status-command.ts")).statusCommand,
  },
  chaos: {
    summary: "fault injection on a local cluster of real processes, then a history check and an HTML report",
    load: async () => (await import("../chaos/chaos-command.ts")).chaosCommand,
  },
  sim: {
    summary: "run the deterministic Raft cluster simulator under faults",
    load: async () => (await import("./sim-command.ts")).simCommand,
  },
  "channel-sim": {
    summary: "run the multi-group simulator (one Raft group per channel) under faults",
    load: async () => (await import("./channel-sim-command.ts")).channelSimCommand,
  },
};

function usage(): string {
  const lines = ["usage: epochd <command> [options]", "", "commands:"];
  for (const [name, { summary }] of Object.entries(commands)) {
    lines.push(`  ${name.padEnd(12)} ${summary}`);
  }
  lines.push("", "Run `epochd <command> --help` for a command's options.");
  return lines.join("\n");
}

/** Runs the command named by `argv[0]` and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    console.error(`epochd: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return (await command.load())(rest);
}
