/**
 * The network fault injector between homeservers: one HTTP CONNECT proxy on 127.0.0.1 per homeserver,
 * through which that homeserver dials all of its peers (the harness starts it with `grpc_proxy` pointing
 * there; gRPC then tunnels every peer stream, TLS included, through a CONNECT). The proxy knows the
 * dialing homeserver (whose proxy it is) and the dialed one (the CONNECT target), so it applies per-pair,
 * per-direction rules: block (bytes are held, as on a silent partition, and flow again on heal) and delay.
 *
 * Why an egress proxy rather than a listener in front of each peer port: homeservers learn each other's
 * peer addresses from the replicated directory, which overrides `--peers`, so only the dialer's side can
 * be redirected without changing epochd.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";

/** Bytes queued in one direction before its source is paused. */
const queuedBytesMax = 1 << 20;

/** The rules of one direction from one homeserver to another. */
interface LinkRule {
  blocked: boolean;
  delayMs: number;
}

/** Per-direction rules between homeservers, shared by all proxies of a cluster. */
export class NetworkRules {
  private readonly rules = new Map<string, LinkRule>();
  private readonly listeners = new Set<() => void>();

  private rule(from: string, to: string): LinkRule {
    const key = `${from}>${to}`;
    let rule = this.rules.get(key);
    if (rule === undefined) {
      rule = { blocked: false, delayMs: 0 };
      this.rules.set(key, rule);
    }
    return rule;
  }

  /** Blocks (or unblocks) the bytes flowing from `from` to `to`. */
  setBlocked(from: string, to: string, blocked: boolean): void {
    this.rule(from, to).blocked = blocked;
    this.changed();
  }

  /** Delays the bytes flowing from `from` to `to` by `delayMs`. */
  setDelay(from: string, to: string, delayMs: number): void {
    this.rule(from, to).delayMs = delayMs;
    this.changed();
  }

  isBlocked(from: string, to: string): boolean {
    return this.rule(from, to).blocked;
  }

  delayMs(from: string, to: string): number {
    return this.rule(from, to).delayMs;
  }

  /** Lifts every block and delay. */
  healAll(): void {
    for (const rule of this.rules.values()) {
      rule.blocked = false;
      rule.delayMs = 0;
    }
    this.changed();
  }

  /** Calls `listener` after every change (to release held bytes). Returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}

/** One direction of a relayed connection: holds bytes while blocked, releases them after the delay. */
class DirectionPump {
  private readonly queue: Array<{ chunk: Buffer; releaseAtMs: number }> = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: Duplex,
    private readonly sink: Duplex,
    private readonly from: string,
    private readonly to: string,
    private readonly rules: NetworkRules,
  ) {
    source.on("data", (chunk: Buffer) => {
      this.queue.push({ chunk, releaseAtMs: Date.now() + rules.delayMs(from, to) });
      this.queuedBytes += chunk.length;
      if (this.queuedBytes > queuedBytesMax) source.pause();
      this.pump();
    });
  }

  /** Writes every chunk that is due, unless the direction is blocked. */
  pump(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.rules.isBlocked(this.from, this.to) || this.sink.destroyed) return;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.releaseAtMs <= now) {
      const { chunk } = this.queue.shift()!;
      this.queuedBytes -= chunk.length;
      this.sink.write(chunk);
    }
    if (this.queuedBytes <= queuedBytesMax && this.source.isPaused()) this.source.resume();
    const next = this.queue[0];
    if (next !== undefined) this.timer = setTimeout(() => this.pump(), Math.max(1, next.releaseAtMs - now));
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
}

/** The egress proxy of homeserver `selfId`: relays its CONNECTs to peers under the shared rules. */
export class EgressProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Duplex>();
  private port = 0;

  constructor(
    readonly selfId: string,
    private readonly rules: NetworkRules,
    /** Maps a dialed host:port to the homeserver id listening there (undefined: not a homeserver, refused). */
    private readonly homeserverAt: (hostPort: string) => string | undefined,
  ) {}

  /** Starts listening on 127.0.0.1 (an OS-chosen port); resolves with the proxy URL for `grpc_proxy`. */
  async start(): Promise<string> {
    const server = createServer((_req, res) => res.writeHead(405).end());
    server.on("connect", (req: IncomingMessage, client: Duplex, head: Buffer) => this.relay(req, client, head));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    this.port = typeof address === "object" && address !== null ? address.port : 0;
    this.server = server;
    return `http://127.0.0.1:${this.port}`;
  }

  private relay(req: IncomingMessage, client: Duplex, head: Buffer): void {
    const target = req.url ?? "";
    const peer = this.homeserverAt(target);
    const [host, portText] = target.split(":");
    if (peer === undefined || host === undefined || portText === undefined) {
      client.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      return;
    }
    this.track(client);
    let established = false;
    const upstream: Socket = connect(Number(portText), host, () => {
      established = true;
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      const out = new DirectionPump(client, upstream, this.selfId, peer, this.rules);
      const back = new DirectionPump(upstream, client, peer, this.selfId, this.rules);
      const unsubscribe = this.rules.onChange(() => {
        out.pump();
        back.pump();
      });
      const close = () => {
        unsubscribe();
        out.close();
        back.close();
        client.destroy();
        upstream.destroy();
      };
      client.once("close", close);
      upstream.once("close", close);
    });
    this.track(upstream);
    const fail = () => {
      // The peer is not listening (yet, or any more): answer as a proxy does, then close.
      if (!established && !client.destroyed) client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n");
      else client.destroy();
      upstream.destroy();
    };
    upstream.once("error", fail);
    client.once("error", fail);
  }

  private track(socket: Duplex): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }

  /** Cuts every relayed connection (as a crash of this homeserver's network stack would). */
  resetConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Stops listening and cuts every connection. */
  async close(): Promise<void> {
    this.resetConnections();
    const server = this.server;
    if (server === undefined) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
