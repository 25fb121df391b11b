/**
 * Joining a group from a Welcome, working around a ts-mls 1.6 bug in its ratchet-tree check.
 *
 * The ts-mls fact (1.6.4, the latest 1.x; fixed on its 2.0 main branch): `validateRatchetTree`, which
 * `joinGroup` runs on the Welcome's tree, demands that for every leaf L unmerged at a parent node P, EVERY
 * non-blank node on L's whole direct path holds an unmerged_leaves list EQUAL to P's. RFC 9420 (7.9.2) asks
 * only that the non-blank nodes strictly between L and P list L. Ordinary histories produce trees that the
 * RFC accepts and ts-mls 1.6 refuses, e.g. remove d1, then an add-only commit (no UpdatePath) fills leaf 1 (its
 * ancestors 3 and 7 list [1]), then another add fills leaf 5 (7 lists [1,5], 3 still [1]): the second
 * newcomer's joinGroup throws "non-blank intermediate node must list leaf node in its unmerged_leaves".
 * Members already in the group never run that check, so only joiners fail, and no way of building the
 * commit avoids it: nodes off the committer's path keep their lists (another member's key update sets
 * them), and a path commit clears the upper nodes while lower ones keep theirs.
 *
 * So joinFromWelcome runs ts-mls' joinGroup and, only when it fails with exactly that error, joins again
 * with the same steps built from ts-mls' own parts, checking the tree like validateRatchetTree does but
 * with the RFC's unmerged-leaves rule. It supports what the SDK's Welcomes hold (no PSKs, the tree in the
 * GroupInfo's ratchet_tree extension, no required_capabilities) and refuses anything else.
 */
import { joinGroup, emptyPskIndex, type CiphersuiteImpl, type ClientConfig, type ClientState, type Credential, type GroupContext, type KeyPackage, type PrivateKeyPackage, type RatchetTree, type Welcome } from "ts-mls";
import { validateLeafNodeUpdateOrCommit } from "ts-mls/clientState.js";
import { extensionsSupportedByCapabilities } from "ts-mls/extension.js";
import { ratchetTreeFromExtension, verifyGroupInfoConfirmationTag, verifyGroupInfoSignature } from "ts-mls/groupInfo.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { deriveKeySchedule } from "ts-mls/keySchedule.js";
import { verifyLeafNodeSignatureKeyPackage } from "ts-mls/leafNode.js";
import { verifyParentHashes } from "ts-mls/parentHash.js";
import { pathToRoot } from "ts-mls/pathSecrets.js";
import { mergePrivateKeyPaths, toPrivateKeyPath } from "ts-mls/privateKeyPath.js";
import { findLeafIndex } from "ts-mls/ratchetTree.js";
import { createSecretTree } from "ts-mls/secretTree.js";
import { treeHashRoot } from "ts-mls/treeHash.js";
import { directPath, isLeaf, leafToNodeIndex, leafWidth, toLeafIndex, toNodeIndex } from "ts-mls/treemath.js";
import { firstCommonAncestor } from "ts-mls/updatePath.js";
import { decryptGroupInfo, decryptGroupSecrets } from "ts-mls/welcome.js";
import { zeroOutUint8Array } from "ts-mls";
import { toHex } from "./mls-codec.ts";

/** The message ts-mls 1.6's over-strict unmerged-leaves check fails with. */
export const tsMlsUnmergedLeavesError = "non-blank intermediate node must list leaf node in its unmerged_leaves";

/** A Welcome the SDK refuses to join (the reason says which check failed). */
export class WelcomeRejectedError extends Error {
  constructor(reason: string) {
    super(`Welcome refused: ${reason}`);
    this.name = "WelcomeRejectedError";
  }
}

/**
 * RFC 9420 7.9.2's unmerged-leaves rule: every leaf L unmerged at a parent P is a non-blank leaf below P, and
 * every non-blank node strictly between L and P lists L. Returns the violation, or undefined.
 */
