/**
 * The ordering property of issue 4 on real processes: 3 homeservers (RocksDB, gRPC with TLS), real ts-mls
 * devices through the SDK, each on its own homeserver. fast-check draws 3 to 8 devices and steps of
 * operations issued concurrently (adds and removes by the owner, key updates, messages, and in the second
 * property members leaving through a standalone self-Remove proposal), so commits race on one epoch. After
 * the schedule every member syncs and checkRun asserts: one commit per epoch on each homeserver and the
 * same log on all three; valid certificates; one epoch and epoch authenticator for all members; messages
 * delivered. The cluster starts once; each run uses a fresh channel and fresh devices.
 *
 * Replay: FC_SEED=<seed> (printed at start and in a failure), plus FC_PATH=<path> from fast-check's report to
 * go straight to the shrunk counterexample; FC_RUNS=<n> to run more (or fewer); FC_NO_SHRINK=1 stops at the
 * first failure without shrinking it (shrinking replays many schedules on real processes: minutes).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unaryClient } from "../../src/api/grpc-service.ts";
import { ChannelService } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ProcessCluster } from "../integration/process-cluster.ts";
import { checkRun } from "./ordering-checks.ts";
import { OrderingRun, type ChannelRpc, type ClusterAccess } from "./ordering-harness.ts";
import { describeSchedule, homeserverIds, scheduleArbitrary, type HomeserverId, type Schedule, type ScheduleBounds } from "./ordering-schedule.ts";

const seed = process.env.FC_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.FC_SEED);
const runsOverride = process.env.FC_RUNS === undefined ? undefined : Number(process.env.FC_RUNS);
/** FC_PATH (from a failure's report, with its FC_SEED) replays the shrunk counterexample directly. */
const replayPath = process.env.FC_PATH;

let cluster: ProcessCluster;
let access: ClusterAccess;
const rawByHomeserver = new Map<HomeserverId, ChannelRpc>();

async function waitForDirectory(rpc: ChannelRpc, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const response = await rpc.listHomeservers({}, { deadlineMs: 1_000 }).catch(() => undefined);
    if (response !== undefined && response.homeservers.filter((h) => h.signingKey.length > 0).length >= count) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the directory did not list ${count} homeservers with keys within ${timeoutMs} ms`);
}

beforeAll(async () => {
  console.log(`ordering property: FC_SEED=${seed}`);
  cluster = await ProcessCluster.create(3);
  cluster.startAll();
  await cluster.waitForLeader(undefined, 60_000);
  const caPem = readFileSync(join(cluster.root, "certs", "ca.crt"));
  const clientAddresses = new Map(homeserverIds.map((id) => [id, cluster.get(id).clientAddress] as const));
  for (const [id, address] of clientAddresses) {
    rawByHomeserver.set(id, unaryClient(ChannelService, address, cluster.clientCredentials(), { "grpc.ssl_target_name_override": "localhost" }));
  }
  access = { clientAddresses, caPem };
  await waitForDirectory(rawByHomeserver.get("hs1")!, 3, 30_000);
}, 120_000);

afterAll(async () => {
  for (const rpc of rawByHomeserver.values()) rpc.close();
  await cluster?.close();
});

/** Totals over the runs of one property, to show the runs raced and to check they did. */
interface Totals {
  runs: number;
  steps: number;
  racingSteps: number;
  conflicts: number;
  acceptedCommits: number;
  epochs: number;
  messages: number;
  deliveries: number;
  leavesProposed: number;
  leavesApplied: number;
  removedMidStep: number;
  /** Sends whose outcome the sender could not learn (removed while an attempt went unanswered). */
  sendsOutcomeUnknown: number;
}

async function playAndCheck(schedule: Schedule, totals: Totals): Promise<void> {
  const run = new OrderingRun(schedule, access);
  try {
    await run.setUp();
    await run.play();
    const summary = await checkRun(run, rawByHomeserver);
    totals.runs++;
    totals.steps += run.stats.steps;
    totals.racingSteps += run.stats.racingSteps;
    totals.conflicts += run.submissions.conflicts;
    totals.acceptedCommits += run.submissions.accepted;
    totals.epochs += Number(summary.epoch);
    totals.messages += summary.messages;
    totals.deliveries += summary.deliveries;
    totals.leavesProposed += run.stats.leavesProposed;
    totals.leavesApplied += run.stats.leavesApplied;
    totals.removedMidStep += run.stats.removedMidStep;
    totals.sendsOutcomeUnknown += run.stats.sendsOutcomeUnknown;
  } catch (error) {
    console.log(`ordering property: run on ${run.channelId} failed (FC_SEED=${seed}):\n${describeSchedule(schedule)}\n${String(error)}`);
    throw error;
  } finally {
    run.close();
  }
}

async function checkProperty(bounds: ScheduleBounds, numRuns: number): Promise<Totals> {
  const totals: Totals = { runs: 0, steps: 0, racingSteps: 0, conflicts: 0, acceptedCommits: 0, epochs: 0, messages: 0, deliveries: 0, leavesProposed: 0, leavesApplied: 0, removedMidStep: 0, sendsOutcomeUnknown: 0 };
  const started = Date.now();
  await fc.assert(
    fc.asyncProperty(scheduleArbitrary(bounds), (schedule) => playAndCheck(schedule, totals)),
    { seed, numRuns: runsOverride ?? numRuns, endOnFailure: process.env.FC_NO_SHRINK === "1", ...(replayPath === undefined ? {} : { path: replayPath }) },
  );
  console.log(`ordering property (leaves: ${bounds.leaves}): ${JSON.stringify(totals)} in ${Date.now() - started} ms, FC_SEED=${seed}`);
  return totals;
}

/**
 * Runs per property in `npm test`: about 3 s each on a quiet 2-core machine and up to 7 s under a loaded
 * one, so both properties plus the cluster's start stay within about 90 s. FC_RUNS runs more.
 */
const racingRuns = 6;
const leavingRuns = 3;
/** A run takes seconds; allow 30 s each (and never less than 10 minutes) before vitest gives up. */
const timeoutMs = (runs: number): number => Math.max(600_000, (runsOverride ?? runs) * 30_000);

describe("channel ordering on a real 3-homeserver cluster (fast-check)", () => {
  it("racing adds, removes, key updates and messages: one commit per epoch, same log everywhere, one authenticator", async () => {
    const totals = await checkProperty({ devicesMin: 3, devicesMax: 8, stepsMax: 5, operationsPerStepMax: 4, leaves: false }, racingRuns);
    expect(totals.racingSteps).toBeGreaterThan(0);
    expect(totals.conflicts).toBeGreaterThan(0);
  }, timeoutMs(racingRuns));

  it("with members leaving by a standalone self-Remove proposal as well", async () => {
    const totals = await checkProperty({ devicesMin: 3, devicesMax: 8, stepsMax: 5, operationsPerStepMax: 4, leaves: true }, leavingRuns);
    expect(totals.leavesProposed).toBeGreaterThan(0);
  }, timeoutMs(leavingRuns));
});
