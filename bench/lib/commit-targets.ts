/**
 * Commit targets for `npm run bench -- commits`, over raw-bytes grpc-js unary
 * calls with hand-encoded requests (proto-wire.ts), so the load generator's
 * CPU stays small next to the servers it shares the machine with:
 *
 * - epochd: `ChannelService/SubmitCommit` as an authenticated member device
 *   (a kept bearer token, see bench-device.ts), answered once the commit is
 *   accepted and certified; the answer's certificate is checked (right
 *   channel and epoch, a quorum of the voters' signatures).
 * - etcd: the same decision as one compare-and-swap `KV/Txn`: compare the
 *   create revision of `channel/<id>/<epoch>` to 0, and on success put the
 *   1 KiB commit under it; a failed compare is a lost epoch.
 */
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { isCertified } from "../../src/channel/certificate.ts";
import {
  CommitConflictSchema,
  SubmitCommitResponseSchema,
  SubmitCommitStreamResponseSchema,
  type ItemStatus,
  type SubmitCommitResponse,
} from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import type { AuthMetadata } from "./bench-device.ts";
import type { CommitOutcome, CommitTarget } from "./commit-load.ts";
import { decodeFields, encodeFields } from "./proto-wire.ts";

const identity = (bytes: Buffer): Buffer => bytes;

/** gRPC paths of the methods the targets call. */
export const submitCommitPath = "/epochd.channel.v1.ChannelService/SubmitCommit";
export const submitCommitStreamPath = "/epochd.channel.v1.ChannelService/SubmitCommitStream";
export const etcdTxnPath = "/etcdserverpb.KV/Txn";

/** One commit as a client submits it. */
export interface CommitMaterial {
  readonly commit: Uint8Array;
  readonly nextGroupInfo: Uint8Array;
  readonly welcome?: Uint8Array;
}

/** Channel `index`'s commit building on `epoch`, or undefined when there is none (finite supply). */
export type CommitSource = (index: number, epoch: number) => CommitMaterial | undefined;

/** The error of a refused call, with the gRPC code, for the report. */
export class CommitError extends Error {
  constructor(readonly code: number, message: string) {
    super(`${grpc.status[code] ?? code}: ${message}`);
    this.name = "CommitError";
  }
}

function firstMetadata(error: grpc.ServiceError, key: string): string | Buffer | undefined {
  const value = error.metadata?.get(key)[0];
  return value === undefined ? undefined : value;
}

/** Turns a refused SubmitCommit into an outcome: a retry hint or the channel's current epoch when given. */
function refusal(error: grpc.ServiceError): CommitOutcome {
  const retryAfter = firstMetadata(error, "retry-after-ms");
  const conflictBytes = firstMetadata(error, "epochd-commit-conflict-bin");
  let currentEpoch: number | undefined;
  if (Buffer.isBuffer(conflictBytes)) {
    try {
      currentEpoch = Number(fromBinary(CommitConflictSchema, conflictBytes).currentEpoch);
    } catch {
      currentEpoch = undefined;
    }
  }
  return {
    ok: false,
    error: new CommitError(error.code, error.details),
    ...(retryAfter === undefined ? {} : { retryAfterMs: Number(retryAfter) }),
    ...(currentEpoch === undefined ? {} : { currentEpoch }),
  };
}

/** Checks an answer: the certificate names this channel and epoch and carries a quorum of signatures. */
function checkAnswer(answer: SubmitCommitResponse, channelId: string, epoch: number): CommitOutcome {
  const certificate = answer.certificate;
  if (answer.epoch !== BigInt(epoch + 1)) return { ok: false, error: new Error(`answer names epoch ${answer.epoch}, expected ${epoch + 1}`) };
  if (certificate === undefined || certificate.channelId !== channelId || certificate.epoch !== BigInt(epoch) || !isCertified(certificate)) {
    return { ok: false, error: new Error(`answer for ${channelId} epoch ${epoch} carries no complete certificate`) };
  }
  return { ok: true };
}

/**
 * A SubmitCommit target on `channel` (a connection to the leader) for channels `channelIds`, each call
 * authenticated with `auth` (a member device's token at that homeserver) and a deadline of `deadlineMs`.
 */
export function epochdCommitTarget(channel: grpc.Client, channelIds: readonly string[], source: CommitSource, auth: AuthMetadata, deadlineMs = 10_000): CommitTarget {
  const idBytes = channelIds.map((id) => Buffer.from(id, "utf8"));
  return {
    submit(index, epoch, done) {
      const material = source(index, epoch);
      if (material === undefined) return false;
      channel.makeUnaryRequest(submitCommitPath, identity, identity, encodeSubmitCommit(idBytes[index]!, epoch, material), auth(), { deadline: Date.now() + deadlineMs }, (error, response) => {
        if (error !== null) done(refusal(error));
        else if (response === undefined) done({ ok: false, error: new Error("empty answer") });
        else done(checkAnswer(fromBinary(SubmitCommitResponseSchema, response), channelIds[index]!, epoch));
      });
      return true;
    },
  };
}

