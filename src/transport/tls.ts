/**
 * Certificates for mutual TLS between homeservers: a cluster's local CA, one
 * key and certificate per homeserver, and an operator client certificate.
 * Made with the `openssl` command line tool, so no crypto library is needed;
 * `cluster up` calls these once per data directory.
 *
 * Identity lives in the subject: O=epochd, OU=homeserver or OU=operator, and
 * CN = the homeserver id (also its DNS SAN). See credentials.ts for how a
 * call's peer is authenticated from it.
 */
import { execFile } from "node:child_process";
import { createHash, createPublicKey, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** The OU of a homeserver certificate; the peer service accepts no other. */
export const homeserverUnit = "homeserver";
/** The OU of an operator (admin client) certificate. */
export const operatorUnit = "operator";

/** Paths of a PEM key and certificate, plus the CA certificate that verifies peers. */
export interface TlsFiles {
  readonly caCertPath: string;
  readonly keyPath: string;
  readonly certPath: string;
}

/** A local certificate authority on disk. Its key signs every certificate of the cluster. */
export interface CertificateAuthority {
  readonly certPath: string;
  readonly keyPath: string;
}

/** TLS material in memory, ready for grpc-js credentials. */
export interface TlsMaterial {
  readonly kind: "tls";
  readonly ca: Buffer;
  readonly key: Buffer;
  readonly cert: Buffer;
}

/** How a homeserver talks to its peers: mutual TLS, or plaintext with an explicit `--insecure`. */
export type PeerCredentials = TlsMaterial | { readonly kind: "insecure" };

/** Thrown when `openssl` is missing or fails; `cause` holds its error and stderr. */
export class CertificateError extends Error {
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = "CertificateError";
  }
}

const homeserverIdPattern = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** True when `id` can name a homeserver in a certificate: a DNS label (letters, digits, inner hyphens, 1..63). */
export function isValidHomeserverId(id: string): boolean {
  return homeserverIdPattern.test(id);
}

async function openssl(args: readonly string[]): Promise<string> {
  try {
    return (await execFileAsync("openssl", args, { timeout: 30_000 })).stdout;
  } catch (cause) {
    const stderr = (cause as { stderr?: unknown }).stderr;
    throw new CertificateError(`openssl ${args[0] ?? ""} failed: ${typeof stderr === "string" ? stderr.trim() : String(cause)}`, { cause });
  }
}

const keyArgs = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"] as const;

