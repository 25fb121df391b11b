/** One SendSnapshot call's requests, checked one at a time by the receiver before anything reaches a Raft group. */
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { message, MessageType, type Message } from "../../src/raft/types.ts";
import { crc32c } from "../../src/storage/crc32c.ts";
import { defaultCodecLimits, encodeSnapshotChunk, encodeSnapshotEnd, encodeSnapshotHeader } from "../../src/transport/codec.ts";
import { zeroCounters } from "../../src/transport/counters.ts";
import { memorySnapshotSink, SnapshotReceiver } from "../../src/transport/snapshot-receiver.ts";

const confState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: [], learnersNext: [] };
const snapshot: Message = message({ type: MessageType.Snapshot, groupId: "g", from: "hs1", to: "hs2", term: 2, snapshot: { metadata: { index: 5, term: 2, confState }, data: new Uint8Array(0) } });

function receiver(maxSnapshotBytes = 1000) {
  const events: string[] = [];
  const r = new SnapshotReceiver("hs1", {
    selfId: "hs2", limits: defaultCodecLimits, counters: zeroCounters(), maxSnapshotBytes,
    openSink: () => {
      const inner = memorySnapshotSink();
      return { add: inner.add, finish: inner.finish, abort: () => { events.push("abort"); return inner.abort(); } };
    },
  });
  return { r, events };
}

/** Feeds `requests` in order; the first refusal, or the outcome of finish. */
async function run(r: SnapshotReceiver, requests: readonly Buffer[]) {
  for (const request of requests) {
    const refusal = await r.add(request);
    if (refusal !== null) return refusal;
  }
  return r.finish();
}

const data = [Uint8Array.of(1, 2, 3), Uint8Array.of(4, 5)];
const whole = Uint8Array.of(1, 2, 3, 4, 5);

describe("SnapshotReceiver", () => {
  it("delivers the message with the sink's data once the end's length and CRC match", async () => {
    const { r } = receiver();
    const result = await run(r, [encodeSnapshotHeader(snapshot), ...data.map(encodeSnapshotChunk), encodeSnapshotEnd(5, crc32c(whole))]);
    expect("code" in result).toBe(false);
    expect(Buffer.from((result as Message).snapshot!.data).equals(Buffer.from(whole))).toBe(true);
  });

  it("refuses a wrong CRC, a wrong length, a missing end, data after the end, and data before the header", async () => {
    const cases: Array<[string, Buffer[]]> = [
      ["CRC", [encodeSnapshotHeader(snapshot), ...data.map(encodeSnapshotChunk), encodeSnapshotEnd(5, crc32c(whole) ^ 1)]],
      ["length", [encodeSnapshotHeader(snapshot), ...data.map(encodeSnapshotChunk), encodeSnapshotEnd(6, crc32c(whole))]],
      ["no end", [encodeSnapshotHeader(snapshot), ...data.map(encodeSnapshotChunk)]],
      ["after end", [encodeSnapshotHeader(snapshot), encodeSnapshotEnd(0, 0), encodeSnapshotChunk(whole)]],
      ["no header", [encodeSnapshotChunk(whole)]],
    ];
    for (const [what, requests] of cases) {
      const { r } = receiver();
      const result = await run(r, requests);
      expect(result, what).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    }
  });

  it("refuses data beyond the size limit, and a header from another sender, before taking them", async () => {
    const { r, events } = receiver(4);
    expect(await run(r, [encodeSnapshotHeader(snapshot), ...data.map(encodeSnapshotChunk)])).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    await r.abort();
    expect(events).toEqual(["abort"]);
    const forged = receiver();
    expect(await run(forged.r, [encodeSnapshotHeader({ ...snapshot, from: "hs3" })])).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
  });
});