/** The encoded SubmitCommitRequest of channel `channelIdBytes`'s commit `material` building on `epoch`. */
function encodeSubmitCommit(channelIdBytes: Buffer, epoch: number, material: CommitMaterial): Buffer {
  return encodeFields([
    { field: 1, bytes: channelIdBytes },
    { field: 2, varint: epoch },
    { field: 3, bytes: material.commit },
    { field: 4, bytes: material.nextGroupInfo },
    ...(material.welcome === undefined ? [] : [{ field: 5, bytes: material.welcome }]),
  ]);
}

/** Turns a refused stream item's status into an outcome, as {@link refusal} does a refused call. */
function itemRefusal(status: ItemStatus): CommitOutcome {
  return {
    ok: false,
    error: new CommitError(status.code, status.message),
    ...(status.retryAfterMs > 0n ? { retryAfterMs: Number(status.retryAfterMs) } : {}),
    ...(status.conflict === undefined ? {} : { currentEpoch: Number(status.conflict.currentEpoch) }),
  };
}

/**
 * A target over one `ChannelService/SubmitCommitStream` on `channel`: the
 * same commits, checks and answers as {@link epochdCommitTarget}, one stream
 * item each instead of a call. Closing it ends the stream; items still
 * unanswered when the stream fails are failed with its status.
 */
export function epochdCommitStreamTarget(channel: grpc.Client, channelIds: readonly string[], source: CommitSource, auth: AuthMetadata): CommitTarget & { close(): void } {
  const idBytes = channelIds.map((id) => Buffer.from(id, "utf8"));
  const pending = new Map<bigint, { index: number; epoch: number; done: (outcome: CommitOutcome) => void }>();
  let nextId = 1n;
  const stream = channel.makeBidiStreamRequest(submitCommitStreamPath, identity, identity, auth());
  stream.on("data", (bytes: Buffer) => {
    const answer = fromBinary(SubmitCommitStreamResponseSchema, bytes);
    const item = pending.get(answer.requestId);
    if (item === undefined) return;
    pending.delete(answer.requestId);
    if (answer.error !== undefined) item.done(itemRefusal(answer.error));
    else if (answer.result === undefined) item.done({ ok: false, error: new Error("empty answer") });
    else item.done(checkAnswer(answer.result, channelIds[item.index]!, item.epoch));
  });
  const failAll = (why: string) => {
    for (const item of pending.values()) item.done({ ok: false, error: new Error(why) });
    pending.clear();
  };
  stream.on("error", (error: grpc.ServiceError) => failAll(`stream failed: ${error.message}`));
  stream.on("end", () => failAll("stream ended"));
  return {
    submit(index, epoch, done) {
      const material = source(index, epoch);
      if (material === undefined) return false;
      const requestId = nextId++;
      pending.set(requestId, { index, epoch, done });
      stream.write(encodeFields([{ field: 1, varint: Number(requestId) }, { field: 2, bytes: encodeSubmitCommit(idBytes[index]!, epoch, material) }]));
      return true;
    },
    close() {
      stream.end();
      stream.cancel();
    },
  };
}

/** CompareResult EQUAL and CompareTarget CREATE of etcd's Compare message. */
const compareEqual = 0;
const compareTargetCreate = 1;

/** Encodes TxnRequest{compare: [create_revision(key) == 0], success: [put(key, value)]}. */
export function encodeCasTxn(key: Uint8Array, value: Uint8Array): Buffer {
  const compare = encodeFields([
    { field: 1, varint: compareEqual },
    { field: 2, varint: compareTargetCreate },
    { field: 3, bytes: key },
    { field: 5, varint: 0 },
  ]);
  const put = encodeFields([{ field: 1, bytes: key }, { field: 2, bytes: value }]);
  const success = encodeFields([{ field: 2, bytes: put }]);
  return encodeFields([{ field: 1, bytes: compare }, { field: 2, bytes: success }]);
}

/** Whether a TxnResponse says the compare held (field 2, `succeeded`). */
export function txnSucceeded(bytes: Uint8Array): boolean {
  return decodeFields(bytes).get(2) === 1;
}

/**
 * An etcd target on `channel` (a connection to the leader): channel i's commit building on epoch e is a
 * Txn putting `value` under `channel/<id>/<e>` if that key was never created.
 */
export function etcdCasTarget(channel: grpc.Client, channelIds: readonly string[], value: Uint8Array, deadlineMs = 10_000): CommitTarget {
  return {
    submit(index, epoch, done) {
      const key = Buffer.from(`channel/${channelIds[index]!}/${epoch}`, "utf8");
      channel.makeUnaryRequest(etcdTxnPath, identity, identity, encodeCasTxn(key, value), new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (error, response) => {
        if (error !== null) done({ ok: false, error: new CommitError(error.code, error.details) });
        else if (response === undefined) done({ ok: false, error: new Error("empty answer") });
        else if (!txnSucceeded(response)) done({ ok: false, error: new Error(`epoch ${epoch} of ${channelIds[index]!} already taken`), currentEpoch: epoch + 1 });
        else done({ ok: true });
      });
      return true;
    },
  };
}
