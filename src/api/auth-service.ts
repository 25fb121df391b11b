/**
 * epochd.auth.v1.AuthService: a device answers a challenge with a signature by
 * its DIR key and gets a short-lived bearer token for this homeserver. The
 * protocol is documented in proto/epochd/auth/v1/auth.proto.
 */
import * as grpc from "@grpc/grpc-js";
import type { DeviceLookup } from "../auth/client-authenticator.ts";
import type { ChallengeStore } from "../auth/challenges.ts";
import { loginStatementBytes } from "../auth/login-statement.ts";
import { tokenLifetimeMs, type TokenIssuer } from "../auth/token.ts";
import { verifyEd25519 } from "../channel/certificate.ts";
import { AuthService } from "../gen/epochd/auth/v1/auth_pb.ts";
import { maxDeviceIdBytes } from "../mls/limits.ts";
import { remainingMs, withDeadline } from "./deadline.ts";
import { ApiError } from "./errors.ts";
import { serviceDefinition, unaryHandler } from "./grpc-service.ts";
import { RateLimiter } from "./rate-limiter.ts";

/** Challenges one device id may ask for: a burst, then a steady rate. */
export const challengeLimit = { burst: 10, perSecond: 1 };

/** What the auth service needs from the homeserver. */
export interface AuthContext {
  readonly clusterId: string;
  readonly homeserverId: string;
  readonly challenges: ChallengeStore;
  readonly tokens: TokenIssuer;
  readonly devices: DeviceLookup;
  /**
   * Resolves once this homeserver has applied everything its cluster group
   * committed before the call (a read index). Asked only for a device not
   * found: one that published its record at another homeserver a moment ago
   * may not be applied here yet.
   */
  readonly catchUp?: () => Promise<unknown>;
  readonly now?: () => number;
}

function checkDeviceId(deviceId: string): void {
  const bytes = Buffer.byteLength(deviceId, "utf8");
  if (bytes === 0 || bytes > maxDeviceIdBytes) throw new ApiError(grpc.status.INVALID_ARGUMENT, `device_id must be 1-${maxDeviceIdBytes} bytes`);
}

/** Registers AuthService on `server` (the client server). */
export function addAuthService(server: grpc.Server, context: AuthContext): void {
  const now = context.now ?? Date.now;
  const limiter = new RateLimiter(challengeLimit, now);
  server.addService(serviceDefinition(AuthService), {
    challenge: unaryHandler(AuthService.method.challenge, async (request, call) => {
      checkDeviceId(request.deviceId);
      if (context.devices.currentDevice(request.deviceId) === undefined && context.catchUp !== undefined) {
        await withDeadline(context.catchUp(), remainingMs(call.getDeadline()), "catching up before refusing an unknown device");
      }
      if (context.devices.currentDevice(request.deviceId) === undefined) {
        throw new ApiError(grpc.status.UNAUTHENTICATED, `device ${request.deviceId} has no current identity record (unknown, revoked, or its homeserver is blocked)`);
      }
      if (limiter.take(request.deviceId) > 0) throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `too many challenges for ${request.deviceId}`);
      const issued = context.challenges.issue(request.deviceId);
      if (issued === undefined) throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, "too many outstanding challenges, retry later");
      return { nonce: issued.nonce, clusterId: context.clusterId, homeserverId: context.homeserverId, expiresAtMs: BigInt(issued.expiresAtMs) };
    }),
    login: unaryHandler(AuthService.method.login, async (request) => {
      checkDeviceId(request.deviceId);
      // Consumed whatever follows: a nonce is never answered twice.
      if (!context.challenges.consume(request.deviceId, request.nonce)) throw new ApiError(grpc.status.UNAUTHENTICATED, "unknown, expired or already used nonce: ask for a new challenge");
      const device = context.devices.currentDevice(request.deviceId);
      if (device === undefined) throw new ApiError(grpc.status.UNAUTHENTICATED, `device ${request.deviceId} has no current identity record`);
      const statement = loginStatementBytes({ clusterId: context.clusterId, homeserverId: context.homeserverId, deviceId: request.deviceId, nonce: request.nonce });
      if (!verifyEd25519(device.devicePublicKey, statement, request.signature)) throw new ApiError(grpc.status.UNAUTHENTICATED, "signature does not verify with the device's identity key");
      const expiresAtMs = now() + tokenLifetimeMs;
      return { token: context.tokens.mint(request.deviceId, expiresAtMs), expiresAtMs: BigInt(expiresAtMs) };
    }),
  } satisfies grpc.UntypedServiceImplementation);
}
