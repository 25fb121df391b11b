/**
 * Checks 1, 5, 7 and 8: what a server can learn from a message's framing alone, without group secrets.
 * Synchronous, total and deterministic.
 */
import type { ContentTypeName } from "ts-mls";
import { bytesEqual, checkFramedSize, decodeFramed, sha256, shortWireformat, toHex, trailingBytes, undecodable, type WireformatShortName } from "./decode.ts";
import { readPrivateFraming, type PrivateFraming } from "./private-framing.ts";
import { channelCipherSuite } from "./identity.ts";
import { maxGroupInfoBytes, maxKeyPackageBytes, maxMessageBytes, maxWelcomeBytes, maxWelcomeRecipients } from "./limits.ts";
import type { PublicGroupView } from "./group-view.ts";
import { epochMismatch } from "./public-message.ts";
import { guardedSync, reject, type Rejection } from "./rejection.ts";

/** The framing of any MLSMessage a client submits. */
export interface InspectedMessage {
  readonly ok: true;
  readonly wireformat: WireformatShortName;
  /** For public and private messages. */
  readonly groupId?: Uint8Array;
  readonly epoch?: bigint;
  readonly contentType?: ContentTypeName;
  /** For a PublicMessage from a member (unauthenticated here: see verifyPublicCommit/verifyPublicProposal). */
  readonly senderLeafIndex?: number;
  readonly byteSize: number;
}

const maxAnyBytes = Math.max(maxMessageBytes, maxGroupInfoBytes, maxWelcomeBytes, maxKeyPackageBytes);

function limitFor(wireformat: WireformatShortName): number {
  switch (wireformat) {
    case "public":
    case "private":
      return maxMessageBytes;
    case "welcome":
      return maxWelcomeBytes;
    case "group_info":
      return maxGroupInfoBytes;
    case "key_package":
      return maxKeyPackageBytes;
  }
}

/** Decodes any MLSMessage and reports its framing, with each wire format's own size limit. */
export function inspectMessage(bytes: Uint8Array): InspectedMessage | Rejection {
  return guardedSync("message", () => {
    // PrivateMessages (every message of a channel with encrypted handshakes, every application message) by hand.
    const framing = readPrivate(bytes, maxAnyBytes, "message");
    if (framing !== "other-wireformat") {
      if ("reason" in framing) return framing;
      return overLimit("private", bytes) ?? { ok: true, wireformat: "private", byteSize: bytes.length, groupId: framing.groupId, epoch: framing.epoch, contentType: framing.contentType };
    }
    const message = decodeFramed(bytes, maxAnyBytes, "message");
    if ("reason" in message) return message;
    const wireformat = shortWireformat(message);
    const tooLarge = overLimit(wireformat, bytes);
    if (tooLarge !== undefined) return tooLarge;
    const base = { ok: true as const, wireformat, byteSize: bytes.length };
    if (message.wireformat === "mls_private_message") {
      const m = message.privateMessage;
      return { ...base, groupId: m.groupId, epoch: m.epoch, contentType: m.contentType };
    }
    if (message.wireformat === "mls_public_message") {
      const c = message.publicMessage.content;
      const sender = c.sender.senderType === "member" ? { senderLeafIndex: c.sender.leafIndex } : {};
      return { ...base, groupId: c.groupId, epoch: c.epoch, contentType: c.contentType, ...sender };
    }
    if (message.wireformat === "mls_group_info") {
      const g = message.groupInfo.groupContext;
      return { ...base, groupId: g.groupId, epoch: g.epoch };
    }
    return base;
  });
}

/** `bytes`' wire format's size limit, if it exceeds it. */
function overLimit(wireformat: WireformatShortName, bytes: Uint8Array): Rejection | undefined {
  const limit = limitFor(wireformat);
  return bytes.length > limit ? reject(`message: ${bytes.length} bytes exceeds the ${wireformat} limit of ${limit}`) : undefined;
}

/**
 * The framing of `bytes` if they are one PrivateMessage of at most
 * `maxBytes`, as decodeFramed would refuse them if they are not, or
 * "other-wireformat" for another wire format (left to decodeFramed).
 */
function readPrivate(bytes: Uint8Array, maxBytes: number, what: string): PrivateFraming | Rejection | "other-wireformat" {
  const unfit = checkFramedSize(bytes, maxBytes, what);
  if (unfit !== undefined) return unfit;
  const framing = readPrivateFraming(bytes);
  if (framing === "undecodable") return undecodable(what);
  if (framing !== "other-wireformat" && "trailingBytes" in framing) return trailingBytes(what, framing.trailingBytes);
  return framing;
}

