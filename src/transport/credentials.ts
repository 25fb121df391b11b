/**
 * grpc-js credentials for the peer service and the admin API, and the one
 * place where a call's authenticated identity is read from its certificate.
 *
 * Trust model: the cluster's CA signs every certificate; the homeserver id is
 * the certificate's CN with OU=homeserver. A client checks that the server it
 * reached presents the id it meant to reach (not its host name, so a peer may
 * move to another address without a new certificate); a server reads the
 * caller's id from the verified client certificate.
 */
import * as grpc from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import { homeserverUnit, operatorUnit, type PeerCredentials, type TlsMaterial } from "./tls.ts";

/** Who a verified certificate says the caller is. */
export interface CertificateIdentity {
  readonly role: "homeserver" | "operator";
  /** The homeserver id, or the operator's name. */
  readonly id: string;
}

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The identity a certificate carries, or null when it is neither a homeserver's nor an operator's. */
export function identityFromCertificate(cert: PeerCertificate): CertificateIdentity | null {
  const subject = cert.subject as Record<string, string | string[] | undefined> | undefined;
  if (subject === undefined) return null;
  const id = firstValue(subject["CN"]);
  const unit = firstValue(subject["OU"]);
  if (id === undefined || id.length === 0 || firstValue(subject["O"]) !== "epochd") return null;
  if (unit === homeserverUnit) return { role: "homeserver", id };
  if (unit === operatorUnit) return { role: "operator", id };
  return null;
}

/** What grpc-js (1.14) reports about a call's transport security; its own type is not exported. */
export interface CallAuthContext {
  readonly transportSecurityType?: string;
  readonly sslPeerCertificate?: PeerCertificate;
}

/** The part of a grpc-js server call that exposes the TLS session. */
export interface CallWithAuthContext {
  getAuthContext(): CallAuthContext | null;
}

/**
 * The identity in the client certificate that TLS verified for `call`, or
 * null on a plaintext connection or without a usable certificate. grpc-js
 * 1.14 fills `sslPeerCertificate` only when the socket is authorized (the
 * chain verified against our CA).
 */
export function authenticatedIdentity(call: CallWithAuthContext): CertificateIdentity | null {
  const context = call.getAuthContext();
  const cert = context?.sslPeerCertificate;
  if (context?.transportSecurityType !== "ssl" || cert === undefined) return null;
  return identityFromCertificate(cert);
}

/** Server credentials for a homeserver's gRPC servers: mutual TLS with client certificates required, or plaintext. */
export function serverCredentials(credentials: PeerCredentials): grpc.ServerCredentials {
  if (credentials.kind === "insecure") return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(credentials.ca, [{ private_key: credentials.key, cert_chain: credentials.cert }], true);
}

/**
 * Channel credentials for the link to homeserver `expectedPeerId`: the
 * server must present a certificate of our CA naming that homeserver.
 */
export function peerChannelCredentials(credentials: PeerCredentials, expectedPeerId: string): grpc.ChannelCredentials {
  if (credentials.kind === "insecure") return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(credentials.ca, credentials.key, credentials.cert, {
    checkServerIdentity: (_host, cert) => {
      const identity = identityFromCertificate(cert);
      if (identity?.role === "homeserver" && identity.id === expectedPeerId) return undefined;
      return new Error(`peer at this address is ${identity === null ? "not a homeserver" : `${identity.role} ${identity.id}`}, expected homeserver ${expectedPeerId}`);
    },
  });
}

/** Channel credentials for an operator or client reaching a homeserver by host name (standard host name check). */
export function clientChannelCredentials(credentials: TlsMaterial | { readonly kind: "insecure" }): grpc.ChannelCredentials {
  if (credentials.kind === "insecure") return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(credentials.ca, credentials.key, credentials.cert);
}
