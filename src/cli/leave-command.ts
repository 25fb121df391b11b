/**
 * `epochd leave`: the homeserver at --admin leaves its cluster. It refuses
 * when the voters left behind would not form a reachable quorum; otherwise
 * it is marked "left" in the directory, hands over the leadership of every
 * group it leads, is removed, and stops. Rejoining needs a new invite.
 */
import { ConfigError } from "../node/config.ts";
import { UsageError, parseArgs } from "./args.ts";
import { describeError, operatorTarget, type OperatorTarget } from "./invite-command.ts";

const help = `usage: epochd leave [--config FILE] [--admin HOST:PORT] [--data DIR]
Makes a homeserver leave its cluster, then stop. With --config FILE (that homeserver's config) it asks that
homeserver as itself; otherwise --admin names the homeserver's peer address and the operator certificate
of the local cluster in DIR (./data) is used.`;

export async function leaveCommand(args: string[]): Promise<number> {
  if (args.includes("--help")) {
    console.log(help);
    return 0;
  }
  let target: OperatorTarget;
  try {
    const { flags } = parseArgs(args);
    if (!flags.has("config") && !flags.has("admin")) throw new UsageError("name the homeserver that leaves: --config FILE or --admin HOST:PORT");
    target = operatorTarget(flags);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(`epochd leave: ${error.message}\n\n${help}`);
      return 2;
    }
    throw error;
  }
  const client = target.client();
  try {
    const left = await client.leave({}, { deadlineMs: 60_000 });
    console.log(`left the cluster (removed at index ${left.index}); the homeserver is stopping`);
    return 0;
  } catch (error) {
    console.error(`epochd leave: ${describeError(error)}`);
    return 1;
  } finally {
    client.close();
  }
}
