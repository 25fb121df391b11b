/**
 * Size limits of the server-side MLS checks. Every input is measured against one of these BEFORE it is
 * decoded, so a client cannot make a homeserver spend memory or CPU on an oversized message. They are
 * constants, not configuration: apply runs on every homeserver and must decide the same way everywhere.
 */

/** Largest PublicMessage or PrivateMessage (commit, proposal or application message) accepted, in bytes. */
export const maxMessageBytes = 1_048_576;

/**
 * Largest GroupInfo (MLSMessage framing, ratchet tree extension included) accepted, in bytes. A suite 1
 * tree costs about 300 bytes per member, so this leaves room for {@link maxMembers} with margin.
 */
export const maxGroupInfoBytes = 2_097_152;

/** Largest Welcome accepted, in bytes (it carries the encrypted GroupInfo, tree included). */
export const maxWelcomeBytes = 2_097_152;

/** Largest KeyPackage accepted on its own, in bytes (suite 1 KeyPackages are about 320 bytes). */
export const maxKeyPackageBytes = 65_536;

/** Most leaves (members plus blank leaves) a channel's ratchet tree may have. */
export const maxMembers = 1024;

/** Most proposals (by value and by reference together) one commit may carry. */
export const maxProposalsPerCommit = 256;

/** Most recipients one Welcome may address. */
export const maxWelcomeRecipients = maxMembers;

/** Longest device id (UTF-8 bytes of a Basic credential's identity). */
export const maxDeviceIdBytes = 255;
