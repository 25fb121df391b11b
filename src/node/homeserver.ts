/**
 * A homeserver process: the composition root that opens storage, starts the
 * peer transport, the Raft driver and the gRPC servers, and stops them in
 * reverse order.
 */
import type { Server as HttpServer } from "node:http";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import { addAdminService } from "../api/admin-service.ts";
import { addAuthService } from "../api/auth-service.ts";
import { addIdentityService } from "../api/identity-service.ts";
import { addKeyPackageService } from "../api/keypackage-service.ts";
import { ChallengeStore } from "../auth/challenges.ts";
import { file_epochd_auth_v1_auth } from "../gen/epochd/auth/v1/auth_pb.ts";
import { file_epochd_identity_v1_identity } from "../gen/epochd/identity/v1/identity_pb.ts";
import { file_epochd_keypackage_v1_keypackage } from "../gen/epochd/keypackage/v1/keypackage_pb.ts";
import { addChannelService } from "../api/channel-service.ts";
import { addKvService } from "../api/kv-service.ts";
import { addInboxService } from "../api/inbox-service.ts";
import { addJoinService } from "../api/join-service.ts";
import { file_epochd_admin_v1_join } from "../gen/epochd/admin/v1/join_pb.ts";
import { addReflection } from "../api/reflection.ts";
import { hostTestGroups } from "../api/test-group-service.ts";
import { loadOrCreateAuthSecret } from "../auth/auth-secret.ts";
import { TokenAuthenticator } from "../auth/client-authenticator.ts";
import { TokenIssuer } from "../auth/token.ts";
import { file_epochd_inbox_v1_inbox } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import { InboxFanout } from "../inbox/inbox-fanout.ts";
import { defaultInboxLimits } from "../inbox/inbox-limits.ts";
import { InboxStore } from "../inbox/inbox-store.ts";
import { localWriter } from "../inbox/local-write.ts";
import { file_epochd_admin_v1_admin } from "../gen/epochd/admin/v1/admin_pb.ts";
import { file_epochd_channel_v1_channel } from "../gen/epochd/channel/v1/channel_pb.ts";
import { file_epochd_kv_v1_kv } from "../gen/epochd/kv/v1/kv_pb.ts";
import { RaftDriver } from "../multiraft/raft-driver.ts";
import { defaultRaftConfig } from "../raft/raft.ts";
import { Role } from "../raft/types.ts";
import { StorageEngine } from "../storage/storage-engine.ts";
import { serverCredentials } from "../transport/credentials.ts";
import { PeerTransport } from "../transport/peer-transport.ts";
import { peerServerOptions } from "../transport/peer-service.ts";
import { loadTlsMaterial, type PeerCredentials } from "../transport/tls.ts";
import { ClusterStateMachine } from "./cluster-state-machine.ts";
import { ChannelClaims } from "./channel-claim.ts";
import { ChannelGroups } from "./channel-groups.ts";
import { ChannelStateMachine } from "../channel/channel-state-machine.ts";
import { raftTicks, type NodeConfig } from "./config.ts";
import type { HomeserverRecord } from "./directory-command.ts";
import { CertificateCollector } from "./certificate-collector.ts";
import { CertificateLookup } from "./certificate-lookup.ts";
import { hastenFirstElection } from "./first-election.ts";
import { BootstrapCheck, bootstrapAnswerOf, bootstrapAnswerTopic, bootstrapAskTopic, bootstrapCheckPending, encodeBootstrapAnswer, holdForBootstrapCheck, isAtBootstrapState, markBootstrapCheck } from "./bootstrap-check.ts";
import { CertificateExchange, signatureBatchTopic } from "./certificate-exchange.ts";
import { assertNotLeft, wireDirectory } from "./directory-wiring.ts";
import { NodeMetrics } from "./metrics.ts";
import { collectGarbage } from "./collect-garbage.ts";
import { SelfRegistration } from "./self-registration.ts";
import { loadOrCreateSigningKey } from "./signing-key.ts";

/** The Raft group holding the cluster directory and the key-value store. */
export const clusterGroupId = "cluster";
/** After this many groups were unloaded (hibernation) a full garbage collection follows, at most every {@link gcIntervalMsMin}. */
const gcAfterUnloadingGroups = 500;
const gcIntervalMsMin = 30_000;
/**
 * No forced collection while more groups than this are awake: the full
 * collection stops the process for 50 to 150 ms at a few hundred MB (measured
 * in the commits bench), and a busy process allocates enough for V8 to
 * collect on its own. The forced one is for a quiet process, which does not.
 */
const gcAwakeGroupsMax = 8;

