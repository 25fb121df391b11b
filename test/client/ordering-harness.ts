/**
 * The runner of the channel-ordering property: plays a Schedule with real SDK devices (ts-mls, gRPC with
 * TLS) against a real 3-homeserver cluster, each device talking to its own homeserver, then checks what
 * the cluster and the devices ended with (see checkRun). One OrderingRun per fast-check run: a fresh
 * channel id, fresh devices and connections, nothing shared with other runs but the cluster itself.
 */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { createProposal, encodeMlsMessage, type ClientState } from "ts-mls";
import type { UnaryClient } from "../../src/api/grpc-service.ts";
import { Channel, type Received } from "../../src/client/channel.ts";
import { ChannelClient } from "../../src/client/channel-client.ts";
import { Device } from "../../src/client/device.ts";
import { DeviceSession } from "../../src/client/session.ts";
import { sha256, toHex } from "../../src/client/mls-codec.ts";
import { NotAMemberError, type ChannelTransport, type SubmitOutcome } from "../../src/client/transport.ts";
import type { ChannelService } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import type { HomeserverId, Operation, Schedule, Step } from "./ordering-schedule.ts";

/** A raw ChannelService client (no leader following, no retries). */
export type ChannelRpc = UnaryClient<(typeof ChannelService)["method"]>;

/** How the runner reaches the cluster. */
export interface ClusterAccess {
  /** Client API address of each homeserver. */
  readonly clientAddresses: ReadonlyMap<HomeserverId, string>;
  readonly caPem: Buffer;
}

/** What the devices saw of submissions: every commit they sent and every answer they got. */
export class SubmissionLog {
  /** Hex commit hash -> the next-epoch GroupInfo submitted with it. */
  readonly nextGroupInfos = new Map<string, Uint8Array>();
  /** The GroupInfo the channel was created with (epoch 0). */
  initialGroupInfo: Uint8Array | undefined;
  /** Epoch -> hex hashes the cluster answered as THE commit of that epoch (accepted, or a conflict's winner). */
  readonly answered = new Map<bigint, Set<string>>();
  conflicts = 0;
  accepted = 0;

  private answer(epoch: bigint, hash: string): void {
    const known = this.answered.get(epoch) ?? new Set<string>();
    known.add(hash);
    this.answered.set(epoch, known);
  }

  /** Wraps a transport so every creation, submission and answer is recorded here. */
  wrap(transport: ChannelTransport): ChannelTransport {
    return {
      directory: (refresh) => transport.directory(refresh),
      createChannel: async (request) => {
        if (request.groupInfo !== undefined) this.initialGroupInfo = request.groupInfo;
        return transport.createChannel(request);
      },
      submitCommit: async (request): Promise<SubmitOutcome> => {
        const commit = request.commit ?? new Uint8Array();
        this.nextGroupInfos.set(toHex(sha256(commit)), request.nextGroupInfo ?? new Uint8Array());
        const outcome = await transport.submitCommit(request);
        if (outcome.kind === "accepted") {
          this.accepted++;
          this.answer(request.epoch ?? 0n, toHex(sha256(commit)));
        } else {
          this.conflicts++;
          const winner = outcome.conflict.winner;
          if (winner !== undefined) this.answer(winner.epoch, toHex(sha256(winner.commit)));
        }
        return outcome;
      },
      sendMessage: (request) => transport.sendMessage(request),
      listEvents: (request) => transport.listEvents(request),
      getCommit: (channelId, epoch) => transport.getCommit(channelId, epoch),
    };
  }
}

/** One device of a run, with its connection to its own homeserver and its current channel handle. */
export class Participant {
  /** The current handle; replaced when the device is added again after a removal. */
  handle: Channel | undefined;
  /** Everything the current handle's syncs returned, in order. */
  received: Received[] = [];
  /** The epoch in which this device's own-removal proposal was accepted, while it may still take effect. */
  leavingSince: bigint | undefined;
  constructor(
    readonly device: Device,
    readonly homeserver: HomeserverId,
    private clientOrUndefined: ChannelClient | undefined,
    private transportOrUndefined: ChannelTransport | undefined,
  ) {}

  /** Uses `client` (registered for this device) from now on, its submissions recorded in `log`. */
  connect(client: ChannelClient, log: SubmissionLog): void {
    this.clientOrUndefined = client;
    this.transportOrUndefined = log.wrap(client);
  }

