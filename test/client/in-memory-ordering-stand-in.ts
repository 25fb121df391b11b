/**
 * InMemoryOrderingStandIn: a stand-in for the cluster used ONLY by the SDK's unit tests of its
 * conflict/retry logic. It implements just the ordering rule (a commit is accepted iff it builds on the
 * channel's current epoch; otherwise the answer is a CommitConflict carrying the epoch's winner) and signs
 * certificates with real Ed25519 keys of test homeservers. It checks no MLS at all: the real checks live in
 * src/mls and src/channel, and the integration test runs the SDK against real homeservers.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { KeyObject } from "node:crypto";
import { decodeRatchetTree } from "ts-mls/ratchetTree.js";
import {
  ChannelEventSchema,
  ChannelStateSchema,
  CommitConflictSchema,
  CommittedEpochSchema,
  EventKind,
  ListEventsResponseSchema,
  type Certificate,
  type ChannelEvent,
  type ChannelState,
  type CommittedEpoch,
  type CreateChannelRequestSchema,
  type ListEventsRequestSchema,
  type ListEventsResponse,
  type SendMessageRequestSchema,
  type SubmitCommitRequestSchema,
} from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { decodeWholeMessage, sha256, treeHomeservers } from "../../src/client/mls-codec.ts";
import type { ChannelTransport, ClusterDirectory, SubmitOutcome } from "../../src/client/transport.ts";
import { directoryOf, makeHomeservers, signCertificate, type TestHomeserver } from "./homeserver-keys.ts";

interface StandInChannel {
  epoch: bigint;
  /** Homeservers of the current GroupInfo's tree: the voters of the current epoch. */
  voters: string[];
  readonly events: ChannelEvent[];
  readonly commits: Map<bigint, CommittedEpoch>;
}

/** Chooses which homeservers sign a certificate, so a test can make the stand-in misbehave. */
export type SignerPolicy = (voters: readonly string[], all: ReadonlyMap<string, TestHomeserver>) => { voters: string[]; signers: TestHomeserver[] };

const honestSigners: SignerPolicy = (voters, all) => ({ voters: [...voters], signers: voters.map((v) => all.get(v)!) });

function votersOfGroupInfo(bytes: Uint8Array): { epoch: bigint; voters: string[] } {
  const message = decodeWholeMessage(bytes, "GroupInfo");
  if (message.wireformat !== "mls_group_info") throw new Error("not a GroupInfo");
  const extension = message.groupInfo.extensions.find((e) => e.extensionType === "ratchet_tree");
  const tree = extension === undefined ? undefined : decodeRatchetTree(extension.extensionData, 0)?.[0];
  if (tree === undefined) throw new Error("GroupInfo without a ratchet tree");
  return { epoch: message.groupInfo.groupContext.epoch, voters: treeHomeservers(tree) };
}

/** The in-memory stand-in of the epoch ordering rule (unit tests only). */
export class InMemoryOrderingStandIn implements ChannelTransport {
  readonly homeservers = makeHomeservers(["hs1", "hs2", "hs3"]);
  private readonly keys: Map<string, KeyObject> = directoryOf(this.homeservers);
  private readonly channels = new Map<string, StandInChannel>();
  private logIndex = 0n;
  private held: { count: number; waiting: (() => void)[] } | undefined;
  /** Every submission's outcome, in order: for assertions. */
  readonly submissions: { epoch: bigint; commitHash: string; accepted: boolean }[] = [];
  signerPolicy: SignerPolicy = honestSigners;
  /** When set, the next commit submission is ordered normally but its answer is lost (the call throws). */
  loseNextAnswer = false;

  /** The next `count` commit submissions wait until all `count` arrived, then are ordered in arrival order. */
  holdNextCommits(count: number): void {
    this.held = { count, waiting: [] };
  }

  directory(): Promise<ClusterDirectory> {
    const clientAddresses = new Map([...this.homeservers.keys()].map((id) => [id, ""] as const));
    return Promise.resolve({ clusterId: "stand-in-cluster", keys: this.keys, clientAddresses });
  }

  private channel(channelId: string): StandInChannel {
    const channel = this.channels.get(channelId);
    if (channel === undefined) throw new Error(`no channel ${channelId}`);
    return channel;
  }

