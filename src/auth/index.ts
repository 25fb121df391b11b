/**
 * Client authentication: challenges, login statements, bearer tokens and the
 * ClientAuthenticator every client-facing service uses to learn which device
 * is calling. The SDK side is src/client/session.ts.
 */
export { type AuthenticatedDevice, type ClientAuthenticator, type DeviceLookup, TokenAuthenticator, authorizationMetadataKey, bearerToken } from "./client-authenticator.ts";
export { requireChannelMember, isChannelMember, type ChannelMembers } from "./channel-membership.ts";
export { ChallengeStore, challengeLifetimeMs, challengesMax, nonceBytes } from "./challenges.ts";
export { loginStatementBytes, loginDomain, type LoginStatement } from "./login-statement.ts";
export { TokenIssuer, tokenLifetimeMs, type TokenClaims } from "./token.ts";
export { loadOrCreateAuthSecret } from "./auth-secret.ts";