export function unmergedLeavesViolation(tree: RatchetTree): string | undefined {
  const width = leafWidth(tree.length);
  for (const [index, node] of tree.entries()) {
    if (node?.nodeType !== "parent") continue;
    for (const unmerged of node.parent.unmergedLeaves) {
      const leafNodeIndex = leafToNodeIndex(toLeafIndex(unmerged));
      const path = directPath(leafNodeIndex, width);
      const at = path.indexOf(toNodeIndex(index));
      if (tree[leafNodeIndex]?.nodeType !== "leaf" || at < 0) return `node ${index} lists leaf ${unmerged}, not a non-blank leaf below it`;
      for (const between of path.slice(0, at)) {
        const middle = tree[between];
        if (middle?.nodeType === "parent" && !middle.parent.unmergedLeaves.includes(unmerged)) return `node ${between} is between leaf ${unmerged} and node ${index} but does not list it`;
      }
    }
  }
  return undefined;
}

/** Structure, key uniqueness and each leaf's validity (what ts-mls' validateRatchetTree checks per node). */
async function nodesViolation(tree: RatchetTree, context: GroupContext, config: ClientConfig, cs: CiphersuiteImpl): Promise<string | undefined> {
  const hpkeKeys = new Set<string>();
  const signatureKeys = new Set<string>();
  const credentialTypes = new Set<Credential["credentialType"]>();
  for (const [index, node] of tree.entries()) {
    if (node === undefined) continue;
    if ((node.nodeType === "leaf") !== isLeaf(toNodeIndex(index))) return `node ${index} is a ${node.nodeType} at the wrong position`;
    const hpkeKey = toHex(node.nodeType === "leaf" ? node.leaf.hpkePublicKey : node.parent.hpkePublicKey);
    if (hpkeKeys.has(hpkeKey)) return "HPKE keys are not unique";
    hpkeKeys.add(hpkeKey);
    if (node.nodeType !== "leaf") continue;
    const leaf = node.leaf;
    const signatureKey = toHex(leaf.signaturePublicKey);
    if (signatureKeys.has(signatureKey)) return "signature keys are not unique";
    signatureKeys.add(signatureKey);
    credentialTypes.add(leaf.credential.credentialType);
    if (leaf.leafNodeSource === "key_package") {
      if (!(await verifyLeafNodeSignatureKeyPackage(leaf, cs.signature))) return `leaf ${index / 2} has a bad signature`;
      const nowS = BigInt(Math.floor(Date.now() / 1000));
      if (config.lifetimeConfig.validateLifetimeOnReceive && (leaf.lifetime.notBefore > nowS || leaf.lifetime.notAfter < nowS)) return `leaf ${index / 2} is outside its lifetime`;
      if (!(await config.authService.validateCredential(leaf.credential, leaf.signaturePublicKey))) return `leaf ${index / 2}: credential refused`;
      if (!extensionsSupportedByCapabilities(leaf.extensions, leaf.capabilities)) return `leaf ${index / 2} has an extension outside its capabilities`;
    } else {
      const error = await validateLeafNodeUpdateOrCommit(leaf, index / 2, context, config.authService, cs.signature);
      if (error !== undefined) return `leaf ${index / 2}: ${error.message}`;
    }
  }
  for (const node of tree) {
    if (node?.nodeType === "leaf" && [...credentialTypes].some((t) => !node.leaf.capabilities.credentials.includes(t))) return "a leaf does not support a credential type in use";
  }
  return undefined;
}

/** ts-mls' validateRatchetTree with RFC 9420's unmerged-leaves rule instead of ts-mls 1.6's stricter one. */
export async function ratchetTreeViolation(tree: RatchetTree, context: GroupContext, config: ClientConfig, cs: CiphersuiteImpl): Promise<string | undefined> {
  if (context.extensions.some((e) => e.extensionType === "required_capabilities")) return "required_capabilities is not supported by this join";
  const nodes = await nodesViolation(tree, context, config, cs);
  if (nodes !== undefined) return nodes;
  const unmerged = unmergedLeavesViolation(tree);
  if (unmerged !== undefined) return unmerged;
  if (!(await verifyParentHashes(tree, cs.hash))) return "parent hashes do not verify";
  const treeHash = await treeHashRoot(tree, cs.hash);
  if (toHex(treeHash) !== toHex(context.treeHash)) return "the tree does not match the GroupContext's tree hash";
  return undefined;
}

