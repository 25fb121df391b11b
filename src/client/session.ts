/**
 * DeviceSession: the SDK side of client authentication. It answers the
 * homeserver's challenge with a signature by the device's DIR key, keeps the
 * bearer token, logs in again shortly before it expires, and retries a call
 * once with a fresh login when the homeserver answers UNAUTHENTICATED (a
 * restarted homeserver with a new secret, a token that expired in flight).
 * A token is valid only at the homeserver that issued it: one session per
 * homeserver address.
 */
import * as grpc from "@grpc/grpc-js";
import { reconnectBackoff } from "../api/grpc-service.ts";
import { authorizationMetadataKey } from "../auth/client-authenticator.ts";
import { loginStatementBytes } from "../auth/login-statement.ts";
import { AuthService } from "../gen/epochd/auth/v1/auth_pb.ts";
import { callUnary, hasStatus } from "./authed-call.ts";

/** How to reach the homeserver and prove to be the device. */
export interface DeviceSessionOptions {
  readonly deviceId: string;
  /** Signs with the device's Ed25519 DIR key (e.g. Device.sign). */
  readonly sign: (message: Uint8Array) => Promise<Uint8Array>;
  /** host:port of the homeserver's client API. */
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  /** Log in again this long before the token expires. */
  readonly refreshBeforeExpiryMs?: number;
  readonly callDeadlineMs?: number;
}

interface Token {
  readonly metadata: grpc.Metadata;
  readonly expiresAtMs: number;
}

/**
 * Channel options every session starts from (the caller's override them):
 * reconnect within 100 ms to a homeserver that was down, as one is for
 * moments when it restarts or fails over.
 */
export const sessionChannelDefaults: grpc.ChannelOptions = reconnectBackoff(100, 2_000);

/** A device's authenticated connection to one homeserver. */
export class DeviceSession {
  /** The underlying channel; services of the same homeserver may share it. */
  readonly channel: grpc.Client;
  private token: Promise<Token> | undefined;
  private readonly refreshBeforeExpiryMs: number;
  readonly callDeadlineMs: number;
  /** Logins performed (first one included). */
  logins = 0;

  constructor(private readonly options: DeviceSessionOptions) {
    this.channel = new grpc.Client(options.address, options.credentials, { ...sessionChannelDefaults, ...options.channelOptions });
    this.refreshBeforeExpiryMs = options.refreshBeforeExpiryMs ?? 30_000;
    this.callDeadlineMs = options.callDeadlineMs ?? 10_000;
  }

  get deviceId(): string {
    return this.options.deviceId;
  }

  /** Call metadata with a valid bearer token, logging in first when needed. */
  async metadata(): Promise<grpc.Metadata> {
    const current = this.token;
    if (current !== undefined) {
      const token = await current.catch(() => undefined);
      if (token !== undefined && token.expiresAtMs - this.refreshBeforeExpiryMs > Date.now()) return token.metadata.clone();
      if (this.token === current) this.token = undefined;
    }
    this.token ??= this.login();
    return (await this.token).metadata.clone();
  }

  /** Forgets the token: the next call logs in again. */
  invalidate(): void {
    this.token = undefined;
  }

  /** Runs `call` with auth metadata; on UNAUTHENTICATED logs in again and retries once. */
  async call<T>(call: (metadata: grpc.Metadata) => Promise<T>): Promise<T> {
    try {
      return await call(await this.metadata());
    } catch (error) {
      if (!hasStatus(error, grpc.status.UNAUTHENTICATED)) throw error;
      this.invalidate();
      return call(await this.metadata());
    }
  }

  private async login(): Promise<Token> {
    const none = new grpc.Metadata();
    const challenge = await callUnary(this.channel, AuthService.method.challenge, { deviceId: this.deviceId }, none, this.callDeadlineMs);
    const statement = loginStatementBytes({ clusterId: challenge.clusterId, homeserverId: challenge.homeserverId, deviceId: this.deviceId, nonce: challenge.nonce });
    const signature = await this.options.sign(statement);
    const answer = await callUnary(this.channel, AuthService.method.login, { deviceId: this.deviceId, nonce: challenge.nonce, signature }, none, this.callDeadlineMs);
    this.logins += 1;
    const metadata = new grpc.Metadata();
    metadata.set(authorizationMetadataKey, `Bearer ${answer.token}`);
    return { metadata, expiresAtMs: Number(answer.expiresAtMs) };
  }

  close(): void {
    this.channel.close();
  }
}
