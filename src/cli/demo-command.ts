/**
 * `epochd demo` (`npm run demo`): against the running local cluster, Alice
 * (hs1) creates a channel, adds Bob (hs2) and Carol (hs3); they exchange
 * messages; Bob and Carol race conflicting commits, exactly one is accepted
 * and the other converges by retrying; every device prints its epoch and
 * epoch authenticator.
 */
import { resolve } from "node:path";
import { runDemo } from "../client/demo.ts";
import { parseArgs } from "./args.ts";
import { readLocalCluster } from "./cluster-layout.ts";

export async function demoCommand(args: string[]): Promise<number> {
  const { flags } = parseArgs(args);
  const dataDir = resolve(flags.get("data") ?? "./data");
  const cluster = readLocalCluster(dataDir);
  if (cluster === undefined || cluster.homeservers.length < 3) {
    console.error(`epochd demo: needs a running local cluster of 3 homeservers (start one with \`npx epochd cluster up\`; looked in ${dataDir})`);
    return 1;
  }
  const result = await runDemo(cluster.homeservers.map((h) => h.clientAddress), cluster.insecure ? "insecure" : cluster.caCert);
  const authenticators = new Set(result.devices.map((d) => d.epochAuthenticatorHex));
  console.log(authenticators.size === 1 ? "every device is on the same epoch with the same epoch authenticator" : "DEVICES DISAGREE");
  return authenticators.size === 1 ? 0 : 1;
}
