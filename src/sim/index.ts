/**
 * The simulator's public API: run a seeded, fault-injected Raft cluster and
 * get its result and any invariant violations. See docs/researchers.md.
 */
export { runSimulation, Simulator, type SimResult, type Violation } from "./simulator.ts";
export { resolveKnobs, type SimKnobs, type SimOptions } from "./options.ts";
export { faultKinds, faultSpecs, parseFaultKinds, drawSchedule, type FaultEvent, type FaultKind, type FaultSpec, type FaultContext } from "./faults.ts";
export { defaultInvariants, type Invariant, type InvariantFactory, type LogView, type FinalState } from "./invariants.ts";
export { Prng } from "./prng.ts";
