/**
 * Invite, join and leave with real processes: `epochd invite` mints a token,
 * `epochd join` processes redeem it and become voters (up to 5) or learners,
 * used and expired tokens are refused without changing anything, and
 * `epochd leave` removes the leader, which stops, while the rest keeps
 * accepting writes.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { openSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unaryClient } from "../../src/api/grpc-service.ts";
import { AdminService, HomeserverStatus, type StatusResponse } from "../../src/gen/epochd/admin/v1/admin_pb.ts";
import { JoinService } from "../../src/gen/epochd/admin/v1/join_pb.ts";
import { KvService } from "../../src/gen/epochd/kv/v1/kv_pb.ts";
import { parseInviteToken } from "../../src/node/directory-token.ts";
import { clientChannelCredentials } from "../../src/transport/credentials.ts";
import { createCertificateRequest } from "../../src/transport/tls.ts";
import { freeLocalPort } from "../../src/transport/local-ports.ts";
import { ProcessCluster } from "./process-cluster.ts";

const binPath = resolve(import.meta.dirname, "../../bin/epochd.mjs");
const tlsOverride = { "grpc.ssl_target_name_override": "localhost" };

interface Joiner {
  readonly id: string;
  readonly peerAddress: string;
  readonly clientAddress: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
}

/** Runs an epochd subcommand to completion; resolves with its exit code and output. */
function runCli(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [binPath, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolveRun({ code, out });
    });
  });
}