  close(): void {
    this.clientOrUndefined?.close();
  }

  get client(): ChannelClient {
    if (this.clientOrUndefined === undefined) throw new Error(`${this.id} is not connected`);
    return this.clientOrUndefined;
  }

  get transport(): ChannelTransport {
    if (this.transportOrUndefined === undefined) throw new Error(`${this.id} is not connected`);
    return this.transportOrUndefined;
  }

  get id(): string {
    return this.device.id;
  }

  /** Syncs the current handle (if any) and keeps what it received. */
  async sync(): Promise<Received[]> {
    if (this.handle === undefined) return [];
    const received = await this.handle.sync();
    this.received.push(...received);
    return received;
  }
}

/** An application message a device sent, by channel sequence. */
export interface SentMessage {
  readonly sender: string;
  readonly text: string;
}

/** Counters of one run, summed over runs by the test. */
export interface RunStats {
  steps: number;
  /** Steps in which two or more different devices issued commits at once. */
  racingSteps: number;
  operations: number;
  /** Operations skipped because no candidate existed when the step started. */
  skipped: number;
  /** Operations that ended with NotAMemberError because a racing commit removed their device. */
  removedMidStep: number;
  leavesProposed: number;
  /** Devices that left: a commit included their own-removal proposal. */
  leavesApplied: number;
  /** Sends that ended with NotAMemberError after an unanswered attempt (see OrderingRun.maybeSent). */
  sendsOutcomeUnknown: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

interface Task {
  readonly label: string;
  readonly actor: Participant;
  readonly commits: boolean;
  readonly run: () => Promise<void>;
}

/** One fast-check run: a fresh channel and fresh devices playing one schedule. */
export class OrderingRun {
  readonly channelId = `order-${toHex(new Uint8Array(randomBytes(6)))}`;
  private readonly ownerSessions = new Map<HomeserverId, DeviceSession>();
  readonly submissions = new SubmissionLog();
  readonly sent = new Map<bigint, SentMessage>();
  /**
   * Messages whose send ended with NotAMemberError after an unanswered attempt
   * (`outcomeUnknown`): each may be in the log, once, or not at all.
   */
  readonly maybeSent: SentMessage[] = [];
  readonly stats: RunStats = { steps: 0, racingSteps: 0, operations: 0, skipped: 0, removedMidStep: 0, leavesProposed: 0, leavesApplied: 0, sendsOutcomeUnknown: 0 };
  readonly participants: Participant[] = [];
  private messageCount = 0;

  constructor(
    readonly schedule: Schedule,
    private readonly access: ClusterAccess,
  ) {}

  get owner(): Participant {
    const owner = this.participants[0];
    if (owner === undefined) throw new Error("the run has no devices");
    return owner;
  }

  private ownerHandle(): Channel {
    const handle = this.owner.handle;
    if (handle === undefined) throw new Error("the owner has no channel handle");
    return handle;
  }

  /** Creates the devices, the channel (owner on hs1) and the up-front members. */
  async setUp(): Promise<void> {
    for (const [index, homeserver] of this.schedule.homeservers.entries()) {
      const address = this.access.clientAddresses.get(homeserver);
      if (address === undefined) throw new Error(`no address for ${homeserver}`);
      // Device ids are first come first served in the cluster: each run's devices get their own (d0.<run>@hs1).
      const device = await Device.create(`d${index}.${this.channelId.slice("order-".length)}@${homeserver}`);
      this.participants.push(new Participant(device, homeserver, undefined, undefined));
    }
    await Promise.all(
      this.participants.map(async (p) => {
        const address = this.access.clientAddresses.get(p.homeserver)!;
        p.connect(await ChannelClient.registered({ device: p.device, address, tls: { caPem: this.access.caPem }, tlsServerName: "localhost", attemptsMax: 40 }), this.submissions);
      }),
    );
    this.owner.handle = await Channel.create(this.owner.device, this.owner.transport, this.channelId);
    const initial = this.participants.slice(1, 1 + this.schedule.initialMembers);
    if (initial.length === 0) return;
    const keyPackages = await Promise.all(initial.map((p) => p.device.publishKeyPackage()));
    const outcome = await this.ownerHandle().addMembers(keyPackages);
    if (outcome.welcome === undefined) throw new Error("the initial add produced no Welcome");
    const welcome = outcome.welcome;
    await Promise.all(initial.map(async (p) => (p.handle = await Channel.join(p.device, p.transport, this.channelId, welcome))));
  }

