/** `epochd start`: runs one homeserver in the foreground until SIGTERM or SIGINT. */
import { pino } from "pino";
import { ConfigError, loadNodeConfig } from "../node/config.ts";
import { Homeserver } from "../node/homeserver.ts";
import { UsageError, parseArgs } from "./args.ts";

const help = `usage: epochd start [--config FILE] [--id ID] [--data-dir DIR] [--peer-listen HOST:PORT]
                     [--client-listen HOST:PORT] [--metrics-listen HOST:PORT]
                     [--peers id=peerHost:port/clientHost:port,...] [--bootstrap true|false]
                     [--election-timeout-ms MS] [--heartbeat-interval-ms MS] [--tick-interval-ms MS]
                     [--insecure] [--tls-ca-cert FILE --tls-cert FILE --tls-key FILE] [--log-level LEVEL]
Every option may also come from the YAML file (camelCase keys) or the environment
(EPOCHD_ID, EPOCHD_ELECTION_TIMEOUT_MS, ...); flags win over the environment, which wins over the file.`;

export async function startCommand(args: string[]): Promise<number> {
  if (args.includes("--help")) {
    console.log(help);
    return 0;
  }
  let config;
  try {
    config = loadNodeConfig(parseArgs(args, new Set(["insecure"])).flags);
  } catch (error) {
    if (error instanceof ConfigError || error instanceof UsageError) {
      console.error(`epochd start: ${error.message}\n\n${help}`);
      return 2;
    }
    throw error;
  }
  const logger = pino({ level: config.logLevel, base: { hs: config.id } });
  let fatal: unknown;
  let wake: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (wake = resolve));
  const onFatal = (error: unknown) => {
    logger.fatal({ err: error }, "storage failure: stopping rather than serve wrong data");
    fatal = error;
    wake();
  };
  let homeserver: Homeserver;
  try {
    homeserver = await Homeserver.start(config, logger, onFatal, () => {
      logger.info("left the cluster: stopping");
      wake();
    });
  } catch (error) {
    logger.fatal({ err: error }, `cannot start: ${(error as Error).message}`);
    return 1;
  }
  process.once("SIGTERM", wake);
  process.once("SIGINT", wake);
  await stopped;
  logger.info("shutting down");
  await homeserver.stop();
  return fatal === undefined ? 0 : 1;
}
