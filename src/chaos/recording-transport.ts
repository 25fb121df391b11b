/**
 * A ChannelTransport wrapper that records every commit submission, message and event read of one device
 * into the run's history: the SDK's Channel runs unchanged on top of it, so the history is exactly what
 * the real client sent and was told.
 */
import { EventKind, type Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";
import { sha256, toHex } from "../client/mls-codec.ts";
import type { ChannelTransport, SubmitOutcome } from "../client/transport.ts";
import type { CertificateSummary, HistoryRecorder } from "./history.ts";

function summarize(certificate: Certificate | undefined): CertificateSummary | undefined {
  if (certificate === undefined) return undefined;
  return {
    epoch: Number(certificate.epoch),
    commitHash: toHex(certificate.commitHash),
    logIndex: Number(certificate.logIndex),
    signers: certificate.signatures.map((s) => s.homeserverId),
    voters: [...certificate.voters],
  };
}

function describe(error: unknown): string {
  const e = error as { code?: number; details?: string; message?: string };
  return e.code !== undefined ? `gRPC ${e.code}: ${e.details ?? e.message ?? ""}` : String(e.message ?? error);
}

/** Wraps `transport` so that `device`'s calls are recorded in `history`. */
export function recordingTransport(transport: ChannelTransport, device: string, history: HistoryRecorder): ChannelTransport {
  return {
    directory: (refresh) => transport.directory(refresh),
    createChannel: (request) => transport.createChannel(request),
    submitCommit: async (request): Promise<SubmitOutcome> => {
      const commit = request.commit ?? new Uint8Array();
      const hash = toHex(sha256(commit));
      const op = history.invoke(device, "commit", request.channelId ?? "", { epoch: Number(request.epoch ?? 0n), hash });
      try {
        const outcome = await transport.submitCommit(request);
        if (outcome.kind === "accepted") {
          const certificate = summarize(outcome.certificate);
          history.complete(op, "ok", certificate === undefined ? {} : { certificate });
        } else {
          const winner = outcome.conflict.winner;
          const winnerFields = winner === undefined ? {} : { winner: { epoch: Number(winner.epoch), hash: toHex(sha256(winner.commit)) } };
          history.complete(op, "fail", { ...winnerFields, error: `conflict: channel at epoch ${outcome.conflict.currentEpoch}` });
        }
        return outcome;
      } catch (error) {
        history.complete(op, "unknown", { error: describe(error) });
        throw error;
      }
    },
    sendMessage: async (request) => {
      const message = request.message ?? new Uint8Array();
      const op = history.invoke(device, "message", request.channelId ?? "", { epoch: Number(request.epoch ?? 0n), hash: toHex(sha256(message)) });
      try {
        const sequence = await transport.sendMessage(request);
        history.complete(op, "ok", { sequence: Number(sequence) });
        return sequence;
      } catch (error) {
        history.complete(op, "unknown", { error: describe(error) });
        throw error;
      }
    },
    listEvents: async (request) => {
      const op = history.invoke(device, "list", request.channelId ?? "");
      try {
        const response = await transport.listEvents(request);
        const commitsSeen = response.events
          .filter((e) => e.kind === EventKind.COMMIT)
          .map((e) => ({ epoch: Number(e.epoch), hash: toHex(sha256(e.payload)), sequence: Number(e.sequence) }));
        history.complete(op, "ok", { commitsSeen });
        return response;
      } catch (error) {
        history.complete(op, "unknown", { error: describe(error) });
        throw error;
      }
    },
    getCommit: (channelId, epoch) => transport.getCommit(channelId, epoch),
  };
}
