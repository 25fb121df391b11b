/**
 * Property: under 64 claims, applied through the real apply path on RocksDB in apply rounds of random
 * sizes (a round = entries committed together, the way concurrent claims reach the state machine) and
 * interleaved with publishes, no one-time KeyPackage is handed out twice, each device's queue is drained
 * in order before its last resort is used, and what is left in storage is exactly what was not handed out.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Device } from "../../src/client/device.ts";
import { encodeKeyPackageCommand } from "../../src/keypackages/keypackage-command.ts";
import type { KeyPackageResult } from "../../src/keypackages/keypackage-state.ts";
import { registerUser } from "../identity/dir-fixtures.ts";
import { MachineHarness, testHomeserver } from "../identity/machine-harness.ts";
import { propertySeed } from "../storage/helpers.ts";

const hs1 = testHomeserver("hs1");
const claimsPerRun = 64;

const scenario = fc.record({
  queues: fc.array(fc.nat({ max: 8 }), { minLength: 1, maxLength: 3 }),
  lastResort: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
  roundSizes: fc.array(fc.integer({ min: 1, max: claimsPerRun }), { minLength: 1, maxLength: 8 }),
  /** A late publish of this many more KeyPackages for device 0, after this many claims. */
  latePublish: fc.record({ count: fc.nat({ max: 4 }), afterClaims: fc.nat({ max: claimsPerRun }) }),
});

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("KeyPackage claims", () => {
  let h: MachineHarness;
  let run = 0;

  beforeAll(async () => {
    h = await MachineHarness.open([hs1]);
    await registerUser(h, "claimer@hs1", ["claimer@hs1"], hs1);
  });
  afterAll(async () => {
    await h?.close();
  });

  it("never hands out a KeyPackage twice under 64 concurrent claims", async () => {
    const seed = propertySeed("keypackage claims");
    await fc.assert(
      fc.asyncProperty(scenario, async ({ queues, lastResort, roundSizes, latePublish }) => {
        run += 1;
        const user = `u${run}@hs1`;
        const ids = queues.map((_, i) => `u${run}.d${i}@hs1`);
        const devices: Device[] = await registerUser(h, user, ids, hs1);
        const published = new Map<string, string[]>(ids.map((id) => [id, []]));
        const lastResorts = new Map<string, string>();
        const payloads: Uint8Array[] = [];
        for (const [i, device] of devices.entries()) {
          const kps = await Promise.all(Array.from({ length: queues[i]! }, () => device.publishKeyPackage()));
          const last = lastResort[i] ? await device.publishKeyPackage() : new Uint8Array(0);
          if (kps.length === 0 && last.byteLength === 0) continue;
          published.get(device.id)!.push(...kps.map(hex));
          if (last.byteLength > 0) lastResorts.set(device.id, hex(last));
          payloads.push(encodeKeyPackageCommand({ command: { case: "publish", value: { deviceId: device.id, keyPackages: kps, lastResort: last, nowMs: BigInt(Date.now()) } } }));
        }
        expect((await h.applyAll(payloads)).every((r) => (r as KeyPackageResult).ok)).toBe(true);
        await h.applyAll([encodeKeyPackageCommand({ command: { case: "setAllowList", value: { deviceId: ids[0]!, allowedUserNames: ["claimer@hs1"] } } })]);
        const late = await Promise.all(Array.from({ length: latePublish.count }, () => devices[0]!.publishKeyPackage()));
        const claim = encodeKeyPackageCommand({ command: { case: "claim", value: { claimerDeviceId: "claimer@hs1", userName: user, viaChannelId: "", nowMs: BigInt(Date.now()) } } });
        const latePayload = encodeKeyPackageCommand({ command: { case: "publish", value: { deviceId: ids[0]!, keyPackages: late, lastResort: new Uint8Array(0), nowMs: BigInt(Date.now()) } } });
        // The log: 64 claims with the late publish somewhere among them, cut into apply rounds.
        const log: Array<"claim" | "publish"> = Array.from({ length: claimsPerRun }, () => "claim");
        if (late.length > 0) log.splice(latePublish.afterClaims, 0, "publish");
        const results: KeyPackageResult[] = [];
        for (let at = 0, r = 0; at < log.length; r++) {
          const size = roundSizes[r % roundSizes.length]!;
          const round = log.slice(at, at + size);
          at += round.length;
          const applied = await h.applyAll(round.map((kind) => (kind === "claim" ? claim : latePayload)));
          round.forEach((kind, i) => kind === "claim" && results.push(applied[i] as KeyPackageResult));
        }
        // Model: each device's queue in publish order, then its last resort forever.
        const queue = new Map([...published].map(([id, kps]) => [id, [...kps]]));
        const handed = new Set<string>();
        let claimsSeen = 0;
        let lateDone = late.length === 0;
        for (const result of results) {
          if (!lateDone && claimsSeen === latePublish.afterClaims) {
            queue.get(ids[0]!)!.push(...late.map(hex));
            lateDone = true;
          }
          claimsSeen += 1;
          if (!result.ok || result.kind !== "claimed") throw new Error(`claim refused: ${JSON.stringify(result)}`);
          for (const id of ids) {
            const got = result.keyPackages.find((k) => k.deviceId === id);
            const expected = queue.get(id)!.shift();
            if (expected !== undefined) {
              expect(got).toMatchObject({ lastResort: false });
              expect(hex(got!.keyPackage)).toBe(expected);
              expect(handed.has(expected)).toBe(false);
              handed.add(expected);
            } else if (lastResorts.has(id)) {
              expect(got).toMatchObject({ lastResort: true });
              expect(hex(got!.keyPackage)).toBe(lastResorts.get(id));
            } else {
              expect(got).toBeUndefined();
              expect(result.missingDeviceIds).toContain(id);
            }
          }
        }
        if (!lateDone) queue.get(ids[0]!)!.push(...late.map(hex)); // published after the last claim
        for (const id of ids) {
          const left = await h.machine.keyPackages.stock(id, (k) => h.machine.keyPackageGet(k));
          expect(left.available).toBe(queue.get(id)!.length);
        }
      }),
      { seed, numRuns: 12 },
    );
  }, 120_000);
});