  createChannel(request: MessageInitShape<typeof CreateChannelRequestSchema>): Promise<ChannelState> {
    const channelId = request.channelId ?? "";
    if (this.channels.has(channelId)) throw new Error("channel exists");
    const { epoch, voters } = votersOfGroupInfo(request.groupInfo ?? new Uint8Array());
    this.channels.set(channelId, { epoch, voters, events: [], commits: new Map() });
    return Promise.resolve(create(ChannelStateSchema, { channelId, epoch, homeservers: voters, lastSequence: 0n }));
  }

  private async waitForHeldPeers(): Promise<void> {
    const held = this.held;
    if (held === undefined) return;
    await new Promise<void>((resolve) => {
      held.waiting.push(resolve);
      if (held.waiting.length === held.count) {
        this.held = undefined;
        for (const release of held.waiting) release();
      }
    });
  }

  private certify(channelId: string, channel: StandInChannel, commit: Uint8Array): Certificate {
    this.logIndex++;
    const { voters, signers } = this.signerPolicy(channel.voters, this.homeservers);
    return signCertificate({ clusterId: "stand-in-cluster", channelId, epoch: channel.epoch, commitHash: sha256(commit), logIndex: this.logIndex }, voters, signers);
  }

  async submitCommit(request: MessageInitShape<typeof SubmitCommitRequestSchema>): Promise<SubmitOutcome> {
    await this.waitForHeldPeers();
    const channelId = request.channelId ?? "";
    const channel = this.channel(channelId);
    const commit = request.commit ?? new Uint8Array();
    const epoch = request.epoch ?? 0n;
    const commitHash = Buffer.from(sha256(commit)).toString("hex");
    if (epoch !== channel.epoch) {
      this.submissions.push({ epoch, commitHash, accepted: false });
      const winner = channel.commits.get(epoch);
      return { kind: "conflict", conflict: create(CommitConflictSchema, { channelId, currentEpoch: channel.epoch, ...(winner === undefined ? {} : { winner }) }) };
    }
    const certificate = this.certify(channelId, channel, commit);
    const welcome = request.welcome ?? new Uint8Array();
    channel.commits.set(epoch, create(CommittedEpochSchema, { epoch, commit, certificate, welcome }));
    channel.events.push(create(ChannelEventSchema, { sequence: BigInt(channel.events.length + 1), kind: EventKind.COMMIT, epoch, payload: commit, certificate, welcome }));
    channel.epoch = epoch + 1n;
    channel.voters = votersOfGroupInfo(request.nextGroupInfo ?? new Uint8Array()).voters;
    this.submissions.push({ epoch, commitHash, accepted: true });
    if (this.loseNextAnswer) {
      this.loseNextAnswer = false;
      throw new Error("stand-in: the answer was lost");
    }
    return { kind: "accepted", epoch: channel.epoch, certificate };
  }

  /**
   * A standalone proposal (MLSMessage bytes) for `epoch`: appended to the log when `epoch` is the channel's
   * current one, refused (false) otherwise. Like sendMessage, not checked at all.
   */
  submitProposal(channelId: string, epoch: bigint, proposal: Uint8Array): boolean {
    const channel = this.channel(channelId);
    if (epoch !== channel.epoch) return false;
    channel.events.push(create(ChannelEventSchema, { sequence: BigInt(channel.events.length + 1), kind: EventKind.PROPOSAL, epoch, payload: proposal }));
    return true;
  }

  sendMessage(request: MessageInitShape<typeof SendMessageRequestSchema>): Promise<bigint> {
    const channel = this.channel(request.channelId ?? "");
    const sequence = BigInt(channel.events.length + 1);
    channel.events.push(create(ChannelEventSchema, { sequence, kind: EventKind.MESSAGE, epoch: request.epoch ?? 0n, payload: request.message ?? new Uint8Array() }));
    return Promise.resolve(sequence);
  }

  listEvents(request: MessageInitShape<typeof ListEventsRequestSchema>): Promise<ListEventsResponse> {
    const channel = this.channel(request.channelId ?? "");
    const after = Number(request.afterSequence ?? 0n);
    const limit = request.limit === undefined || request.limit === 0 ? 100 : request.limit;
    const events = channel.events.slice(after, after + limit);
    return Promise.resolve(create(ListEventsResponseSchema, { events, lastSequence: BigInt(channel.events.length) }));
  }

  getCommit(channelId: string, epoch: bigint): Promise<CommittedEpoch | undefined> {
    return Promise.resolve(this.channel(channelId).commits.get(epoch));
  }

  /** The current epoch of a channel as the stand-in orders it. */
  epochOf(channelId: string): bigint {
    return this.channel(channelId).epoch;
  }
}
