import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { RawDb } from "../../src/storage/rocksdb-promises.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { methodPath } from "../../src/api/grpc-service.ts";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { KvService, PutStreamRequestSchema, PutStreamResponseSchema } from "../../src/gen/epochd/kv/v1/kv_pb.ts";
import { valueBytesMax } from "../../src/kv/kv-command.ts";
import { createCertificateAuthority, issueHomeserverCertificate } from "../../src/transport/tls.ts";
import { peerServicePaths } from "../../src/transport/peer-service.ts";
import { ProcessCluster } from "./process-cluster.ts";

const text = (s: string) => new TextEncoder().encode(s);
const identity = (b: Buffer) => b;

/** Flips the last byte of the first Raft log entry record in the database at `location`. */
async function corruptFirstLogEntry(location: string): Promise<void> {
  const db = await RawDb.open(location);
  try {
    for await (const [key, value] of db.iterate(Uint8Array.of(0x01), Uint8Array.of(0x02))) {
      // Group records: 0x01, id length, id, kind; kind 0x06 is a log entry.
      if (key[2 + key[1]!] !== 0x06) continue;
      const corrupted = Buffer.from(value);
      corrupted[corrupted.length - 1] = corrupted[corrupted.length - 1]! ^ 0xff;
      await db.batch([{ type: "put", key, value: corrupted }], true);
      return;
    }
    throw new Error("no log entry found");
  } finally {
    await db.close();
  }
}

/** A bidi Raft stream to `address` as the holder of `files`. */
function rawPeerStream(address: string, ca: Buffer, key: Buffer, cert: Buffer) {
  const client = new grpc.Client(address, grpc.credentials.createSsl(ca, key, cert), { "grpc.ssl_target_name_override": "localhost" });
  const call = client.makeBidiStreamRequest(peerServicePaths.stream, identity, identity);
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.on("error", () => undefined);
  call.on("data", () => undefined);
  return { client, call, ended };
}

