/**
 * A device: the MLS identity a user runs on one piece of hardware. It owns one Ed25519 signature key pair
 * (reused by every KeyPackage and every group it joins), a Basic credential whose identity is its device id
 * `name@homeserver`, and the private halves of the KeyPackages it has handed out, kept until a Welcome
 * consumes one.
 */
import {
  defaultCapabilities,
  defaultLifetime,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  type CiphersuiteImpl,
  type ClientConfig,
  type Credential,
  type KeyPackage,
  type PrivateKeyPackage,
  type Welcome,
} from "ts-mls";
import { defaultClientConfig } from "ts-mls/clientConfig.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { channelCipherSuite, deviceIdentityBytes, parseDeviceId } from "../mls/identity.ts";
import { encodeKeyPackageMessage, toHex } from "./mls-codec.ts";
import { witnessesExtensionType } from "../mls/witnesses.ts";

/** At most this many unused KeyPackages are kept per device; older ones are forgotten first. */
export const keyPackagesKeptMax = 64;

/** A KeyPackage the device made, with its private keys. */
export interface OwnKeyPackage {
  readonly publicPackage: KeyPackage;
  readonly privatePackage: PrivateKeyPackage;
}

/**
 * The client's authentication service: a leaf is acceptable only with a Basic credential holding a valid
 * device id (the convention the homeservers enforce too). ts-mls' default accepts anything.
 * Binding the signature key to the device (DIRs) is the identity service's job and not checked here.
 */
export const deviceAuthenticationService: ClientConfig["authService"] = {
  validateCredential(credential: Credential): Promise<boolean> {
    return Promise.resolve(credential.credentialType === "basic" && parseDeviceId(credential.identity) !== undefined);
  },
};

/** The ts-mls client configuration every channel of the SDK uses. */
export const sdkClientConfig: ClientConfig = { ...defaultClientConfig, authService: deviceAuthenticationService };

let suiteImpl: Promise<CiphersuiteImpl> | undefined;

/** The (cached) cipher suite implementation: suite 1, the only one channels accept. */
export function clientSuiteImpl(): Promise<CiphersuiteImpl> {
  suiteImpl ??= getCiphersuiteImpl(getCiphersuiteFromName(channelCipherSuite));
  return suiteImpl;
}

/** A device with its signing key and the private halves of its outstanding KeyPackages. */
export class Device {
  /** Invariant: insertion order = age; at most keyPackagesKeptMax entries. Keyed by hex KeyPackageRef. */
  private readonly keyPackages = new Map<string, OwnKeyPackage>();

  private constructor(
    /** The device id, e.g. `alice.phone@hs1`. */
    readonly id: string,
    /** The sponsoring homeserver (after the last '@'). */
    readonly homeserver: string,
    /** The device's MLS credential (Basic, identity = UTF-8 device id). */
    readonly credential: Credential,
    /** The device's signature key pair, reused across KeyPackages. Keep `signKey` secret. */
    readonly signatureKeyPair: { readonly signKey: Uint8Array; readonly publicKey: Uint8Array },
    /** The cipher suite implementation. */
    readonly impl: CiphersuiteImpl,
  ) {}

  /** Creates a device with a fresh signature key pair; throws if `deviceId` is not `name@homeserver`. */
  static async create(deviceId: string): Promise<Device> {
    const parsed = parseDeviceId(deviceIdentityBytes(deviceId));
    if (parsed === undefined) throw new Error(`${JSON.stringify(deviceId)} is not a device id (name@homeserver)`);
    const impl = await clientSuiteImpl();
    const keyPair = await impl.signature.keygen();
    const credential: Credential = { credentialType: "basic", identity: deviceIdentityBytes(deviceId) };
    return new Device(deviceId, parsed.homeserver, credential, keyPair, impl);
  }

  /** Signs `message` with the device's Ed25519 key (its DIR key): login statements and identity records. */
  sign(message: Uint8Array): Promise<Uint8Array> {
    return this.impl.signature.sign(this.signatureKeyPair.signKey, message);
  }

  /** Makes a KeyPackage, keeps its private half, and returns it (the object, for createChannel). */
  async newKeyPackage(): Promise<OwnKeyPackage> {
    const made = await generateKeyPackageWithKey(this.credential, deviceCapabilities(), defaultLifetime, [], { ...this.signatureKeyPair }, this.impl);
    const ref = toHex(await makeKeyPackageRef(made.publicPackage, this.impl.hash));
    this.keyPackages.set(ref, made);
    while (this.keyPackages.size > keyPackagesKeptMax) {
      const oldest = this.keyPackages.keys().next().value;
      if (oldest === undefined) break;
      this.keyPackages.delete(oldest);
    }
    return made;
  }

  /** Makes a KeyPackage and returns it MLSMessage-framed, ready to hand to an adder. */
  async publishKeyPackage(): Promise<Uint8Array> {
    return encodeKeyPackageMessage((await this.newKeyPackage()).publicPackage);
  }

  /** Removes and returns the own KeyPackage a Welcome is addressed to, or undefined if none is. */
  takeKeyPackageFor(welcome: Welcome): OwnKeyPackage | undefined {
    for (const secret of welcome.secrets) {
      const ref = toHex(secret.newMember);
      const found = this.keyPackages.get(ref);
      if (found !== undefined) {
        this.keyPackages.delete(ref);
        return found;
      }
    }
    return undefined;
  }

  /** Forgets a KeyPackage made with newKeyPackage (e.g. the one that created a channel). */
  async forgetKeyPackage(keyPackage: KeyPackage): Promise<void> {
    this.keyPackages.delete(toHex(await makeKeyPackageRef(keyPackage, this.impl.hash)));
  }
}

/** ts-mls' default capabilities plus the witnesses GroupContext extension, so the device can join channels that name witnesses. */
export function deviceCapabilities(): ReturnType<typeof defaultCapabilities> {
  const capabilities = defaultCapabilities();
  return { ...capabilities, extensions: [...capabilities.extensions, witnessesExtensionType] };
}