async function until<T>(what: string, attempt: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await attempt().catch(() => undefined);
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out: ${what}`);
}

describe("joining and leaving a real cluster with invite tokens", () => {
  let cluster: ProcessCluster;
  let writeTarget = "";
  /** The homeserver left a learner by the voter maximum. */
  let learner = "";
  const joiners = new Map<string, Joiner>();
  const certs = () => join(cluster.root, "certs");
  const operator = () => clientChannelCredentials({ kind: "tls", ca: readFileSync(join(certs(), "ca.crt")), cert: readFileSync(join(certs(), "operator.crt")), key: readFileSync(join(certs(), "operator.key")) });
  const admin = (peerAddress: string) => unaryClient(AdminService, peerAddress, operator(), tlsOverride);
  const peerOf = (id: string) => joiners.get(id)?.peerAddress ?? cluster.get(id).peerAddress;
  const clientOf = (id: string) => joiners.get(id)?.clientAddress ?? cluster.get(id).clientAddress;

  async function statusOf(id: string): Promise<StatusResponse> {
    const client = admin(peerOf(id));
    try {
      return await client.status({}, { deadlineMs: 1000 });
    } finally {
      client.close();
    }
  }

  /** The leader's status (asking the members in turn). */
  async function leaderStatus(among: string[]): Promise<StatusResponse> {
    return until("a leader's status", async () => {
      for (const id of among) {
        const status = await statusOf(id).catch(() => undefined);
        const leader = status?.groups[0]?.leaderId;
        if (leader === undefined || leader === "") continue;
        const answer = await statusOf(leader).catch(() => undefined);
        if (answer?.groups[0]?.leaderId === leader) return answer;
      }
      return undefined;
    });
  }

  /** Mints a token through the admin API (the CLI is exercised once, for hs4). */
  async function mint(id: string, ttlMs = 3600_000): Promise<string> {
    const client = admin(cluster.get("hs3").peerAddress);
    try {
      return (await client.createInvite({ homeserverId: id, ttlMs: BigInt(ttlMs) }, { deadlineMs: 10_000 })).token;
    } finally {
      client.close();
    }
  }

  async function invite(id: string, ttl = "1h"): Promise<string> {
    const run = await runCli(["invite", "--data", cluster.root, "--admin", cluster.get("hs2").peerAddress, "--id", id, "--ttl", ttl, "--json"]);
    expect(run.code, run.out).toBe(0);
    return (JSON.parse(run.out.trim().split("\n").pop()!) as { token: string }).token;
  }

  async function startJoiner(id: string, token: string): Promise<Joiner> {
    const joiner = { id, peerAddress: `127.0.0.1:${await freeLocalPort()}`, clientAddress: `127.0.0.1:${await freeLocalPort()}` };
    const log = openSync(join(cluster.root, `${id}.log`), "a");
    const args = [binPath, "join", "--cluster", cluster.get("hs1").clientAddress, "--token", token, "--data-dir", join(cluster.root, id), "--peer-listen", joiner.peerAddress, "--client-listen", joiner.clientAddress];
    const child = spawn(process.execPath, args, { stdio: ["ignore", log, log] });
    const started: Joiner = { ...joiner, child, exited: new Promise((r) => child.once("exit", (code) => r(code))) };
    joiners.set(id, started);
    return started;
  }

  /** Waits until the leader lists `id` as a member in `role`. */
  async function waitForMember(id: string, role: "voter" | "learner", among: string[]): Promise<StatusResponse> {
    return until(`${id} to be a ${role}`, async () => {
      const status = await leaderStatus(among);
      const group = status.groups[0]!;
      return (role === "voter" ? group.voters : group.learners).includes(id) ? status : undefined;
    });
  }

  /** Writes `key` through whichever homeserver leads, following the leader's address in "not leader" answers. */
  async function putUntilAcked(key: string, value: string, timeoutMs = 20_000): Promise<void> {
    const addresses = () => [...["hs1", "hs2", "hs3"].map(clientOf), ...[...joiners.values()].map((j) => j.clientAddress)];
    await until(`the write of ${key}`, async () => {
      const kv = unaryClient(KvService, writeTarget, cluster.clientCredentials(), tlsOverride);
      try {
        return await kv.put({ key: new TextEncoder().encode(key), value: new TextEncoder().encode(value) }, { deadlineMs: 2000 });
      } catch (error) {
        const hint = (error as grpc.ServiceError).metadata?.get("epochd-leader-address")[0];
        const all = addresses();
        writeTarget = typeof hint === "string" && hint !== "" ? hint : all[(all.indexOf(writeTarget) + 1) % all.length]!;
        return undefined;
      } finally {
        kv.close();
      }
    }, timeoutMs);
  }

  /** A fresh write through the leader is readable (linearizably) on homeserver `id`. */
  async function servesReads(id: string, key: string): Promise<void> {
    await putUntilAcked(key, `v-${key}`);
    const kv = unaryClient(KvService, clientOf(id), cluster.clientCredentials(), tlsOverride);
    try {
      const read = await until(`a read on ${id}`, () => kv.get({ key: new TextEncoder().encode(key) }, { deadlineMs: 2000 }));
      expect(read.found).toBe(true);
      expect(new TextDecoder().decode(read.value)).toBe(`v-${key}`);
    } finally {
      kv.close();
    }
  }

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3);
    for (const id of ["hs1", "hs2", "hs3"]) cluster.start(id, ["--tls-ca-key", join(certs(), "ca.key")]);
    writeTarget = clientOf(await cluster.waitForLeader());
    // What `epochd cluster up` writes, so the operator commands find the operator certificate.
    writeFileSync(join(cluster.root, "cluster.json"), JSON.stringify({
      dataDir: cluster.root, insecure: false, caCert: join(certs(), "ca.crt"), operatorCert: join(certs(), "operator.crt"), operatorKey: join(certs(), "operator.key"),
      homeservers: ["hs1", "hs2", "hs3"].map((id) => ({ id, peerAddress: cluster.get(id).peerAddress, clientAddress: cluster.get(id).clientAddress })),
    }));
  });

  afterAll(async () => {
    for (const joiner of joiners.values()) {
      if (joiner.child.exitCode === null && joiner.child.pid !== undefined) process.kill(joiner.child.pid, "SIGKILL");
      await joiner.exited;
    }
    await cluster?.close();
  });

  it("a 4th homeserver joins with an invite, becomes a voter and serves; its used token is refused and changes nothing", async () => {
    const token = await invite("hs4");
    await startJoiner("hs4", token);
    const status = await waitForMember("hs4", "voter", ["hs1", "hs2", "hs3"]);
    expect([...status.groups[0]!.voters].sort()).toEqual(["hs1", "hs2", "hs3", "hs4"]);
    await servesReads("hs4", "after-hs4");
    const own = await statusOf("hs4");
    expect(own.directory.find((d) => d.nodeId === "hs4")).toMatchObject({ status: HomeserverStatus.ACTIVE, voter: true, peerAddress: joiners.get("hs4")!.peerAddress });

    // The same token again, for another key: refused, and the directory is as it was.
    const parsed = parseInviteToken(token);
    const csr = await createCertificateRequest(join(cluster.root, "thief.key"), "hs4");
    const joinClient = unaryClient(JoinService, cluster.get("hs3").clientAddress, cluster.clientCredentials(), tlsOverride);
    try {
      const request = { inviteId: parsed.inviteId, secret: parsed.secret, homeserverId: "hs4", peerAddress: "127.0.0.1:1", clientAddress: "127.0.0.1:2", signingKey: new Uint8Array(32).fill(7), certificateRequest: csr };
      const used = await joinClient.join(request).catch((e: grpc.ServiceError) => e);
      expect((used as grpc.ServiceError).code).toBe(grpc.status.PERMISSION_DENIED);
      const wrongSecret = await joinClient.join({ ...request, secret: new Uint8Array(32) }).catch((e: grpc.ServiceError) => e);
      expect((wrongSecret as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      joinClient.close();
    }
    const after = await statusOf("hs3");
    expect(after.directory.find((d) => d.nodeId === "hs4")?.peerAddress).toBe(joiners.get("hs4")!.peerAddress);
    expect(after.directory.length).toBe(4);
  });

  it("an expired token is refused and changes nothing", async () => {
    const token = await mint("hs9", 1);
    const run = await runCli(["join", "--token", token, "--data-dir", join(cluster.root, "hs9"), "--peer-listen", "127.0.0.1:1", "--client-listen", "127.0.0.1:2", "--no-start"]);
    expect(run.code).toBe(1);
    expect(run.out).toContain("PERMISSION_DENIED");
    const status = await statusOf("hs1");
    expect(status.directory.map((d) => d.nodeId)).not.toContain("hs9");
  });

  it("of a 5th and a 6th joining at once, one becomes the 5th voter and the other stays a learner; both serve", async () => {
    const [token5, token6] = await Promise.all([mint("hs5"), mint("hs6")]);
    await Promise.all([startJoiner("hs5", token5), startJoiner("hs6", token6)]);
    const status = await until("5 voters and a learner", async () => {
      const answer = await leaderStatus(["hs1", "hs2", "hs3"]);
      return answer.groups[0]!.voters.length === 5 && answer.groups[0]!.learners.length === 1 ? answer : undefined;
    });
    learner = status.groups[0]!.learners[0]!;
    expect(["hs5", "hs6"]).toContain(learner);
    expect(status.directory.find((d) => d.nodeId === learner)).toMatchObject({ status: HomeserverStatus.ACTIVE, voter: false, learner: true });
    await Promise.all([servesReads("hs5", "after-hs5"), servesReads("hs6", "after-hs6")]);
    // Still a learner once caught up: the voter maximum holds it back, not its progress.
    expect((await leaderStatus(["hs1", "hs2", "hs3"])).groups[0]!.learners).toEqual([learner]);
  });

  it("the leader leaves: it hands over, is removed and stops; the learner is promoted and the rest accepts writes", async () => {
    const members = ["hs1", "hs2", "hs3", "hs4", "hs5", "hs6"];
    const leaving = (await leaderStatus(members)).nodeId;
    const run = await runCli(["leave", "--data", cluster.root, "--admin", peerOf(leaving)]);
    expect(run.code, run.out).toBe(0);
    const exited = joiners.get(leaving)?.exited ?? cluster.get(leaving).exited!;
    expect(await exited).toBe(0);
    const rest = members.filter((id) => id !== leaving);
    const status = await waitForMember(learner, "voter", rest);
    expect([...status.groups[0]!.voters, ...status.groups[0]!.learners]).not.toContain(leaving);
    expect(status.groups[0]!.voters.length).toBe(5);
    expect(status.directory.find((d) => d.nodeId === leaving)?.status).toBe(HomeserverStatus.LEFT);
    await putUntilAcked("after-leave", "z", 30_000);
  });
});