  /** The device ids in the owner's current tree. */
  memberIds(): Set<string> {
    return new Set(this.ownerHandle().members().map((m) => m.deviceId));
  }

  /** Drops handles of devices no longer members; forgets leave proposals a later commit dropped. */
  refreshMembership(): void {
    const members = this.memberIds();
    const epoch = this.ownerHandle().epoch();
    for (const p of this.participants) {
      if (p.handle !== undefined && !members.has(p.id)) {
        if (p.leavingSince !== undefined) this.stats.leavesApplied++;
        p.handle = undefined;
        p.received = [];
      }
      if (p.handle === undefined || (p.leavingSince !== undefined && p.leavingSince < epoch)) p.leavingSince = undefined;
    }
  }

  /** Plays every step, then brings every remaining member up to date. */
  async play(): Promise<void> {
    for (const step of this.schedule.steps) await this.playStep(step);
    await this.settle();
  }

  private async playStep(step: Step): Promise<void> {
    await this.owner.sync();
    if (step.syncFirst) await Promise.all(this.participants.slice(1).map((p) => p.sync()));
    this.refreshMembership();
    const tasks = this.resolve(step.operations, this.ownerHandle().epoch());
    this.stats.steps++;
    this.stats.operations += tasks.length;
    if (new Set(tasks.filter((t) => t.commits).map((t) => t.actor.id)).size >= 2) this.stats.racingSteps++;
    const results = await Promise.allSettled(tasks.map((t) => t.run()));
    const removedActors: Participant[] = [];
    for (const [i, result] of results.entries()) {
      if (result.status === "fulfilled") continue;
      const task = tasks[i]!;
      if (result.reason instanceof NotAMemberError) removedActors.push(task.actor);
      else throw new Error(`step ${this.stats.steps - 1}, ${task.label}: ${String(result.reason)}`, { cause: result.reason });
    }
    await this.owner.sync();
    const members = this.memberIds();
    for (const actor of removedActors) {
      if (members.has(actor.id)) throw new Error(`${actor.id} was told it is no longer a member, but the owner's tree still holds it`);
      this.stats.removedMidStep++;
    }
  }

  /** Turns operations into tasks against the membership at step start; operations without a candidate are skipped. */
  private resolve(operations: readonly Operation[], stepEpoch: bigint): Task[] {
    const members = this.memberIds();
    const current = this.participants.filter((p) => p.handle !== undefined && members.has(p.id));
    const chosen = new Set<string>();
    const tasks: Task[] = [];
    for (const op of operations) {
      const candidates = this.candidates(op.kind, current, members, chosen);
      const target = candidates[op.pick % Math.max(1, candidates.length)];
      if (target === undefined) {
        this.stats.skipped++;
        continue;
      }
      if (op.kind === "add" || op.kind === "remove" || op.kind === "leave") chosen.add(`${op.kind}:${target.id}`);
      tasks.push(this.task(op, target, stepEpoch));
    }
    return tasks;
  }

  private candidates(kind: Operation["kind"], current: Participant[], members: Set<string>, chosen: Set<string>): Participant[] {
    const settled = current.filter((p) => p.leavingSince === undefined);
    switch (kind) {
      case "add":
        return this.participants.filter((p) => !members.has(p.id) && !chosen.has(`add:${p.id}`));
      case "remove":
        return current.filter((p) => p !== this.owner && !chosen.has(`remove:${p.id}`));
      case "leave":
        return settled.filter((p) => p !== this.owner && !chosen.has(`leave:${p.id}`) && !chosen.has(`remove:${p.id}`));
      case "update":
      case "send":
        return settled;
    }
  }

  private task(op: Operation, target: Participant, stepEpoch: bigint): Task {
    const owner = this.ownerHandle();
    const label = `${op.kind} ${target.id}`;
    switch (op.kind) {
      case "add":
        return { label, actor: this.owner, commits: true, run: () => this.add(target) };
      case "remove":
        return { label, actor: this.owner, commits: true, run: async () => void (await owner.removeMembers([target.id])) };
      case "update":
        return { label, actor: target, commits: true, run: async () => void (await handleOf(target).updateKeys()) };
      case "leave":
        return { label, actor: target, commits: false, run: () => this.leave(target) };
      case "send":
        return { label, actor: target, commits: false, run: () => this.send(target, stepEpoch) };
    }
  }

