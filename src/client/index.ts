/**
 * The epochd client SDK: devices, a connection to the cluster, and channel handles that apply only
 * certified commits and retry lost commit races on their own. Start with Device.create, new ChannelClient,
 * then Channel.create or Channel.join.
 */
export { Channel, CertificatePendingError, LeavingError, type ChannelOptions, type CommitOutcome, type Received } from "./channel.ts";
export { WelcomeRejectedError } from "./welcome-join.ts";
export { ChannelClient, type ChannelClientOptions, type ProposalOutcome, type PublishIdentityOptions } from "./channel-client.ts";
export { Device, type OwnKeyPackage } from "./device.ts";
export { verifyCertificate, verifyUnderDirectory, majorityOf, signedStatementBytes, importEd25519PublicKey, type CertificateVerdict, type DirectorySource, type ExpectedCommit } from "./certificate.ts";
export { CertificateError, CommitRetriesExhaustedError, ForkError, NotAMemberError, type ChannelTransport, type ClusterDirectory, type SubmitOutcome } from "./transport.ts";
export { toHex, treeHomeservers, type TreeMember } from "./mls-codec.ts";
export { runDemo, runDemoOn, type DemoResult } from "./demo.ts";
export { InboxClient, sendDirect, type InboxClientOptions } from "./inbox-client.ts";
export { DeviceSession, type DeviceSessionOptions } from "./session.ts";
export { DirectoryClient, verifyIdentityRecord, type DirectoryClientOptions } from "./directory-client.ts";
export { signIdentityRecord, generateInboxKeyPair, type DeviceSigner, type IdentityRecordFields, type InboxKeyPair } from "./identity-record.ts";
