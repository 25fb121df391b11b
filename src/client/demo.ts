/**
 * The SDK demo: Alice (homeserver 1) creates a channel and adds Bob (homeserver 2) and Carol (homeserver
 * 3); they exchange messages; Bob and Carol race conflicting key updates from the same epoch, exactly one
 * is accepted and the other converges through the SDK's retry; at the end every device prints its epoch
 * and epoch authenticator, which must all be equal. Each device publishes its identity record at its own
 * homeserver, talks to it as an authenticated device and follows leader hints. The integration test runs
 * this same story against real homeserver processes.
 */
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { Channel } from "./channel.ts";
import { ChannelClient } from "./channel-client.ts";
import { Device } from "./device.ts";
import { toHex } from "./mls-codec.ts";
import type { ChannelTransport, SubmitOutcome } from "./transport.ts";

/** One device's final view, as printed at the end of the demo. */
export interface DemoDeviceResult {
  readonly deviceId: string;
  readonly epoch: bigint;
  readonly epochAuthenticatorHex: string;
}

/** What the demo did, for callers (tests) that check it. */
export interface DemoResult {
  readonly channelId: string;
  readonly devices: readonly DemoDeviceResult[];
  /** Who won the race and after how many submissions the loser's update landed. */
  readonly race: { readonly winner: string; readonly loser: string; readonly loserAttempts: number };
  /** Messages each device received, as text. */
  readonly received: ReadonlyMap<string, readonly string[]>;
  /** The three devices' channel handles (Alice, Bob, Carol), for callers that go on. */
  readonly channels: readonly Channel[];
}

/**
 * Lines up rival submissions: the next `count` commit submissions through any transport wrapped with the
 * same barrier wait until all of them are built and submitted, so they really build on the same epoch.
 */
class SubmitBarrier {
  private armed: { count: number; waiting: (() => void)[] } | undefined;

  arm(count: number): void {
    this.armed = { count, waiting: [] };
  }

  async pass(): Promise<void> {
    const armed = this.armed;
    if (armed === undefined) return;
    await new Promise<void>((resolve) => {
      armed.waiting.push(resolve);
      if (armed.waiting.length === armed.count) {
        this.armed = undefined;
        for (const release of armed.waiting) release();
      }
    });
  }