/** The join steps of ts-mls' joinGroupWithExtensions (no PSKs, no resumption) with ratchetTreeViolation. */
async function joinCheckingTreePerRfc(welcome: Welcome, keyPackage: KeyPackage, privateKeys: PrivateKeyPackage, cs: CiphersuiteImpl, config: ClientConfig): Promise<ClientState> {
  const ref = await makeKeyPackageRef(keyPackage, cs.hash);
  const secrets = await decryptGroupSecrets(await cs.hpke.importPrivateKey(privateKeys.initPrivateKey), ref, welcome, cs.hpke);
  if (secrets === undefined) throw new WelcomeRejectedError("group secrets do not decode");
  if (secrets.psks.length > 0) throw new WelcomeRejectedError("PSKs are not supported");
  const pskSecret = new Uint8Array(cs.kdf.size);
  const groupInfo = await decryptGroupInfo(welcome, secrets.joinerSecret, pskSecret, cs);
  if (groupInfo === undefined) throw new WelcomeRejectedError("GroupInfo does not decode");
  if (groupInfo.groupContext.cipherSuite !== keyPackage.cipherSuite) throw new WelcomeRejectedError("cipher suite differs from the KeyPackage's");
  if (!extensionsSupportedByCapabilities(groupInfo.groupContext.extensions, keyPackage.leafNode.capabilities)) throw new WelcomeRejectedError("unsupported GroupContext extension");
  const tree = ratchetTreeFromExtension(groupInfo);
  if (tree === undefined) throw new WelcomeRejectedError("no ratchet_tree extension");
  const signer = tree[leafToNodeIndex(toLeafIndex(groupInfo.signer))];
  if (signer?.nodeType !== "leaf") throw new WelcomeRejectedError("the GroupInfo's signer is not a leaf");
  if (!(await config.authService.validateCredential(signer.leaf.credential, signer.leaf.signaturePublicKey))) throw new WelcomeRejectedError("signer credential refused");
  if (!(await verifyGroupInfoSignature(groupInfo, signer.leaf.signaturePublicKey, cs.signature))) throw new WelcomeRejectedError("GroupInfo signature does not verify");
  const violation = await ratchetTreeViolation(tree, groupInfo.groupContext, config, cs);
  if (violation !== undefined) throw new WelcomeRejectedError(violation);
  const ownLeaf = findLeafIndex(tree, keyPackage.leafNode);
  if (ownLeaf === undefined) throw new WelcomeRejectedError("own leaf not in the tree");
  const leafKeys = { leafIndex: ownLeaf, privateKeys: { [leafToNodeIndex(ownLeaf)]: privateKeys.hpkePrivateKey } };
  const ancestor = firstCommonAncestor(tree, ownLeaf, toLeafIndex(groupInfo.signer));
  const privatePath = secrets.pathSecret === undefined ? leafKeys : mergePrivateKeyPaths(await toPrivateKeyPath(await pathToRoot(tree, ancestor, secrets.pathSecret, cs.kdf), ownLeaf, cs), leafKeys);
  const [keySchedule, encryptionSecret] = await deriveKeySchedule(secrets.joinerSecret, pskSecret, groupInfo.groupContext, cs.kdf);
  if (!(await verifyGroupInfoConfirmationTag(groupInfo, secrets.joinerSecret, pskSecret, cs))) throw new WelcomeRejectedError("confirmation tag does not verify");
  const secretTree = await createSecretTree(leafWidth(tree.length), encryptionSecret, cs.kdf);
  zeroOutUint8Array(encryptionSecret);
  zeroOutUint8Array(secrets.joinerSecret);
  return {
    groupContext: groupInfo.groupContext,
    ratchetTree: tree,
    privatePath,
    signaturePrivateKey: privateKeys.signaturePrivateKey,
    confirmationTag: groupInfo.confirmationTag,
    unappliedProposals: {},
    keySchedule,
    secretTree,
    historicalReceiverData: new Map(),
    groupActiveState: { kind: "active" },
    clientConfig: config,
  };
}

/**
 * Joins from a Welcome with ts-mls' joinGroup; when ts-mls 1.6 refuses the tree only for its over-strict
 * unmerged-leaves rule (see the module doc), joins with the RFC's rule instead. Any other failure throws.
 */
export async function joinFromWelcome(welcome: Welcome, keyPackage: KeyPackage, privateKeys: PrivateKeyPackage, cs: CiphersuiteImpl, config: ClientConfig): Promise<ClientState> {
  try {
    return await joinGroup(welcome, keyPackage, privateKeys, emptyPskIndex, cs, undefined, undefined, config);
  } catch (error) {
    if (!(error instanceof Error) || error.message !== tsMlsUnmergedLeavesError) throw error;
    return joinCheckingTreePerRfc(welcome, keyPackage, privateKeys, cs, config);
  }
}
