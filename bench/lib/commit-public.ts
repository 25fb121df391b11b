/**
 * Mode (b) of `npm run bench -- commits`: channels whose commits travel as
 * PublicMessage and are fully checked by every homeserver against the ratchet
 * tree (signature, proposals, role, and the next GroupInfo's tree, context and
 * signature). Such commits cannot be faked cheaply, and a real one costs the
 * client tens of milliseconds, so they are generated before the clusters start,
 * in child processes (one per core), as chains: per channel, the commit adding
 * two members on the other homeservers, then key updates. The result can be
 * cached on disk (v8 serialization) so a re-run skips the generation.
 */
import { fork } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { deserialize, serialize } from "node:v8";
import { verifyInitialGroupInfo, verifyNextGroupInfo, verifyPublicCommit } from "../../src/mls/index.ts";
import type { CommitMaterial } from "./commit-targets.ts";
import { signalPid } from "./proc.ts";

/** One mode (b) channel: its creation GroupInfo and its commits, `commits[e]` building on epoch e. */
export interface PublicChannel {
  readonly channelId: string;
  readonly groupId: Uint8Array;
  readonly initialGroupInfo: Uint8Array;
  /** commits[0] adds bob@hs2 and carol@hs3 (with a Welcome); the rest are alice@hs1's key updates. */
  readonly commits: readonly CommitMaterial[];
}

/** What a worker is asked to generate. */
export interface PublicWorkerRequest {
  readonly channelIds: readonly string[];
  readonly keyUpdates: number;
  readonly commitBytes: number;
}

/** What a worker sends back: one message per channel, then done (or failed). */
export type PublicWorkerReply = { kind: "channel"; channel: PublicChannel } | { kind: "done" } | { kind: "failed"; reason: string };

/** A generated (or loaded) set of mode (b) channels and how it was obtained. */
export interface PublicChannelSet {
  readonly channels: PublicChannel[];
  /** Wall-clock time the generation took, or undefined when loaded from the cache. */
  readonly generatedMs: number | undefined;
  readonly cachePath: string | undefined;
}

const workerPath = new URL("./commit-public-worker.ts", import.meta.url);

/** Generates the channels in `workers` child processes; rejects after `timeoutMs` (and kills them). */
function generate(channelIds: readonly string[], keyUpdates: number, commitBytes: number, workers: number, timeoutMs: number, progress: (done: number) => void): Promise<PublicChannel[]> {
  const shares = Array.from({ length: workers }, (_, w) => channelIds.filter((_, i) => i % workers === w)).filter((s) => s.length > 0);
  const channels = new Map<string, PublicChannel>();
  const children = shares.map(() => fork(workerPath, [], { execArgv: ["--import", "tsx"], serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  const stopAll = () => {
    for (const child of children) {
      if (child.connected) child.disconnect();
      if (child.pid !== undefined && child.exitCode === null) signalPid(child.pid, "SIGTERM");
    }
  };
  return new Promise<PublicChannel[]>((resolve, reject) => {
    let finished = 0;
    const timer = setTimeout(() => {
      stopAll();
      reject(new Error(`mode (b) generation took over ${timeoutMs} ms (${channels.size} of ${channelIds.length} channels done)`));
    }, timeoutMs);
    const fail = (reason: string) => {
      clearTimeout(timer);
      stopAll();
      reject(new Error(`mode (b) generation failed: ${reason}`));
    };
    children.forEach((child, w) => {
      child.on("message", (reply: PublicWorkerReply) => {
        if (reply.kind === "failed") return fail(reply.reason);
        if (reply.kind === "channel") {
          channels.set(reply.channel.channelId, reply.channel);
          progress(channels.size);
          return;
        }
        if (++finished < children.length) return;
        clearTimeout(timer);
        stopAll();
        resolve(channelIds.map((id) => channels.get(id)!));
      });
      child.on("exit", (code) => {
        if (finished < children.length && channels.size < channelIds.length) fail(`worker exited with code ${code}`);
      });
      child.send({ channelIds: shares[w]!, keyUpdates, commitBytes } satisfies PublicWorkerRequest);
    });
  });
}

/** Options of {@link publicChannels}. */
export interface PublicChannelOptions {
  readonly prefix: string;
  readonly count: number;
  readonly keyUpdates: number;
  readonly commitBytes: number;
  readonly workers: number;
  /** Where to keep the generated set between runs; undefined for no cache. */
  readonly cachePath: string | undefined;
  readonly regenerate: boolean;
  readonly timeoutMs: number;
}

/**
 * The mode (b) channels: from the cache when it holds exactly the set asked for (and `regenerate` is off),
 * else generated now (and cached).
 */
export async function publicChannels(options: PublicChannelOptions, progress: (done: number) => void): Promise<PublicChannelSet> {
  const channelIds = Array.from({ length: options.count }, (_, i) => `${options.prefix}-${String(i).padStart(5, "0")}`);
  if (options.cachePath !== undefined && !options.regenerate && existsSync(options.cachePath)) {
    const cached = deserialize(readFileSync(options.cachePath)) as { channels: PublicChannel[]; keyUpdates: number; commitBytes: number };
    const fits = cached.channels.length === options.count && cached.keyUpdates === options.keyUpdates && cached.commitBytes === options.commitBytes;
    if (fits && cached.channels.every((c, i) => c.channelId === channelIds[i])) return { channels: cached.channels, generatedMs: undefined, cachePath: options.cachePath };
  }
  const started = performance.now();
  const channels = await generate(channelIds, options.keyUpdates, options.commitBytes, options.workers, options.timeoutMs, progress);
  const generatedMs = performance.now() - started;
  if (options.cachePath !== undefined) {
    mkdirSync(dirname(options.cachePath), { recursive: true });
    writeFileSync(options.cachePath, serialize({ channels, keyUpdates: options.keyUpdates, commitBytes: options.commitBytes }));
  }
  return { channels, generatedMs, cachePath: options.cachePath };
}

/**
 * Runs the homeservers' full checks (src/mls) on the first `epochs` commits of `channel` and throws on the
 * first refusal, so a generation mistake shows before the clusters start.
 */
export async function selfCheckPublicChannel(channel: PublicChannel, epochs: number): Promise<void> {
  const initial = await verifyInitialGroupInfo(channel.groupId, channel.initialGroupInfo);
  if (!initial.ok) throw new Error(`mode (b) initial GroupInfo refused: ${initial.reason}`);
  let view = initial.view;
  for (let epoch = 0; epoch < Math.min(epochs, channel.commits.length); epoch++) {
    const material = channel.commits[epoch]!;
    const verified = await verifyPublicCommit(view, material.commit, []);
    if (!verified.ok) throw new Error(`mode (b) commit for epoch ${epoch} refused: ${verified.reason}`);
    const next = await verifyNextGroupInfo(view, verified, material.nextGroupInfo);
    if (!next.ok) throw new Error(`mode (b) GroupInfo for epoch ${epoch + 1} refused: ${next.reason}`);
    view = next.view;
  }
}
