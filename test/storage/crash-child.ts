/**
 * The writer process of the kill -9 test: runs {@link CrashWorkload} with synced
 * writes and reports each finished operation on stdout with a synchronous write,
 * so every "ack N" the parent reads was finished before the kill.
 * Usage: crash-child.ts <dir> <seed> <operationsMax>
 */
import { writeSync } from "node:fs";
import { StorageEngine } from "../../src/storage/storage-engine.ts";
import { CrashWorkload } from "./crash-workload.ts";

const [dir, seedText, operationsMaxText] = process.argv.slice(2);
if (dir === undefined || seedText === undefined || operationsMaxText === undefined) {
  throw new Error("usage: crash-child.ts <dir> <seed> <operationsMax>");
}
const engine = await StorageEngine.open(dir, { sync: true });
const workload = await CrashWorkload.start(engine, Number(seedText));
writeSync(1, "ready\n");
const operationsMax = Number(operationsMaxText);
for (let step = 0; step < operationsMax; step++) {
  await workload.step(step);
  writeSync(1, `ack ${step}\n`);
}
await engine.close();
writeSync(1, "done\n");