  private async add(target: Participant): Promise<void> {
    const keyPackage = await target.device.publishKeyPackage();
    const outcome = await this.ownerHandle().addMembers([keyPackage]);
    if (outcome.welcome === undefined) throw new Error(`adding ${target.id} produced no Welcome (attempts ${outcome.attempts})`);
    target.handle = await Channel.join(target.device, target.transport, this.channelId, outcome.welcome);
    target.received = [];
    target.leavingSince = undefined;
  }

  private async send(sender: Participant, stepEpoch: bigint): Promise<void> {
    // A device far behind would encrypt in an epoch outside the server's window; catch up to the step first.
    if (handleOf(sender).epoch() < stepEpoch) await sender.sync();
    const body = `m${this.messageCount++} from ${sender.id}`;
    try {
      const sequence = await handleOf(sender).send(text(body));
      this.sent.set(sequence, { sender: sender.id, text: body });
    } catch (error) {
      if (error instanceof NotAMemberError && error.outcomeUnknown) {
        this.maybeSent.push({ sender: sender.id, text: body });
        this.stats.sendsOutcomeUnknown++;
      }
      throw error;
    }
  }

  /**
   * Proposes the device's own removal as a standalone PublicMessage proposal; the next commit of another
   * member that has read it includes it by reference. The SDK has no leave(), so this reads the handle's
   * ts-mls state (a private field) and submits through the device's ChannelClient.
   */
  private async leave(leaver: Participant): Promise<void> {
    for (let attempt = 0; attempt < 6; attempt++) {
      const state = Reflect.get(handleOf(leaver), "state") as ClientState;
      if (!handleOf(leaver).isMember()) throw new NotAMemberError(this.channelId);
      const made = await createProposal(state, true, { proposalType: "remove", remove: { removed: state.privatePath.leafIndex } }, leaver.device.impl);
      const request = { channelId: this.channelId, epoch: state.groupContext.epoch, proposal: encodeMlsMessage(made.message) };
      const answer = await leaver.client.submitProposal(request);
      if (answer.kind === "accepted") {
        leaver.leavingSince = state.groupContext.epoch;
        this.stats.leavesProposed++;
        return;
      }
      await leaver.sync();
    }
    throw new Error(`${leaver.id}: its leave proposal lost its epoch 6 times`);
  }

  /** Syncs every member until all are at the owner's epoch with nothing pending (bounded in rounds). */
  async settle(roundsMax = 20): Promise<void> {
    for (let round = 0; round < roundsMax; round++) {
      await this.owner.sync();
      this.refreshMembership();
      const pending = (await Promise.all(this.participants.map((p) => p.sync()))).flat().some((r) => r.kind === "pending");
      this.refreshMembership();
      const epoch = this.ownerHandle().epoch();
      if (!pending && this.current().every((p) => handleOf(p).epoch() === epoch)) return;
      await sleep(100);
    }
  }

  /** Participants with a handle (the members, after settle). */
  current(): Participant[] {
    return this.participants.filter((p) => p.handle !== undefined);
  }

  /** Closes every connection the run opened. */
  /**
   * Call metadata that authenticates the owner (a member to the end) at `homeserver`, for the checks'
   * raw reads of each homeserver's log (a token is valid only where it was issued).
   */
  async ownerMetadata(homeserver: HomeserverId): Promise<grpc.Metadata> {
    let session = this.ownerSessions.get(homeserver);
    if (session === undefined) {
      const device = this.owner.device;
      const address = this.access.clientAddresses.get(homeserver)!;
      session = new DeviceSession({ deviceId: device.id, sign: (m) => device.sign(m), address, credentials: grpc.credentials.createSsl(this.access.caPem), channelOptions: { "grpc.ssl_target_name_override": "localhost" } });
      this.ownerSessions.set(homeserver, session);
    }
    return session.metadata();
  }

  close(): void {
    for (const p of this.participants) p.close();
    for (const session of this.ownerSessions.values()) session.close();
  }
}

function handleOf(p: Participant): Channel {
  if (p.handle === undefined) throw new Error(`${p.id} has no channel handle`);
  return p.handle;
}
