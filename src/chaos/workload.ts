/**
 * The chaos workload: real ts-mls devices driving channels through the SDK (Device, ChannelClient,
 * Channel), each device on its own homeserver's client API, every call recorded (recording-transport.ts).
 * Per channel a seeded loop picks: application messages, racing key updates from two members at once,
 * single updates, adding and removing a spare member, linearizable epoch reads (GetChannel) and syncs.
 * Some channels keep all members on one homeserver (their certificates need that homeserver alone),
 * the others spread them over all homeservers. Every device publishes its identity record and calls as
 * itself; the raw reads (epoch reads, the final state) are made as the channel's owner, a member throughout.
 */
import * as grpc from "@grpc/grpc-js";
import { Channel, type Received } from "../client/channel.ts";
import { ChannelClient } from "../client/channel-client.ts";
import { Device } from "../client/device.ts";
import { DeviceSession } from "../client/session.ts";
import { Prng } from "../sim/prng.ts";
import type { ChannelRpc } from "./chaos-cluster.ts";
import type { Delivery, HistoryRecorder } from "./history.ts";
import { recordingTransport } from "./recording-transport.ts";
import type { ChannelTransport } from "../client/transport.ts";

/** What the workload needs from the cluster. */
export interface WorkloadAccess {
  readonly homeservers: readonly string[];
  clientAddress(homeserver: string): string;
  /** A raw ChannelService client of one homeserver (for the epoch reads). */
  channels(homeserver: string): ChannelRpc;
  readonly caPem: Buffer;
}

/** Shape of the workload. */
export interface WorkloadOptions {
  readonly seed: number;
  readonly channels: number;
  /** Members besides the owner at the start (plus one spare added and removed over time). */
  readonly membersPerChannel: number;
  /** Every n-th channel keeps all its members on the owner's homeserver (0: none). */
  readonly localChannelEvery: number;
  /** Pause between two actions of a channel, drawn in [min, max]. */
  readonly actionPauseMsMin: number;
  readonly actionPauseMsMax: number;
}

/** Counters of the workload, for the report. */
export interface WorkloadStats {
  actions: Record<string, number>;
  /** SDK errors by name (timeouts during faults are expected; they are what `unknown` outcomes are). */
  errors: Record<string, number>;
}

/** One device of a channel. */
class Member {
  handle: Channel | undefined;
  delivery: Delivery | undefined;
  welcome: Uint8Array | undefined;
  constructor(
    readonly device: Device,
    readonly homeserver: string,
    readonly client: ChannelClient,
    readonly transport: ChannelTransport,
  ) {}