/** Creates a CA (P-256 key, self-signed, `validityDays` long) in `dir` as ca.key and ca.crt. */
export async function createCertificateAuthority(dir: string, validityDays = 3650): Promise<CertificateAuthority> {
  await mkdir(dir, { recursive: true });
  const ca = { certPath: join(dir, "ca.crt"), keyPath: join(dir, "ca.key") };
  await openssl([
    "req", "-x509", ...keyArgs, "-keyout", ca.keyPath, "-out", ca.certPath, "-days", String(validityDays),
    "-subj", "/O=epochd/CN=epochd cluster CA",
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return ca;
}

/**
 * Issues a key and certificate signed by `ca`, as `<name>.key` and
 * `<name>.crt` in `dir`. The SAN always holds DNS:<cn>, DNS:localhost and
 * IP:127.0.0.1, plus `extraHosts` (names or IPv4 addresses).
 */
async function issueCertificate(
  ca: CertificateAuthority,
  dir: string,
  fields: { unit: string; commonName: string; serverAuth: boolean; extraHosts: readonly string[]; validityDays: number },
): Promise<TlsFiles> {
  await mkdir(dir, { recursive: true });
  const base = join(dir, fields.commonName);
  const files = { caCertPath: ca.certPath, keyPath: `${base}.key`, certPath: `${base}.crt` };
  const extensionsPath = `${base}.ext`;
  await writeFile(extensionsPath, extensionsText(fields.commonName, fields.serverAuth, fields.extraHosts));
  const csrPath = `${base}.csr`;
  try {
    await openssl(["req", "-new", ...keyArgs, "-keyout", files.keyPath, "-out", csrPath,
      "-subj", `/O=epochd/OU=${fields.unit}/CN=${fields.commonName}`]);
    await openssl(["x509", "-req", "-in", csrPath, "-CA", ca.certPath, "-CAkey", ca.keyPath,
      "-set_serial", `0x${randomBytes(16).toString("hex")}`, "-days", String(fields.validityDays),
      "-extfile", extensionsPath, "-out", files.certPath]);
  } finally {
    await rm(csrPath, { force: true });
    await rm(extensionsPath, { force: true });
  }
  return files;
}

/** The x509 extensions of a leaf certificate: SAN DNS:<cn>, localhost, 127.0.0.1 and `extraHosts`. */
function extensionsText(commonName: string, serverAuth: boolean, extraHosts: readonly string[]): string {
  const hosts = [commonName, "localhost", "127.0.0.1", ...extraHosts];
  const san = [...new Set(hosts)].map((h) => (/^\d+\.\d+\.\d+\.\d+$/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(",");
  return [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    `extendedKeyUsage=${serverAuth ? "serverAuth,clientAuth" : "clientAuth"}`,
    `subjectAltName=${san}`,
    "",
  ].join("\n");
}

/** Host names and IPv4 addresses that may go into a SAN; anything else is dropped. */
export function isCertificateHost(host: string): boolean {
  return /^\d{1,3}(?:\.\d{1,3}){3}$/.test(host) || /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(host);
}

/**
 * Makes a new P-256 key at `keyPath` (mode 0600) and returns a PEM
 * certificate signing request for homeserver `homeserverId`: what a joining
 * homeserver sends, so its private key never leaves it.
 */
export async function createCertificateRequest(keyPath: string, homeserverId: string): Promise<string> {
  if (!isValidHomeserverId(homeserverId)) throw new CertificateError(`homeserver id ${JSON.stringify(homeserverId)} is not a DNS label`);
  const work = await mkdtemp(join(tmpdir(), "epochd-csr-"));
  try {
    const csrPath = join(work, "request.csr");
    await openssl(["req", "-new", ...keyArgs, "-keyout", keyPath, "-out", csrPath, "-subj", `/O=epochd/OU=${homeserverUnit}/CN=${homeserverId}`]);
    return await readFile(csrPath, "utf8");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** SHA-256 (hex) of the SPKI of a PEM public key, private key or certificate signing request. */
export async function publicKeyHash(pem: string): Promise<string> {
  const publicPem = pem.includes("CERTIFICATE REQUEST") ? await certificateRequestPublicKey(pem) : pem;
  const der = createPublicKey(publicPem).export({ format: "der", type: "spki" });
  return createHash("sha256").update(der).digest("hex");
}

/** The PEM public key of a signing request whose self-signature verifies; throws {@link CertificateError} otherwise. */
async function certificateRequestPublicKey(csrPem: string): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), "epochd-csr-"));
  try {
    const csrPath = join(work, "request.csr");
    await writeFile(csrPath, csrPem);
    return await openssl(["req", "-in", csrPath, "-noout", "-verify", "-pubkey"]);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Signs a joining homeserver's request with `ca`: the subject is set here
 * (O=epochd, OU=homeserver, CN=`homeserverId`), whatever the request asked
 * for; only its public key is taken. Returns the PEM certificate.
 */
export async function signCertificateRequest(
  ca: CertificateAuthority,
  csrPem: string,
  homeserverId: string,
  options: { extraHosts?: readonly string[]; validityDays?: number } = {},
): Promise<string> {
  if (!isValidHomeserverId(homeserverId)) throw new CertificateError(`homeserver id ${JSON.stringify(homeserverId)} is not a DNS label`);
  const work = await mkdtemp(join(tmpdir(), "epochd-sign-"));
  try {
    const [csrPath, extPath, certPath] = [join(work, "request.csr"), join(work, "cert.ext"), join(work, "cert.crt")];
    await writeFile(csrPath, csrPem);
    await writeFile(extPath, extensionsText(homeserverId, true, (options.extraHosts ?? []).filter(isCertificateHost)));
    await openssl(["x509", "-req", "-in", csrPath, "-CA", ca.certPath, "-CAkey", ca.keyPath,
      "-subj", `/O=epochd/OU=${homeserverUnit}/CN=${homeserverId}`,
      "-set_serial", `0x${randomBytes(16).toString("hex")}`, "-days", String(options.validityDays ?? 825),
      "-extfile", extPath, "-out", certPath]);
    return await readFile(certPath, "utf8");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Issues homeserver `homeserverId`'s key and certificate (server and client auth) in `dir`. */
export async function issueHomeserverCertificate(
  ca: CertificateAuthority,
  dir: string,
  homeserverId: string,
  options: { extraHosts?: readonly string[]; validityDays?: number } = {},
): Promise<TlsFiles> {
  if (!isValidHomeserverId(homeserverId)) {
    throw new CertificateError(`homeserver id ${JSON.stringify(homeserverId)} is not a DNS label`);
  }
  return issueCertificate(ca, dir, {
    unit: homeserverUnit, commonName: homeserverId, serverAuth: true,
    extraHosts: options.extraHosts ?? [], validityDays: options.validityDays ?? 825,
  });
}

/** Issues an operator client certificate (client auth only), for the admin API and the CLI. */
export async function issueOperatorCertificate(ca: CertificateAuthority, dir: string, name = "operator"): Promise<TlsFiles> {
  if (!isValidHomeserverId(name)) throw new CertificateError(`operator name ${JSON.stringify(name)} is not a DNS label`);
  return issueCertificate(ca, dir, { unit: operatorUnit, commonName: name, serverAuth: false, extraHosts: [], validityDays: 825 });
}

/** Everything `cluster up` needs: a CA, one certificate per homeserver, and the operator's. */
export interface ClusterCertificates {
  readonly ca: CertificateAuthority;
  readonly homeservers: ReadonlyMap<string, TlsFiles>;
  readonly operator: TlsFiles;
}

/** Creates a CA in `dir` and issues certificates for `homeserverIds` and one operator. */
export async function createClusterCertificates(dir: string, homeserverIds: readonly string[]): Promise<ClusterCertificates> {
  const ca = await createCertificateAuthority(dir);
  const homeservers = new Map<string, TlsFiles>();
  for (const id of homeserverIds) homeservers.set(id, await issueHomeserverCertificate(ca, dir, id));
  return { ca, homeservers, operator: await issueOperatorCertificate(ca, dir) };
}

/** Reads PEM files into memory for {@link PeerCredentials}. */
export async function loadTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const [ca, key, cert] = await Promise.all([readFile(files.caCertPath), readFile(files.keyPath), readFile(files.certPath)]);
  return { kind: "tls", ca, key, cert };
}