/** A running homeserver. */
export class Homeserver {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly config: NodeConfig,
    private readonly logger: Logger,
    readonly driver: RaftDriver,
    private readonly engine: StorageEngine,
    private readonly transport: PeerTransport,
    private readonly peerServer: grpc.Server,
    private readonly clientServer: grpc.Server,
    private readonly health: HealthImplementation,
    private readonly metricsServer: HttpServer | undefined,
    private readonly stopHooks: ReadonlyArray<() => void>,
  ) {}

  /**
   * Opens the data directory and starts serving. Throws (and releases what it opened) on failure.
   * `onLeft` is called once the homeserver has left its cluster (`epochd leave`): the process should stop.
   */
  static async start(config: NodeConfig, logger: Logger, onFatal: (error: unknown) => void, onLeft: () => void = () => {}): Promise<Homeserver> {
    const metrics = new NodeMetrics();
    const engine = await StorageEngine.open(join(config.dataDir, "db"), {
      sync: config.sync,
      onSyncLatency: (ms) => metrics.fsyncSeconds.observe(ms / 1000),
    });
    // What assemble started so far, undone in reverse if a later step fails (a port already taken, a
    // corrupt record): a homeserver that cannot start must not keep half of itself serving.
    const started: Array<() => unknown> = [];
    try {
      return await Homeserver.assemble(config, logger, onFatal, onLeft, metrics, engine, started);
    } catch (error) {
      for (const undo of started.reverse()) await Promise.resolve(undo()).catch(() => undefined);
      await engine.close().catch(() => undefined);
      throw error;
    }
  }

  private static async assemble(
    config: NodeConfig,
    logger: Logger,
    onFatal: (error: unknown) => void,
    onLeft: () => void,
    metrics: NodeMetrics,
    engine: StorageEngine,
    started: Array<() => unknown>,
  ): Promise<Homeserver> {
    // Used only if the data directory is new: the initial members, or this homeserver alone.
    const initialVoters = !config.bootstrap ? [] : config.peers.length > 0 ? config.peers.map((p) => p.id) : [config.id];
    const store = await engine.openGroup(clusterGroupId, initialVoters);
    // Possibly a data directory lost and made anew: no votes until the peers have answered (bootstrap-check.ts).
    const checkBootstrap = bootstrapCheckPending(config.dataDir) || isAtBootstrapState(store.log, initialVoters);
    if (checkBootstrap) markBootstrapCheck(config.dataDir);
    const credentials: PeerCredentials = config.insecure
      ? { kind: "insecure" }
      : await loadTlsMaterial({ caCertPath: config.tlsCaCert, certPath: config.tlsCert, keyPath: config.tlsKey });
    const clientAddresses = new Map(config.peers.map((p) => [p.id, p.clientAddress]));
    // The driver and transport refer to each other; the late binding is confined to these closures.
    let driver: RaftDriver | undefined;
    let exchange: CertificateExchange | undefined;
    let groups: ChannelGroups | undefined;
    let bootstrapCheck: BootstrapCheck | undefined;
    const transport = new PeerTransport({
      selfId: config.id,
      peers: new Map(config.peers.filter((p) => p.id !== config.id).map((p) => [p.id, p.peerAddress])),
      credentials,
      logger: logger.child({ component: "transport" }),
      onMessages: (from, messages) => driver?.receive(from, messages),
      // A leader's snapshot goes to storage chunk by chunk; the group's core gets a descriptor of it.
      openSnapshotSink: (groupId) => engine.stageSnapshot(groupId),
      onNotices: (from, notices) => {
        for (const notice of notices) {
          if (notice.topic === signatureBatchTopic) exchange?.onNotice(from, notice.payload);
          else if (notice.topic === bootstrapAskTopic) {
            if (driver === undefined) continue;
            const addresses = transport.peerAddresses();
            const answer = bootstrapAnswerOf(driver.status(clusterGroupId), (id) => (id === config.id ? config.peerListen : addresses.get(id)));
            transport.sendNotice(from, { topic: bootstrapAnswerTopic, payload: encodeBootstrapAnswer(answer) });
          } else if (notice.topic === bootstrapAnswerTopic) bootstrapCheck?.onAnswer(from, notice.payload);
          else groups?.onNotice(from, notice.topic, notice.payload);
        }
      },
      onSnapshotStatus: (to, groupId, ok) => driver?.reportSnapshot(to, groupId, ok),
      onUnreachable: (to) => {
        driver?.reportUnreachable(to);
        driver?.peerLost(to);
      },
    });
    started.push(() => transport.close());
    started.push(() => driver?.stop());
    const ticks = raftTicks(config);
    const base = defaultRaftConfig(config.id, clusterGroupId, store.log, Math.random);
    let unloadedSinceGc = 0;
    let lastGcMs = 0;
    driver = new RaftDriver({
      selfId: config.id,
      engine,
      transport,
      logger: logger.child({ component: "raft" }),
      raft: { ...base, ...ticks },
      tickIntervalMs: config.tickIntervalMs,
      random: Math.random,
      snapshotEveryEntries: config.snapshotEveryEntries,
      snapshotKeepEntries: config.snapshotKeepEntries,
      snapshotEveryBytes: config.snapshotEveryBytes,
      snapshotKeepBytes: config.snapshotKeepBytes,
      clientAddressOf: (id) => clientAddresses.get(id) ?? "",
      observer: metrics.observer(),
      onFatal,
      // A follower's signatures on commits it just stored leave before its acknowledgements (see CertificateExchange.signNow).
      afterStoredNext: () => exchange?.signNow(),
      // Groups added with balanceLeadership (channel and test groups) that are loaded: hand some over when
      // leading more than a share. Hibernating groups cost nothing whoever leads them and are left alone.
      balanceLeadersEveryMs: config.balanceLeadersEveryMs,
      hibernateAfterMs: config.hibernateAfterMs,
      loadedGroupsMax: config.loadedGroupsMax,
      // Many groups left memory: collect them now rather than whenever V8 next feels pressed.
      // Collect while a long wave of unloads goes on (every gcIntervalMsMin), and once more when it ends,
      // but only while the homeserver is otherwise quiet (see gcAwakeGroupsMax).
      onHibernated: (unloaded) => {
        unloadedSinceGc += unloaded;
        if ((driver?.counts().awake ?? 0) > gcAwakeGroupsMax) return;
        const waveOver = unloaded === 0 && unloadedSinceGc >= gcAfterUnloadingGroups / 5 && Date.now() - lastGcMs >= gcIntervalMsMin / 6;
        if (!waveOver && (unloadedSinceGc < gcAfterUnloadingGroups || Date.now() - lastGcMs < gcIntervalMsMin)) return;
        const groups = unloadedSinceGc;
        unloadedSinceGc = 0;
        lastGcMs = Date.now();
        const startMs = performance.now();
        collectGarbage();
        logger.info({ groupsUnloaded: groups, pauseMs: Math.round(performance.now() - startMs) }, "full garbage collection after channel groups left memory");
      },
      onForeignMessage: (from, groupId) => groups?.onForeignMessage(from, groupId),
      onUnhostedMessage: (from, groupId) => groups?.onUnhostedMessage(from, groupId),
      admitForwarded: (groupId, message) => (groups === undefined ? message : groups.admitForwarded(groupId, message)),
    });
    const signingKey = loadOrCreateSigningKey(config.dataDir);
    /** Follows the replicated directory: leader hints and peer links. */
    const learnHomeserver = (record: HomeserverRecord) => {
      clientAddresses.set(record.id, record.clientAddress);
      if (record.id !== config.id) transport.setPeer(record.id, record.peerAddress);
    };
    let claims: ChannelClaims | undefined;
    const stateMachine = new ClusterStateMachine(store, config.clusterId, {
      onDirectoryChange: learnHomeserver,
      onChannelClaim: (channelId) => claims?.applied(channelId),
    });
    claims = new ChannelClaims(config.id, (channelId) => stateMachine.channelClaim(channelId), (data) => driver.proposeAnywhere(clusterGroupId, data));
    /** The channels hosted here, each in its own group (see channel-groups.ts). */
    const channels = new ChannelStateMachine({
      clusterId: config.clusterId,
      signingKeyOf: (id) => stateMachine.signingKeyOf(id),
      votersOf: (channelId) => groups?.votersOf(channelId),
    });
    const collector = new CertificateCollector(config.clusterId, (id) => stateMachine.signingKeyOf(id), (certificate) => {
      exchange?.onComplete(certificate);
      certificates.onCollected(certificate);
    });
    const certificates = new CertificateLookup((channelId, epoch) => collector.certificate(channelId, epoch), channels, (channelId, key) =>
      groups?.hosts(channelId) === true ? groups.channelGet(channelId, key) : Promise.resolve(undefined),
    );
    exchange = new CertificateExchange({
      selfId: config.id,
      key: signingKey,
      collector,
      sendNotice: (to, topic, payload) => transport.sendNotice(to, { topic, payload }),
      propose: (channelId, data) => groups?.proposeAnywhere(channelId, data) ?? false,
      isLeader: (channelId) => groups?.leads(channelId) ?? false,
      leaderOf: (channelId) => groups?.leaderOf(channelId),
      recordAtOnce: (certificate) => channels.channel(certificate.channelId)?.members.some((m) => !certificate.voters.includes(m.homeserverId)) === true,
      onRefused: (from, reason) => logger.warn({ from, reason }, "certificate signatures from a peer refused"),
    });
    let inboxStore: InboxStore | undefined;
    const inboxObserver = metrics.watchInbox(() => inboxStore?.totalEntries() ?? 0);
    inboxStore = new InboxStore({ scan: (prefix, limit, from) => store.scan(prefix, limit, from), write: localWriter(engine, store) }, defaultInboxLimits, inboxObserver);
    const inbox = new InboxFanout(config.id, inboxStore, channels);
    stateMachine.attachInbox(inbox);
    // A crash part-way through restoring a leader's snapshot leaves a mix of old and new records: the
    // driver restores again when it hosts the group, and the checks below wait for that.
    const snapshotIndex = store.log.snapshot().metadata.index;
    const restoreLeftUndone = store.appliedIndex < snapshotIndex;
    if (!restoreLeftUndone) {
      await stateMachine.load();
      assertNotLeft(stateMachine, config.id);
      for (const record of stateMachine.homeservers().values()) learnHomeserver(record);
    }
    // Lazy commit notices: under load a follower applies entry k in the write that stores k + 1; an
    // idle one learns a commit `commitNoticeDelayMs` (2 ms) later. Reads a client's next step depends
    // on do not trust the applied state alone: ListHomeservers, identity and KeyPackage reads confirm
    // a read index, and login catches up before refusing an unknown device. Channel apply reads
    // nothing of this group (see docs/ARCHITECTURE.md), so it does not matter to apply how far
    // behind a homeserver's copy is.
    await driver.addGroup(store, stateMachine, { lazyCommitNotices: true });
    // Held from the first message a peer may send; the check below releases them.
    if (checkBootstrap) holdForBootstrapCheck(driver, clusterGroupId);
    if (restoreLeftUndone) assertNotLeft(stateMachine, config.id); // restored (and its directory learned) just now
    groups = new ChannelGroups({
      selfId: config.id,
      engine,
      driver,
      channels,
      inbox,
      inboxStore: store,
      sendNotice: (to, topic, payload) => transport.sendNotice(to, { topic, payload }),
      claim: (channelId, waitMs) => claims.claim(channelId, waitMs),
      onChannelResult: (result) => {
        exchange?.onChannelResult(result);
        certificates.onChannelResult(result);
      },
      onCommitAccepted: (result, index) => exchange?.onCommitAccepted(result, index),
      onCommitStored: (commit) => exchange?.onCommitStored(commit),
      alongside: (channelId) => exchange?.takeAlongside(channelId),
      logger: logger.child({ component: "channels" }),
    });
    await groups.reopen();

    const health = new HealthImplementation({ "": "NOT_SERVING", "epochd.kv.v1.KvService": "NOT_SERVING" });
    const peerServer = new grpc.Server(peerServerOptions());
    started.push(() => peerServer.forceShutdown());
    transport.register(peerServer);
    const directory = wireDirectory({ config, credentials, groupId: clusterGroupId, driver, transport, stateMachine, logger, onLeft });
    addAdminService(peerServer, { selfId: config.id, driver, transport, clusterGroupId, insecure: config.insecure, directory: directory.admin });
    health.addToServer(peerServer);
    await hostTestGroups(peerServer, { selfId: config.id, engine, driver, logger, insecure: config.insecure });
    const clientServer = new grpc.Server({ "grpc.max_receive_message_length": 2 << 20 });
    started.push(() => clientServer.forceShutdown());
    addKvService(clientServer, driver, clusterGroupId, stateMachine);
    const tokens = new TokenIssuer(loadOrCreateAuthSecret(config.dataDir), config.clusterId, config.id);
    const authenticator = new TokenAuthenticator(tokens, stateMachine.identity.index);
    addChannelService(clientServer, { selfId: config.id, machine: stateMachine, confirmDirectoryRead: () => driver.readIndex(clusterGroupId), groups, channels, certificates, authenticator, clientAddressOf: (id) => clientAddresses.get(id), onCommitStage: (stage, seconds) => metrics.commitStageSeconds.observe({ stage }, seconds) });
    addAuthService(clientServer, {
      clusterId: config.clusterId,
      homeserverId: config.id,
      challenges: new ChallengeStore(),
      tokens,
      devices: stateMachine.identity.index,
      catchUp: () => driver.readIndex(clusterGroupId),
    });
    addIdentityService(clientServer, { homeserverId: config.id, driver, groupId: clusterGroupId, machine: stateMachine, sign: (m) => signingKey.sign(m), authenticator });
    addKeyPackageService(clientServer, { driver, groupId: clusterGroupId, machine: stateMachine, authenticator, channels: groups });
    addInboxService(clientServer, {
      selfId: config.id,
      authenticator,
      fanout: inbox,
      certificates: { certificate: (channelId, epoch) => certificates.complete(channelId, epoch), waitCertified: (channelId, epoch) => certificates.waitComplete(channelId, epoch) },
      clientAddressOf: (id) => clientAddresses.get(id),
      proposeAnywhere: (data) => driver.proposeAnywhere(clusterGroupId, data),
    });
    addJoinService(clientServer, directory.join);
    health.addToServer(clientServer);
    addReflection(clientServer, [file_epochd_kv_v1_kv, file_epochd_channel_v1_channel, file_epochd_inbox_v1_inbox, file_epochd_auth_v1_auth, file_epochd_identity_v1_identity, file_epochd_keypackage_v1_keypackage, file_epochd_admin_v1_join]);
    addReflection(peerServer, [file_epochd_admin_v1_admin]);

    await bind(peerServer, config.peerListen, serverCredentials(credentials));
    const clientCredentials = credentials.kind === "insecure" ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(credentials.ca, [{ private_key: credentials.key, cert_chain: credentials.cert }], false);
    await bind(clientServer, config.clientListen, clientCredentials);
    metrics.watchTransport(transport);
    metrics.watchGroups(() => driver.counts());
    const metricsServer = config.metricsListen === "" ? undefined : await metrics.serve(config.metricsListen);
    driver.start();
    let stopFirstElection = () => {};
    const hastenElection = () => {
      stopFirstElection = hastenFirstElection({ selfId: config.id, groupId: clusterGroupId, initialVoters, driver, peerStates: () => transport.peerStates() });
    };
    if (!checkBootstrap) hastenElection();
    else {
      bootstrapCheck = new BootstrapCheck({
        selfId: config.id,
        groupId: clusterGroupId,
        peers: initialVoters.filter((id) => id !== config.id),
        driver,
        sendNotice: (to, topic, payload) => transport.sendNotice(to, { topic, payload }),
        peerStates: () => transport.peerStates(),
        learnPeer: (id, address) => transport.setPeer(id, address),
        logger,
        dataDir: config.dataDir,
        onNewCluster: hastenElection,
      });
      bootstrapCheck.start();
    }
    groups.start();
    exchange.start();
    exchange.resume(channels.gatheringCertificates());
    const registration = new SelfRegistration(
      { id: config.id, peerAddress: config.peerListen, clientAddress: config.clientListen, signingKey: Buffer.from(signingKey.publicKeyRaw).toString("base64") },
      () => stateMachine.homeservers().get(config.id),
      (data) => driver.proposeAnywhere(clusterGroupId, data),
    );
    registration.start();
    directory.reconciler.start();
    health.setStatus("", "SERVING");
    health.setStatus("epochd.kv.v1.KvService", "SERVING");
    logger.info({ id: config.id, peerListen: config.peerListen, clientListen: config.clientListen, metricsListen: config.metricsListen }, "homeserver started");
    return new Homeserver(config, logger, driver, engine, transport, peerServer, clientServer, health, metricsServer, [() => bootstrapCheck?.stop(), () => exchange.stop(), () => groups.stop(), () => registration.stop(), () => stopFirstElection(), () => directory.reconciler.stop()]);
  }

  /** Stops serving and closes everything, in reverse order of starting. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.health.setStatus("", "NOT_SERVING");
    this.health.setStatus("epochd.kv.v1.KvService", "NOT_SERVING");
    for (const stop of this.stopHooks) stop();
    await Promise.all([shutdownServer(this.clientServer), this.closeMetrics()]);
    await this.driver.stop();
    await this.transport.close();
    await shutdownServer(this.peerServer);
    await this.engine.close();
    this.logger.info("homeserver stopped");
  }

  private closeMetrics(): Promise<void> {
    const server = this.metricsServer;
    if (server === undefined) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}

function bind(server: grpc.Server, hostPort: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(hostPort, credentials, (error, port) => (error === null ? resolve(port) : reject(new Error(`cannot listen on ${hostPort}: ${error.message}`))));
  });
}

/** Graceful shutdown, forced after 2 s so a stuck stream cannot hold the process. */
function shutdownServer(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
