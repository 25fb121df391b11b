/**
 * The delivery check (P4): what each device received is in channel order, matches what was sent, has no
 * gap against the channel's final log, and (for devices still members at the end) reaches its end.
 *
 * Today devices receive through ChannelService.ListEvents (the SDK's Channel.sync), which is what this
 * checks; device inboxes (src/inbox) can feed the same Delivery records once they exist.
 */
import type { Violation } from "./checker.ts";
import type { Delivery, FinalEvent, HistoryOp } from "./history.ts";

/** Result of the delivery check. */
export interface DeliveryResult {
  readonly violations: Violation[];
  readonly deliveredItems: number;
}

/** The events of `log` that `delivery`'s device should have received, in order. */
function expectedEvents(delivery: Delivery, log: readonly FinalEvent[], ownHashes: ReadonlySet<string>): FinalEvent[] {
  const joinCommit = delivery.joinedAtEpoch === 0 ? undefined : log.find((e) => e.kind === "commit" && e.epoch === delivery.joinedAtEpoch - 1);
  const from = joinCommit?.sequence ?? 0;
  return log.filter((e) => e.sequence > from && !ownHashes.has(e.hash) && (e.kind === "commit" || (e.kind === "message" && e.epoch >= delivery.joinedAtEpoch)));
}

function checkOne(delivery: Delivery, log: readonly FinalEvent[], ownHashes: ReadonlySet<string>, sentTexts: Readonly<Record<string, string>>, out: Violation[]): void {
  const where = `${delivery.device} in ${delivery.channel}`;
  const sequences = delivery.items.map((i) => i.sequence);
  const disorder = sequences.findIndex((s, i) => i > 0 && s <= sequences[i - 1]!);
  if (disorder >= 0) {
    out.push({ check: "delivered", channel: delivery.channel, message: `${where}: received sequence ${sequences[disorder]} after ${sequences[disorder - 1]} (out of order or repeated)`, context: sequences.slice(Math.max(0, disorder - 3), disorder + 3) });
    return;
  }
  for (const item of delivery.items) {
    const sent = sentTexts[String(item.sequence)];
    if (item.kind === "message" && item.text !== undefined && sent !== undefined && sent !== item.text) {
      out.push({ check: "delivered", channel: delivery.channel, message: `${where}: message at sequence ${item.sequence} reads ${JSON.stringify(item.text)}, but ${JSON.stringify(sent)} was sent there` });
    }
  }
  const received = new Set(sequences);
  const last = sequences.at(-1) ?? 0;
  const expected = expectedEvents(delivery, log, ownHashes);
  const missing = expected.filter((e) => e.sequence <= last && !received.has(e.sequence));
  if (missing.length > 0) {
    out.push({ check: "delivered", channel: delivery.channel, message: `${where}: ${missing.length} event(s) before its last received (${last}) never reached it, first at sequence ${missing[0]!.sequence}`, context: missing.slice(0, 5) });
  }
  const tail = expected.filter((e) => e.sequence > last);
  if (delivery.caughtUp && tail.length > 0) {
    out.push({ check: "delivered", channel: delivery.channel, message: `${where}: still a member at the end but ${tail.length} event(s) after sequence ${last} never reached it`, context: tail.slice(0, 5) });
  }
}

/** Checks every delivery against its channel's final log (`logs`); own commits and messages are not delivered back. */
export function checkDelivery(deliveries: readonly Delivery[], logs: ReadonlyMap<string, readonly FinalEvent[]>, ops: readonly HistoryOp[], sentTexts: Readonly<Record<string, Readonly<Record<string, string>>>>): DeliveryResult {
  const violations: Violation[] = [];
  const ownByDevice = new Map<string, Set<string>>();
  for (const op of ops) {
    if ((op.kind === "commit" || op.kind === "message") && op.hash !== undefined) {
      const key = `${op.process}#${op.channel}`;
      ownByDevice.set(key, (ownByDevice.get(key) ?? new Set()).add(op.hash));
    }
  }
  let deliveredItems = 0;
  for (const delivery of deliveries) {
    deliveredItems += delivery.items.length;
    const log = logs.get(delivery.channel);
    if (log === undefined) continue;
    checkOne(delivery, log, ownByDevice.get(`${delivery.device}#${delivery.channel}`) ?? new Set(), sentTexts[delivery.channel] ?? {}, violations);
  }
  return { violations, deliveredItems };
}
