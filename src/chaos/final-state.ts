/**
 * Reads what every homeserver holds at the end of a chaos run: each channel's full event log
 * (ListEvents, page by page) and epoch (GetChannel), from that homeserver itself (no leader following),
 * retrying while it catches up after the heal. Both reads are linearizable (read index), so a homeserver
 * answers with at least everything committed before the read. The reads are made as a member of the
 * channel (`metadataOf`: a token valid at that homeserver).
 */
import type * as grpc from "@grpc/grpc-js";
import { EventKind } from "../gen/epochd/channel/v1/channel_pb.ts";
import { sha256, toHex } from "../client/mls-codec.ts";
import type { ChannelRpc } from "./chaos-cluster.ts";
import type { FinalEvent, HomeserverFinal } from "./history.ts";

const kinds: Partial<Record<EventKind, FinalEvent["kind"]>> = { [EventKind.COMMIT]: "commit", [EventKind.PROPOSAL]: "proposal", [EventKind.MESSAGE]: "message" };

async function readChannel(rpc: ChannelRpc, channelId: string, metadata: grpc.Metadata): Promise<{ epoch: number; events: FinalEvent[] }> {
  const state = await rpc.getChannel({ channelId }, { deadlineMs: 5_000, metadata });
  const events: FinalEvent[] = [];
  let after = 0n;
  for (let page = 0; page < 10_000; page++) {
    const response = await rpc.listEvents({ channelId, afterSequence: after, limit: 500 }, { deadlineMs: 5_000, metadata });
    for (const e of response.events) events.push({ sequence: Number(e.sequence), kind: kinds[e.kind] ?? "proposal", epoch: Number(e.epoch), hash: toHex(sha256(e.payload)) });
    const last = response.events.at(-1);
    if (last === undefined || last.sequence >= response.lastSequence) break;
    after = last.sequence;
  }
  return { epoch: Number(state.channel?.epoch ?? 0n), events };
}

/** Reads `channelIds` from one homeserver, retrying failures until `timeoutMs` passed. */
export async function readFinalState(rpc: ChannelRpc, channelIds: readonly string[], timeoutMs: number, metadataOf: (channelId: string) => Promise<grpc.Metadata>): Promise<HomeserverFinal> {
  const deadline = Date.now() + timeoutMs;
  let lastError = "";
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    try {
      const channels: Record<string, { epoch: number; events: FinalEvent[] }> = {};
      for (const id of channelIds) channels[id] = await readChannel(rpc, id, await metadataOf(id));
      return { ok: true, channels };
    } catch (error) {
      lastError = String((error as Error).message);
      await new Promise((r) => setTimeout(r, Math.min(1_000, 100 * 2 ** attempt)));
    }
  }
  return { ok: false, error: lastError };
}
