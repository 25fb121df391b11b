/**
 * The grpc-js shape of epochd.raft.v1.PeerService. Both directions carry raw
 * bytes: decoding happens in our handlers, so a malformed message becomes a
 * logged drop instead of a grpc-js deserialization failure that would end the
 * whole stream.
 */
import type * as grpc from "@grpc/grpc-js";
import { PeerService } from "../gen/epochd/raft/v1/raft_pb.ts";

const identity = (bytes: Buffer): Buffer => bytes;

function methodPath(name: string): string {
  return `/${PeerService.typeName}/${name}`;
}

/** Method paths, taken from the generated service descriptor so they follow the proto. */
export const peerServicePaths = {
  stream: methodPath(PeerService.method.stream.name),
  sendSnapshot: methodPath(PeerService.method.sendSnapshot.name),
} as const;

/** The service definition to pass to `grpc.Server.addService`, with byte (de)serializers. */
export const peerServiceDefinition: grpc.ServiceDefinition = {
  stream: {
    path: peerServicePaths.stream,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  sendSnapshot: {
    path: peerServicePaths.sendSnapshot,
    requestStream: true,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

/** Metadata key naming the caller on plaintext (`--insecure`) links, where no certificate does. */
export const insecureNodeIdMetadataKey = "epochd-node-id";

/** Largest gRPC message a peer link sends or accepts, by default: room for a batch of big entries. */
export const defaultMaxGrpcMessageBytes = 64 * 1024 * 1024;

/**
 * Channel options for a homeserver's peer gRPC server. Pass them to
 * `new grpc.Server(...)`: grpc-js's default receive limit (4 MiB) is below
 * what a batch of large entries may need, and a message over the limit ends
 * the whole stream.
 */
export function peerServerOptions(maxGrpcMessageBytes = defaultMaxGrpcMessageBytes): grpc.ChannelOptions {
  return {
    "grpc.max_receive_message_length": maxGrpcMessageBytes,
    "grpc.max_send_message_length": maxGrpcMessageBytes,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  };
}

/** Channel options for an outbound peer link; reconnect delays follow the transport's own backoff. */
export function peerClientOptions(maxGrpcMessageBytes: number, backoffMinMs: number, backoffMaxMs: number): grpc.ChannelOptions {
  return {
    "grpc.max_receive_message_length": maxGrpcMessageBytes,
    "grpc.max_send_message_length": maxGrpcMessageBytes,
    "grpc.initial_reconnect_backoff_ms": backoffMinMs,
    "grpc.min_reconnect_backoff_ms": backoffMinMs,
    "grpc.max_reconnect_backoff_ms": backoffMaxMs,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.enable_retries": 0,
  };
}