  get id(): string {
    return this.device.id;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for `work` at most `ms` (the work itself goes on; its failures are ignored). */
async function withTimeout(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** One channel's devices and loop. */
class ChannelDriver {
  readonly members: Member[] = [];
  private readonly ownerSessions = new Map<string, DeviceSession>();
  private readonly prng: Prng;
  private messages = 0;

  constructor(
    readonly channelId: string,
    private readonly index: number,
    private readonly options: WorkloadOptions,
    private readonly access: WorkloadAccess,
    private readonly history: HistoryRecorder,
    private readonly stats: WorkloadStats,
  ) {
    this.prng = new Prng(options.seed, 100 + index);
  }

  private get owner(): Member {
    return this.members[0]!;
  }

  private get spare(): Member {
    return this.members[this.members.length - 1]!;
  }

  async setUp(): Promise<void> {
    const hs = this.access.homeservers;
    const ownerHs = hs[this.index % hs.length]!;
    const local = this.options.localChannelEvery > 0 && this.index % this.options.localChannelEvery === 0;
    for (let j = 0; j <= this.options.membersPerChannel + 1; j++) {
      const homeserver = local ? ownerHs : hs[(this.index + j) % hs.length]!;
      const device = await Device.create(`c${this.index}d${j}@${homeserver}`);
      const clientOptions = { device, address: this.access.clientAddress(homeserver), tls: { caPem: this.access.caPem }, tlsServerName: "localhost", attemptsMax: 8, callDeadlineMs: 5_000 };
      const client = await ChannelClient.registered(clientOptions);
      this.members.push(new Member(device, homeserver, client, recordingTransport(client, device.id, this.history)));
    }
    this.owner.handle = await Channel.create(this.owner.device, this.owner.transport, this.channelId);
    this.track(this.owner);
    const initial = this.members.slice(1, 1 + this.options.membersPerChannel);
    const outcome = await this.owner.handle.addMembers(await Promise.all(initial.map((m) => m.device.publishKeyPackage())));
    for (const m of initial) {
      m.handle = await Channel.join(m.device, m.transport, this.channelId, outcome.welcome!);
      this.track(m);
    }
  }

  private track(member: Member): void {
    const delivery: Delivery = { device: member.id, channel: this.channelId, joinedAtEpoch: Number(member.handle!.epoch()), items: [], caughtUp: false };
    member.delivery = delivery;
    this.history.deliveries.push(delivery);
  }

  private current(): Member[] {
    return this.members.filter((m) => m.handle?.isMember() === true);
  }

  private count(name: string, table: Record<string, number>): void {
    table[name] = (table[name] ?? 0) + 1;
  }

  /** Syncs `member`, recording what it received; drops the handle once the member is removed. */
  async sync(member: Member): Promise<Received[]> {
    const handle = member.handle;
    if (handle === undefined) return [];
    const received = await handle.sync();
    for (const r of received) {
      if (r.kind === "pending") continue;
      member.delivery!.items.push({ sequence: Number(r.sequence), kind: r.kind, epoch: Number(r.epoch), ...(r.kind === "message" ? { text: new TextDecoder().decode(r.data) } : {}) });
    }
    if (!handle.isMember()) member.handle = undefined;
    return received;
  }

  private async send(member: Member): Promise<void> {
    const text = `c${this.index}-m${this.messages++}-${member.id}`;
    const sequence = await member.handle!.send(new TextEncoder().encode(text));
    this.history.sent(this.channelId, Number(sequence), text);
  }

  /** The homeservers hosting the channel's group: those of the owner's current tree (the owner, a member to the end, included). */
  hosts(): string[] {
    const members = this.owner.handle?.members() ?? [];
    return [...new Set([this.owner.homeserver, ...members.map((m) => m.deviceId.slice(m.deviceId.indexOf("@") + 1))])].sort();
  }

  private async read(): Promise<void> {
    const homeserver = this.prng.pick(this.hosts());
    const op = this.history.invoke(`reader-${homeserver}`, "read", this.channelId);
    try {
      const metadata = await this.ownerMetadata(homeserver);
      const response = await this.access.channels(homeserver).getChannel({ channelId: this.channelId }, { deadlineMs: 3_000, metadata });
      this.history.complete(op, "ok", { epoch: Number(response.channel?.epoch ?? 0n) });
    } catch (error) {
      this.history.complete(op, "fail", { error: String((error as Error).message) });
    }
  }

  private async membership(): Promise<void> {
    const owner = this.owner.handle!;
    const spare = this.spare;
    const inTree = owner.members().some((m) => m.deviceId === spare.id);
    if (!inTree) {
      spare.welcome = undefined;
      const outcome = await owner.addMembers([await spare.device.publishKeyPackage()]);
      spare.welcome = outcome.welcome;
    }
    if (spare.handle === undefined && spare.welcome !== undefined && owner.members().some((m) => m.deviceId === spare.id)) {
      spare.handle = await Channel.join(spare.device, spare.transport, this.channelId, spare.welcome);
      spare.welcome = undefined;
      this.track(spare);
      return;
    }
    if (inTree) {
      await owner.removeMembers([spare.id]);
      spare.welcome = undefined;
      if (spare.handle !== undefined) await this.sync(spare).catch(() => undefined);
    }
  }

  private async act(): Promise<void> {
    const roll = this.prng.float();
    const current = this.current();
    if (this.owner.handle === undefined || current.length === 0) return;
    const pick = () => this.prng.pick(current);
    if (roll < 0.4) {
      this.count("message", this.stats.actions);
      await this.send(pick());
    } else if (roll < 0.6 && current.length >= 2) {
      this.count("race", this.stats.actions);
      const [a, b] = this.prng.shuffle([...current]);
      const results = await Promise.allSettled([a!.handle!.updateKeys(), b!.handle!.updateKeys()]);
      for (const r of results) if (r.status === "rejected") throw r.reason;
    } else if (roll < 0.7) {
      this.count("update", this.stats.actions);
      await pick().handle!.updateKeys();
    } else if (roll < 0.8) {
      this.count("membership", this.stats.actions);
      await this.membership();
    } else if (roll < 0.9) {
      this.count("read", this.stats.actions);
      await this.read();
    } else {
      this.count("sync", this.stats.actions);
      await this.sync(pick());
    }
  }

  /**
   * Runs actions until `stopped()` (each action's failures are counted, not fatal). An action still
   * running `abandonAfterMs` after the stop is no longer waited for: its operations stay in the history
   * without an answer (unknown), as for a client that gave up.
   */
  async loop(stopped: () => boolean, abandonAfterMs: number): Promise<void> {
    let giveUp: Promise<void> | undefined;
    for (let n = 0; n < 1_000_000 && !stopped(); n++) {
      try {
        const step = (async () => {
          await this.act();
          const current = this.current();
          if (current.length > 0) await this.sync(this.prng.pick(current));
        })();
        giveUp ??= this.abandonment(stopped, abandonAfterMs);
        const finished = await Promise.race([step.then(() => true), giveUp.then(() => false)]);
        if (!finished) {
          step.catch(() => undefined);
          this.count("abandoned at the end", this.stats.errors);
          return;
        }
      } catch (error) {
        this.count((error as Error).name === "Error" ? (error as Error).message.slice(0, 60) : (error as Error).name, this.stats.errors);
      }
      await sleep(this.prng.range(this.options.actionPauseMsMin, this.options.actionPauseMsMax));
    }
  }

  /** Resolves `afterMs` after `stopped()` first holds (polled every 100 ms). */
  private async abandonment(stopped: () => boolean, afterMs: number): Promise<void> {
    while (!stopped()) await sleep(100);
    await sleep(afterMs);
  }

  /** Syncs every member until all are at the owner's epoch with nothing pending (bounded). */
  async settle(roundsMax: number, deadlineMs: number): Promise<void> {
    for (let round = 0; round < roundsMax && Date.now() < deadlineMs; round++) {
      const results = await Promise.allSettled(this.members.map((m) => this.sync(m)));
      const pending = results.some((r) => r.status === "rejected" || r.value.some((x) => x.kind === "pending"));
      const epoch = this.owner.handle?.epoch();
      if (!pending && this.current().every((m) => m.handle!.epoch() === epoch)) break;
      await sleep(300);
    }
  }

  /** A last sync of every member; marks the members whose sync succeeded as caught up. */
  async finish(): Promise<void> {
    await Promise.all(
      this.members.map(async (m) => {
        try {
          const received = await this.sync(m);
          if (m.handle !== undefined && m.delivery !== undefined && !received.some((r) => r.kind === "pending")) m.delivery.caughtUp = true;
        } catch (error) {
          this.count(`final sync: ${(error as Error).name}`, this.stats.errors);
        }
      }),
    );
  }

  /** Call metadata authenticating the owner at `homeserver` (a token is valid only where it was issued). */
  ownerMetadata(homeserver: string): Promise<grpc.Metadata> {
    let session = this.ownerSessions.get(homeserver);
    if (session === undefined) {
      const owner = this.owner.device;
      session = new DeviceSession({
        deviceId: owner.id,
        sign: (message) => owner.sign(message),
        address: this.access.clientAddress(homeserver),
        credentials: grpc.credentials.createSsl(this.access.caPem),
        channelOptions: { "grpc.ssl_target_name_override": "localhost", "grpc.enable_http_proxy": 0 },
        callDeadlineMs: 3_000,
      });
      this.ownerSessions.set(homeserver, session);
    }
    return session.metadata();
  }

  close(): void {
    for (const m of this.members) m.client.close();
    for (const session of this.ownerSessions.values()) session.close();
  }
}

/** The whole workload: its channels, set up before faults start. */
export class Workload {
  readonly stats: WorkloadStats = { actions: {}, errors: {} };
  private readonly drivers: ChannelDriver[] = [];

  constructor(
    private readonly options: WorkloadOptions,
    private readonly access: WorkloadAccess,
    private readonly history: HistoryRecorder,
  ) {}

  /** Creates the channels and their first members (before any fault). */
  async setUp(runTag: string): Promise<void> {
    for (let i = 0; i < this.options.channels; i++) {
      const driver = new ChannelDriver(`chaos-${runTag}-c${i}`, i, this.options, this.access, this.history, this.stats);
      await driver.setUp();
      this.drivers.push(driver);
    }
  }

  /** The channel ids. */
  channelIds(): string[] {
    return this.drivers.map((d) => d.channelId);
  }

  /** The homeservers hosting `channelId`'s group now (see ChannelDriver.hosts). */
  hostsOf(channelId: string): string[] {
    return this.drivers.find((d) => d.channelId === channelId)?.hosts() ?? [];
  }

  /** Call metadata for raw reads of `channelId` at `homeserver`, as the channel's owner. */
  readerMetadata(channelId: string, homeserver: string): Promise<grpc.Metadata> {
    const driver = this.drivers.find((d) => d.channelId === channelId);
    if (driver === undefined) return Promise.reject(new Error(`no channel ${channelId} in the workload`));
    return driver.ownerMetadata(homeserver);
  }

  /** Runs every channel's loop until `stopped()`; actions still running `abandonAfterMs` later are left. */
  async run(stopped: () => boolean, abandonAfterMs = 15_000): Promise<void> {
    await Promise.all(this.drivers.map((d) => d.loop(stopped, abandonAfterMs)));
  }

  /** Brings every device up to date after the faults are healed. */
  async settle(roundsMax = 30, budgetMs = 60_000): Promise<void> {
    const deadlineMs = Date.now() + budgetMs;
    await withTimeout(Promise.all(this.drivers.map((d) => d.settle(roundsMax, deadlineMs))), budgetMs + 30_000);
  }

  /** The last sync of every device, after the final state was read (devices not done in `budgetMs` stay not caught up). */
  async finish(budgetMs = 60_000): Promise<void> {
    await withTimeout(Promise.all(this.drivers.map((d) => d.finish())), budgetMs);
  }

  close(): void {
    for (const d of this.drivers) d.close();
  }
}