function inspectPrivate(groupId: Uint8Array, bytes: Uint8Array, contentType: "commit" | "application", what: string): { epoch: bigint } | Rejection {
  const framing = readPrivate(bytes, maxMessageBytes, what);
  if (framing === "other-wireformat") return refuseOtherWireformat(bytes, what);
  if ("reason" in framing) return framing;
  if (!bytesEqual(framing.groupId, groupId)) return reject(`${what}: addressed to another group`);
  if (framing.contentType !== contentType) return reject(`${what}: content type is ${framing.contentType}, expected ${contentType}`);
  return { epoch: framing.epoch };
}

/** The reason a message that is not a PrivateMessage is refused where one is required (decoded in full, for that reason). */
function refuseOtherWireformat(bytes: Uint8Array, what: string): Rejection {
  const message = decodeFramed(bytes, maxMessageBytes, what);
  if ("reason" in message) return message;
  if (message.wireformat === "mls_public_message") return reject(`${what}: got a PublicMessage where a PrivateMessage is required`);
  return reject(`${what}: wire format ${message.wireformat} is not a PrivateMessage`);
}

/**
 * Check 5, for channels with encrypted handshakes: a PrivateMessage commit can only be checked for its
 * framing (size, group id, epoch = the view's, content type commit). The sender is encrypted, so role
 * policy is the members' job on such channels.
 */
export function inspectPrivateCommit(view: PublicGroupView, bytes: Uint8Array): { ok: true; epoch: bigint; commitHash: Uint8Array } | Rejection {
  return guardedSync("commit", () => {
    const framed = inspectPrivate(view.groupId, bytes, "commit", "commit");
    if ("reason" in framed) return framed;
    if (framed.epoch !== view.epoch) return epochMismatch("commit", framed.epoch, view.epoch);
    return { ok: true, epoch: framed.epoch, commitHash: sha256(bytes) };
  });
}

/**
 * Check 7: an application message is a PrivateMessage of this group with content type application. Returns
 * the epoch it was encrypted in; the channel decides which epochs it still accepts.
 */
export function inspectApplicationMessage(groupId: Uint8Array, bytes: Uint8Array): { ok: true; epoch: bigint; byteSize: number } | Rejection {
  return guardedSync("application message", () => {
    const framed = inspectPrivate(groupId, bytes, "application", "application message");
    if ("reason" in framed) return framed;
    return { ok: true, epoch: framed.epoch, byteSize: bytes.length };
  });
}

/** A Welcome as the server sees it: its size and the KeyPackage refs of its recipients. */
export interface InspectedWelcome {
  readonly ok: true;
  readonly byteSize: number;
  /** EncryptedGroupSecrets.new_member of every recipient, in order: KeyPackageRefs, for routing. */
  readonly recipients: readonly Uint8Array[];
}

/**
 * Check 8: decodes a Welcome (MLSMessage framing), checks its size, suite and recipient count, and lists
 * its recipients. When `expectedRecipients` is given (the KeyPackage refs of a commit's adds), the
 * recipients must be exactly those, in any order. The contents are encrypted to the recipients.
 */
export function inspectWelcome(bytes: Uint8Array, expectedRecipients?: readonly Uint8Array[]): InspectedWelcome | Rejection {
  return guardedSync("Welcome", () => {
    const message = decodeFramed(bytes, maxWelcomeBytes, "Welcome");
    if ("reason" in message) return message;
    if (message.wireformat !== "mls_welcome") return reject(`Welcome: wire format ${message.wireformat} is not a Welcome`);
    const welcome = message.welcome;
    if (welcome.cipherSuite !== channelCipherSuite) return reject("Welcome: cipher suite is not allowed");
    if (welcome.secrets.length === 0) return reject("Welcome: has no recipients");
    if (welcome.secrets.length > maxWelcomeRecipients) return reject(`Welcome: more than ${maxWelcomeRecipients} recipients`);
    const recipients = welcome.secrets.map((s) => s.newMember);
    if (expectedRecipients !== undefined) {
      const got = recipients.map(toHex).sort();
      const want = expectedRecipients.map(toHex).sort();
      if (got.length !== want.length || got.some((r, i) => r !== want[i])) return reject("Welcome: recipients are not the devices the commit adds");
    }
    return { ok: true, byteSize: bytes.length, recipients };
  });
}