  wrap(transport: ChannelTransport): ChannelTransport {
    return {
      directory: (refresh) => transport.directory(refresh),
      createChannel: (request) => transport.createChannel(request),
      submitCommit: async (request): Promise<SubmitOutcome> => {
        await this.pass();
        return transport.submitCommit(request);
      },
      sendMessage: (request) => transport.sendMessage(request),
      listEvents: (request) => transport.listEvents(request),
      getCommit: (channelId, epoch) => transport.getCommit(channelId, epoch),
    };
  }
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

async function receiveText(channel: Channel, into: Map<string, string[]>): Promise<string[]> {
  const texts = (await channel.sync()).flatMap((r) => (r.kind === "message" ? [new TextDecoder().decode(r.data)] : []));
  into.get(channel.device.id)?.push(...texts);
  return texts;
}

type Log = (line: string) => void;

/**
 * The demo's devices, in order: Alice, Bob and Carol, on homeservers 1, 2 and 3. Device ids are first come
 * first served in a cluster, so each run has its own: `alice.<run>@hs1`, ...
 */
export function demoDeviceIds(run: string): string[] {
  return [`alice.${run}@hs1`, `bob.${run}@hs2`, `carol.${run}@hs3`];
}

/** Makes the transport device number `index` of the demo uses (e.g. a registered ChannelClient for it). */
export type DemoConnect = (device: Device, index: number) => Promise<ChannelTransport>;

async function setUp(connect: DemoConnect, barrier: SubmitBarrier, run: string, channelId: string, log: Log): Promise<Channel[]> {
  const [alice, bob, carol] = (await Promise.all(demoDeviceIds(run).map((id) => Device.create(id)))) as [Device, Device, Device];
  const transports = await Promise.all([alice, bob, carol].map(async (device, i) => barrier.wrap(await connect(device, i))));
  log(`${alice.id}, ${bob.id} and ${carol.id} published their identity records at their homeservers and logged in`);
  const aliceChannel = await Channel.create(alice, transports[0]!, channelId);
  log(`${alice.id} created channel ${channelId} at epoch ${aliceChannel.epoch()}`);
  const added = await aliceChannel.addMembers([await bob.publishKeyPackage(), await carol.publishKeyPackage()]);
  log(`${alice.id} added ${bob.id} and ${carol.id}: epoch ${added.epoch}, certificate signed by [${added.certificate?.signatures.map((s) => s.homeserverId).join(", ")}] of voters [${added.certificate?.voters.join(", ")}]`);
  const bobChannel = await Channel.join(bob, transports[1]!, channelId, added.welcome!);
  const carolChannel = await Channel.join(carol, transports[2]!, channelId, added.welcome!);
  log(`${bob.id} and ${carol.id} joined from the Welcome at epoch ${bobChannel.epoch()} (the commit that added them verified)`);
  return [aliceChannel, bobChannel, carolChannel];
}

async function exchange(channels: Channel[], received: Map<string, string[]>, log: Log): Promise<void> {
  for (const channel of channels) {
    const line = `hello from ${channel.device.id}`;
    await channel.send(text(line));
    log(`${channel.device.id} sent "${line}" in epoch ${channel.epoch()}`);
  }
  for (const channel of channels) log(`${channel.device.id} received ${JSON.stringify(await receiveText(channel, received))}`);
}

async function race(bob: Channel, carol: Channel, barrier: SubmitBarrier, log: Log): Promise<DemoResult["race"]> {
  log(`${bob.device.id} and ${carol.device.id} both update their keys from epoch ${bob.epoch()} (commits released together)`);
  barrier.arm(2);
  const [bobOutcome, carolOutcome] = await Promise.all([bob.updateKeys(), carol.updateKeys()]);
  const bobWon = bobOutcome.attempts === 1;
  const [winner, loser] = bobWon ? [bob, carol] : [carol, bob];
  const loserOutcome = bobWon ? carolOutcome : bobOutcome;
  log(`${winner.device.id}'s commit was accepted first; ${loser.device.id}'s lost its epoch, processed the winner, rebuilt its update and was accepted on attempt ${loserOutcome.attempts} at epoch ${loserOutcome.epoch}`);
  return { winner: winner.device.id, loser: loser.device.id, loserAttempts: loserOutcome.attempts };
}

/** Runs the story with one ChannelTransport per device (Alice, Bob, Carol), each made by `connect`. */
export async function runDemoOn(connect: DemoConnect, log: Log = console.log): Promise<DemoResult> {
  const barrier = new SubmitBarrier();
  const run = toHex(new Uint8Array(randomBytes(4)));
  const channelId = `demo-${run}`;
  const received = new Map(demoDeviceIds(run).map((id) => [id, [] as string[]]));
  const channels = await setUp(connect, barrier, run, channelId, log);
  const [, bob, carol] = channels as [Channel, Channel, Channel];
  await exchange(channels, received, log);
  const raceResult = await race(bob, carol, barrier, log);
  for (const channel of channels) await channel.sync();
  await exchange(channels, received, log);
  const devices = channels.map((c) => ({ deviceId: c.device.id, epoch: c.epoch(), epochAuthenticatorHex: toHex(c.epochAuthenticator()) }));
  for (const d of devices) log(`${d.deviceId}: epoch ${d.epoch}, epoch authenticator ${d.epochAuthenticatorHex}`);
  const same = new Set(devices.map((d) => `${d.epoch}/${d.epochAuthenticatorHex}`)).size === 1;
  log(same ? "all devices agree on the epoch and its authenticator" : "DEVICES DISAGREE");
  return { channelId, devices, race: raceResult, received, channels };
}

/**
 * Runs the demo against a cluster: `clientAddresses` are the client API addresses of homeservers 1, 2
 * and 3 (Alice, Bob and Carol each use their own); `caCertPath` is the cluster CA (PEM) or "insecure".
 */
export async function runDemo(clientAddresses: readonly string[], caCertPath: string, log: Log = console.log): Promise<DemoResult> {
  if (clientAddresses.length < 3) throw new Error("the demo needs the client addresses of three homeservers");
  const tls = caCertPath === "insecure" ? ("insecure" as const) : { caPem: readFileSync(caCertPath) };
  const clients: ChannelClient[] = [];
  const connect: DemoConnect = async (device, index) => {
    const client = await ChannelClient.registered({ device, address: clientAddresses[index]!, tls });
    clients.push(client);
    return client;
  };
  try {
    return await runDemoOn(connect, log);
  } finally {
    for (const client of clients) client.close();
  }
}
