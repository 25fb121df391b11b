/**
 * Untimed set-up of `npm run bench -- commits` on the epochd cluster: creates
 * the channels (CreateChannel with each channel's real epoch-0 GroupInfo and
 * handshake mode) and submits each channel's first commit, which brings in
 * members on the other two homeservers, so every measured commit needs
 * signatures from 2 of the 3 homeservers.
 */
import { HandshakeMode, ChannelService } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { unaryClient } from "../../src/api/grpc-service.ts";
import type { AuthMetadata } from "./bench-device.ts";
import type { CommitOutcome, CommitTarget } from "./commit-load.ts";
import type * as grpc from "@grpc/grpc-js";

/** Runs `task` on every item with at most `concurrency` in flight; rejects on the first failure. */
export async function forEachBounded<T>(items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      await task(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
}

/** A channel to create. */
export interface ChannelToCreate {
  readonly channelId: string;
  readonly initialGroupInfo: Uint8Array;
}

/** Creates `channels` through the leader at `address` as their creator (`auth`), `concurrency` at a time. */
export async function createChannels(
  address: string,
  credentials: grpc.ChannelCredentials,
  channelOptions: grpc.ChannelOptions,
  auth: AuthMetadata,
  channels: readonly ChannelToCreate[],
  mode: HandshakeMode.ENCRYPTED | HandshakeMode.PUBLIC,
  concurrency: number,
): Promise<void> {
  const client = unaryClient(ChannelService, address, credentials, channelOptions);
  try {
    await forEachBounded(channels, concurrency, async (channel) => {
      await client.createChannel({ channelId: channel.channelId, groupInfo: channel.initialGroupInfo, contentType: "text/plain", handshakeMode: mode }, { deadlineMs: 60_000, metadata: auth() });
    });
  } finally {
    client.close();
  }
}

/**
 * Submits each channel's commit building on `epochs[i]` once through `target` (retrying a refusal up to
 * `attemptsMax` times, after the server's retry delay) and advances `epochs`. Rejects when a channel's
 * commit is still refused after that.
 */
export async function firstCommits(target: CommitTarget, epochs: number[], concurrency: number, attemptsMax = 5): Promise<void> {
  const submit = (index: number) =>
    new Promise<CommitOutcome>((resolve) => {
      if (!target.submit(index, epochs[index]!, resolve)) resolve({ ok: false, error: new Error("no commit to submit") });
    });
  await forEachBounded(epochs, concurrency, async (_, index) => {
    for (let attempt = 1; ; attempt++) {
      const outcome = await submit(index);
      if (outcome.ok) {
        epochs[index] = epochs[index]! + 1;
        return;
      }
      if (attempt >= attemptsMax) throw new Error(`set-up commit of channel ${index} refused: ${outcome.error.message}`);
      await new Promise((r) => setTimeout(r, Math.min(2000, outcome.retryAfterMs ?? 100)));
    }
  });
}
