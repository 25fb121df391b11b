/**
 * Authenticates client calls as devices: the bearer token a device got from
 * Login (see proto/epochd/auth/v1/auth.proto) is checked with one HMAC, and
 * the device must still be current in the replicated identity index (not
 * revoked, sponsor not blocked), an in-memory lookup. No Raft round trip.
 */
import type * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { ApiError } from "../api/errors.ts";
import type { TokenIssuer } from "./token.ts";

/** The device a client call was authenticated as. */
export interface AuthenticatedDevice {
  /** "name@homeserver" (the MLS credential identity, see src/mls/identity.ts). */
  readonly deviceId: string;
  /** "user@homeserver" from its DIR. */
  readonly userName: string;
  /** Sponsoring homeserver. */
  readonly homeserverId: string;
  /** Ed25519, = its MLS signature key. */
  readonly devicePublicKey: Uint8Array;
}

/** Resolves the device behind a call's metadata ("authorization: Bearer <token>"), or throws ApiError UNAUTHENTICATED. */
export interface ClientAuthenticator {
  authenticate(metadata: grpc.Metadata): Promise<AuthenticatedDevice>;
}

/**
 * The devices that may use the API right now: a current, non-revoked DIR
 * whose sponsoring homeserver is not blocked. Implemented by the identity
 * index (src/identity); reads local applied state only.
 */
export interface DeviceLookup {
  currentDevice(deviceId: string): AuthenticatedDevice | undefined;
}

/** The metadata key carrying the bearer token. */
export const authorizationMetadataKey = "authorization";

/** The bearer token of `metadata`, or undefined when there is none. */
export function bearerToken(metadata: grpc.Metadata): string | undefined {
  const value = metadata.get(authorizationMetadataKey)[0];
  const text = typeof value === "string" ? value : value?.toString("utf8");
  if (text === undefined || !text.startsWith("Bearer ")) return undefined;
  return text.slice("Bearer ".length).trim();
}

/** The ClientAuthenticator of a homeserver: its own tokens, checked against the identity index. */
export class TokenAuthenticator implements ClientAuthenticator {
  constructor(
    private readonly tokens: TokenIssuer,
    private readonly devices: DeviceLookup,
    private readonly now: () => number = Date.now,
  ) {}

  authenticate(metadata: grpc.Metadata): Promise<AuthenticatedDevice> {
    try {
      return Promise.resolve(this.check(metadata));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The synchronous check behind authenticate. */
  check(metadata: grpc.Metadata): AuthenticatedDevice {
    const token = bearerToken(metadata);
    if (token === undefined) throw new ApiError(status.UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata: log in with AuthService first");
    const claims = this.tokens.open(token);
    if (claims === undefined) throw new ApiError(status.UNAUTHENTICATED, "invalid token");
    if (claims.expiresAtMs <= this.now()) throw new ApiError(status.UNAUTHENTICATED, "token expired: log in again");
    const device = this.devices.currentDevice(claims.deviceId);
    if (device === undefined) throw new ApiError(status.UNAUTHENTICATED, `device ${claims.deviceId} has no current identity record (revoked, or its homeserver is blocked)`);
    return device;
  }
}
