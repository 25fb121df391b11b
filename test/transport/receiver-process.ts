/**
 * A receiving homeserver in its own process, for the cross-process
 * throughput measurement. Env: TLS_DIR (certificates of hs1/hs2 made by
 * makeTestCertificates), EXPECT (messages to wait for), ECHO_TO (optional:
 * hs1's address; every message is then sent back to hs1 at once). Prints
 * "ready <address>" once bound, "at <n>" at every 10,000 messages, and
 * "done <messages>" when all arrived.
 */
import { join } from "node:path";
import { pino } from "pino";
import { PeerTransport } from "../../src/transport/peer-transport.ts";
import { loadTlsMaterial } from "../../src/transport/tls.ts";
import { startServer } from "./harness.ts";

const dir = join(process.env["TLS_DIR"] ?? "", "ca");
const expected = Number(process.env["EXPECT"] ?? "0");
const credentials = await loadTlsMaterial({ caCertPath: join(dir, "ca.crt"), keyPath: join(dir, "hs2.key"), certPath: join(dir, "hs2.crt") });
const { server, address } = await startServer(credentials);
let received = 0;
const echoTo = process.env["ECHO_TO"];
const transport = new PeerTransport({
  selfId: "hs2", peers: new Map(echoTo === undefined ? [] : [["hs1", echoTo]]), credentials, logger: pino({ level: "warn" }),
  isKnownPeer: (id) => id === "hs1",
  onMessages: (_from, messages) => {
    if (echoTo !== undefined) transport.send(messages.map((m) => ({ ...m, from: "hs2", to: "hs1" })));
    const before = received;
    received += messages.length;
    if (Math.floor(received / 10_000) > Math.floor(before / 10_000)) process.stdout.write(`at ${Math.floor(received / 10_000) * 10_000}\n`);
    if (received >= expected) {
      process.stdout.write(`done ${received}\n`);
      void transport.close().then(() => server.forceShutdown());
    }
  },
});
transport.register(server);
process.stdout.write(`ready ${address}\n`);
setTimeout(() => process.exit(2), 60_000).unref();
