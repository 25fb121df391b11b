/**
 * Schedules for the channel-ordering property: a set of devices spread over hs1..hs3 (the owner on hs1)
 * and steps of operations that run concurrently. Operations name their target by an index (`pick`) that
 * the runner resolves against the channel's membership when the step starts, so every schedule, and every
 * schedule fast-check shrinks it to, is valid whatever the races before it decided.
 */
import fc from "fast-check";

/** The homeservers of the test cluster. */
export const homeserverIds = ["hs1", "hs2", "hs3"] as const;
/** One of the test cluster's homeserver ids. */
export type HomeserverId = (typeof homeserverIds)[number];

/** What one operation does; `pick` selects its actor or target among the candidates at step start. */
export type OperationKind =
  /** The owner adds a device that is not a member (a Welcome, then the device joins). */
  | "add"
  /** The owner removes a member other than itself. */
  | "remove"
  /** A member rotates its keys (an empty commit with an UpdatePath). */
  | "update"
  /** A member other than the owner proposes its own removal (a standalone Remove proposal). */
  | "leave"
  /** A member sends an application message. */
  | "send";

/** One operation of a step. */
export interface Operation {
  readonly kind: OperationKind;
  readonly pick: number;
}

/** Operations issued at the same time (Promise.all); `syncFirst` makes every member sync before them. */
export interface Step {
  readonly syncFirst: boolean;
  readonly operations: readonly Operation[];
}

/**
 * A whole run: devices (index 0 is the owner, on hs1), how many the owner adds up front (at least two, so
 * the first step already has members to race; capped by the devices there are), then the steps.
 */
export interface Schedule {
  readonly homeservers: readonly HomeserverId[];
  readonly initialMembers: number;
  readonly steps: readonly Step[];
}

/** Bounds of generated schedules: 3 to 8 devices, up to stepsMax steps of up to operationsPerStepMax. */
export interface ScheduleBounds {
  readonly devicesMin: number;
  readonly devicesMax: number;
  readonly stepsMax: number;
  readonly operationsPerStepMax: number;
  /** Whether members may leave (a standalone self-Remove proposal). */
  readonly leaves: boolean;
}

const pickMax = 7;

function operation(kind: OperationKind): fc.Arbitrary<Operation> {
  return fc.nat(pickMax).map((pick) => ({ kind, pick }));
}

/**
 * Operations weighted towards commits (update, add, remove) so most steps race two or more commits from
 * different devices on the same epoch; messages and leaves are mixed in.
 */
export function operationArbitrary(leaves: boolean): fc.Arbitrary<Operation> {
  const weighted: fc.WeightedArbitrary<Operation>[] = [
    { weight: 6, arbitrary: operation("update") },
    { weight: 2, arbitrary: operation("add") },
    { weight: 2, arbitrary: operation("remove") },
    { weight: 2, arbitrary: operation("send") },
  ];
  if (leaves) weighted.push({ weight: 2, arbitrary: operation("leave") });
  return fc.oneof(...weighted);
}

/**
 * Schedules within `bounds`; shrinking drops devices, steps and operations and lowers picks. With leaves,
 * the first step always holds a leave racing the other operations, so every run exercises one.
 */
export function scheduleArbitrary(bounds: ScheduleBounds): fc.Arbitrary<Schedule> {
  const operations = fc.array(operationArbitrary(bounds.leaves), { minLength: 2, maxLength: bounds.operationsPerStepMax });
  const step = fc.record({ syncFirst: fc.boolean(), operations });
  const firstStep = bounds.leaves
    ? fc.record({ syncFirst: fc.boolean(), operations: fc.tuple(operation("leave"), operations).map(([leave, rest]) => [leave, ...rest.slice(1)]) })
    : step;
  return fc.record({
    homeservers: fc.array(fc.constantFrom(...homeserverIds), { minLength: bounds.devicesMin - 1, maxLength: bounds.devicesMax - 1 }).map((others) => ["hs1" as const, ...others]),
    initialMembers: fc.integer({ min: 2, max: bounds.devicesMax }),
    steps: fc.tuple(firstStep, fc.array(step, { minLength: 0, maxLength: bounds.stepsMax - 1 })).map(([first, rest]) => [first, ...rest]),
  });
}

/** A one-line-per-step rendering of a schedule for reports. */
export function describeSchedule(schedule: Schedule): string {
  const devices = schedule.homeservers.map((hs, i) => `d${i}@${hs}`).join(" ");
  const steps = schedule.steps.map((s, i) => `  step ${i}${s.syncFirst ? " (sync first)" : ""}: ${s.operations.map((o) => `${o.kind}#${o.pick}`).join(", ")}`);
  return [`devices ${devices}; owner adds ${schedule.initialMembers} up front`, ...steps].join("\n");
}
