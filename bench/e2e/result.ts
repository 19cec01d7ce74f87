/**
 * The JSON contract of one bench run (bench/results/<date>-<sha>.json), shared by the runner,
 * the markdown report and bench/compare.ts. Bump `schema` when a field changes meaning.
 */
import type { ForeignProcess } from '../lib/cpu-window.js';
import type { GitInfo, MachineInfo } from '../lib/system.js';

export const RESULT_SCHEMA = 1;

export type ScenarioName = 'get' | 'latency' | 'post' | 'h2';
export const SCENARIO_NAMES: readonly ScenarioName[] = ['get', 'latency', 'post', 'h2'];

/** Named figures of one measurement; null when not applicable (e.g. CPU of "direct"). */
export type Metrics = Record<string, number | null>;

export interface RoundRecord {
  round: number;
  /** 0 for the first try; retries of a contaminated round count up. */
  attempt: number;
  metrics: Metrics;
  requests: number;
  durationS: number;
  errors: number;
  non2xx: number;
  /** CPU of the process under test, percent of one core (null for direct). */
  proxyCpuPctCore: number | null;
  /** Busy percent per core over the window. */
  corePct: number[];
  /** Machine CPU not used by the rig's own processes, percent of one core. */
  foreignPctCore: number;
  stealPctCore: number;
  topForeign: ForeignProcess[];
  /** Foreign CPU or steal over the limit: not used for the median. */
  contaminated: boolean;
  /** Why the round is unusable (errors, no requests), or null. Not used for the median. */
  invalid: string | null;
}

export interface ScenarioResult {
  /** Why this scenario did not run for this target, or null. */
  skipped: string | null;
  rounds: RoundRecord[];
  /** Median per metric over the clean rounds (over all valid rounds if none is clean). */
  median: Metrics;
  cleanRounds: number;
  /** True when no round was clean and the median is of contaminated rounds. */
  medianOfContaminated: boolean;
}

export interface TargetResult {
  name: string;
  label: string;
  /** Why the whole target did not run, or null. */
  skipped: string | null;
  /** VmRSS of the process tree after all rounds, MiB (null for direct or skipped). */
  rssMiB: number | null;
  scenarios: Partial<Record<ScenarioName, ScenarioResult>>;
}

export interface Settings {
  quick: boolean;
  rounds: number;
  durationS: number;
  warmupS: number;
  foreignLimitPctCore: number;
  maxRetries: number;
  /** Seconds the run may spend waiting for quiet and retrying, in total. */
  patienceS: number;
  proxyCore: number;
  loadCore: number;
}

export interface BenchResult {
  schema: number;
  date: string;
  git: GitInfo;
  machine: MachineInfo;
  tools: Record<string, string | null>;
  settings: Settings;
  targets: TargetResult[];
  notes: string[];
}