describe("bad input to a real homeserver", () => {
  let cluster: ProcessCluster;

  beforeAll(async () => {
    cluster = await ProcessCluster.create(1);
    cluster.startAll();
    await cluster.waitForLeader();
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("answers malformed and out-of-range client requests with INVALID_ARGUMENT and keeps serving", async () => {
    const kv = cluster.kv("hs1");
    try {
      await expect(kv.put({ key: new Uint8Array(0), value: text("v") })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      await expect(kv.put({ key: new Uint8Array(2000), value: text("v") })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      // Bytes that are not a PutRequest at all.
      const garbage = await new Promise<grpc.ServiceError | null>((resolve) =>
        kv.channel.makeUnaryRequest(methodPath(KvService.method.put), identity, identity, Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x01]), (error) => resolve(error)),
      );
      expect(garbage?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect((await kv.put({ key: text("still"), value: text("serving") })).index).toBeGreaterThan(0n);
    } finally {
      kv.close();
    }
  });

  it("PutStream answers each item: malformed or out-of-range ones with INVALID_ARGUMENT while the stream goes on, then ends cleanly", async () => {
    const kv = cluster.kv("hs1");
    try {
      const call = kv.channel.makeBidiStreamRequest(methodPath(KvService.method.putStream), identity, identity);
      const answers: Array<ReturnType<typeof fromBinary<typeof PutStreamResponseSchema>>> = [];
      call.on("data", (bytes: Buffer) => answers.push(fromBinary(PutStreamResponseSchema, bytes)));
      const closed = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      call.on("error", () => undefined);
      const item = (requestId: bigint, key: Uint8Array, value: Uint8Array) =>
        call.write(Buffer.from(toBinary(PutStreamRequestSchema, create(PutStreamRequestSchema, { requestId, key, value }))));
      item(1n, text("stream-a"), text("one"));
      call.write(Buffer.from([0x0a, 0xff, 0xff]));
      item(3n, new Uint8Array(0), text("no key"));
      item(4n, text("stream-big"), new Uint8Array(valueBytesMax + 1));
      item(5n, text("stream-b"), text("five"));
      call.end();
      expect((await closed).code).toBe(grpc.status.OK);
      const byId = new Map(answers.map((a) => [a.requestId, a]));
      expect([...byId.keys()].sort()).toEqual([0n, 1n, 3n, 4n, 5n]);
      for (const refused of [0n, 3n, 4n]) expect(byId.get(refused)?.error?.code, `item ${refused}`).toBe(grpc.status.INVALID_ARGUMENT);
      for (const written of [1n, 5n]) expect(byId.get(written)?.result?.index, `item ${written}`).toBeGreaterThan(0n);
      expect(new TextDecoder().decode((await kv.get({ key: text("stream-b") })).value)).toBe("five");
      expect((await kv.get({ key: text("stream-big") })).found).toBe(false);
    } finally {
      kv.close();
    }
  });

  it("refuses a peer with a certificate of an unknown homeserver or of another CA, and keeps serving", async () => {
    const ca = readFileSync(join(cluster.root, "certs", "ca.crt"));
    const caKey = join(cluster.root, "certs", "ca.key");
    // A certificate of the right CA for a homeserver the cluster does not know.
    const stranger = await issueHomeserverCertificate({ certPath: join(cluster.root, "certs", "ca.crt"), keyPath: caKey }, join(cluster.root, "stranger"), "hs9");
    const unknown = rawPeerStream(cluster.get("hs1").peerAddress, ca, readFileSync(stranger.keyPath), readFileSync(stranger.certPath));
    unknown.call.write(Buffer.from([0x0a, 0x00]));
    expect((await unknown.ended).code).toBe(grpc.status.PERMISSION_DENIED);
    unknown.client.close();
    // A certificate of another CA entirely: the TLS handshake fails.
    const otherCa = await createCertificateAuthority(join(cluster.root, "other-ca"));
    const foreign = await issueHomeserverCertificate(otherCa, join(cluster.root, "other-ca"), "hs1");
    const refused = rawPeerStream(cluster.get("hs1").peerAddress, ca, readFileSync(foreign.keyPath), readFileSync(foreign.certPath));
    refused.call.write(Buffer.from([0x0a, 0x00]));
    expect((await refused.ended).code).toBe(grpc.status.UNAVAILABLE);
    refused.client.close();
    // The process is still serving.
    const kv = cluster.kv("hs1");
    try {
      expect((await kv.put({ key: text("after"), value: text("peers") })).index).toBeGreaterThan(0n);
    } finally {
      kv.close();
    }
  });

  it("a homeserver that cannot listen on its client port exits with an error instead of serving half started", async () => {
    const other = await ProcessCluster.create(1);
    const [host, port] = other.get("hs1").clientAddress.split(":");
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(Number(port), host, resolve));
    try {
      other.start("hs1");
      const code = await Promise.race([other.get("hs1").exited, new Promise((r) => setTimeout(() => r("still running"), 15_000))]);
      expect(code).toBe(1);
      expect(other.log("hs1")).toMatch(/cannot listen on/);
    } finally {
      squatter.close();
      await other.close();
    }
  });

  it("a corrupted RocksDB record makes the homeserver refuse to start with a clear error", async () => {
    const kv = cluster.kv("hs1");
    for (let i = 0; i < 20; i++) await kv.put({ key: text(`c${i}`), value: text("x") });
    kv.close();
    expect(await cluster.kill("hs1", "SIGTERM")).toBe(0);
    await corruptFirstLogEntry(join(cluster.get("hs1").dataDir, "db"));
    cluster.start("hs1");
    const code = await Promise.race([cluster.get("hs1").exited, new Promise((r) => setTimeout(() => r("still running"), 15_000))]);
    expect(code).toBe(1);
    expect(cluster.log("hs1")).toMatch(/storage corruption/);
  });
});
