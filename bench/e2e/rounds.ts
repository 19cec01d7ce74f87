/**
 * Warm-up and the measured rounds, interleaved: for each round, for each scenario, every
 * target in table order (A B C A B C). Fills each live target's result with its rounds and
 * medians, and its RSS after the last round.
 */
import { treeRssKiB } from '../lib/proc.js';
import { sleep } from '../lib/spawn.js';
import { measureRound, type MeasureContext } from './measure.js';
import { summarize } from './report.js';
import type { RoundRecord, ScenarioName, Settings } from './result.js';
import { SCENARIOS, type Scenario } from './scenarios.js';
import type { LiveTarget } from './setup.js';

/** Pause between two load runs, so the previous run's connections are closed. */
const GAP_MS = 300;

function runnable(l: LiveTarget, sc: Scenario, scenarioNames: readonly ScenarioName[]): boolean {
  return scenarioNames.includes(sc.name) && l.result.scenarios[sc.name] === undefined;
}

function failedRound(round: number, why: string): RoundRecord {
  return {
    round,
    attempt: 0,
    metrics: {},
    requests: 0,
    durationS: 0,
    errors: 0,
    non2xx: 0,
    proxyCpuPctCore: null,
    corePct: [],
    foreignPctCore: 0,
    stealPctCore: 0,
    topForeign: [],
    contaminated: false,
    invalid: why,
  };
}

/** One unrecorded run of every scenario per target: JIT, connection pools, nginx caches. */
export async function warmUp(live: readonly LiveTarget[], settings: Settings, scenarioNames: readonly ScenarioName[], root: string, log: (line: string) => void): Promise<void> {
  log(`warm-up: ${settings.warmupS} s per target and scenario`);
  for (const l of live) {
    for (const sc of SCENARIOS) {
      if (!runnable(l, sc, scenarioNames)) continue;
      try {
        await sc.run(l.target, settings.warmupS, root);
      } catch (err) {
        log(`  warm-up ${sc.name} ${l.def.name}: ${(err as Error).message.split('\n')[0]}`);
      }
    }
  }
}

export async function runRounds(
  live: readonly LiveTarget[],
  settings: Settings,
  scenarioNames: readonly ScenarioName[],
  mctx: MeasureContext,
  log: (line: string) => void,
): Promise<void> {
  // The patience budget (waiting for quiet, retries) starts with the measured rounds.
  mctx.patienceDeadline = Date.now() + settings.patienceS * 1000;
  const rounds = new Map<string, RoundRecord[]>();
  for (let round = 1; round <= settings.rounds; round++) {
    log(`round ${round}/${settings.rounds}`);
    for (const sc of SCENARIOS) {
      for (const l of live) {
        if (!runnable(l, sc, scenarioNames)) continue;
        const key = `${l.def.name}/${sc.name}`;
        const list = rounds.get(key) ?? [];
        rounds.set(key, list);
        if (l.target.server !== null && !l.target.server.alive()) {
          list.push(failedRound(round, 'the target process exited'));
          continue;
        }
        try {
          list.push(...(await measureRound(sc, l.target, mctx, round, settings.maxRetries, log)));
        } catch (err) {
          const why = (err as Error).message.split('\n')[0];
          log(`  r${round} ${sc.name} ${l.def.name}: FAILED: ${why}`);
          list.push(failedRound(round, why));
        }
        await sleep(GAP_MS);
      }
    }
  }

  for (const l of live) {
    for (const sc of SCENARIOS) {
      if (!runnable(l, sc, scenarioNames)) continue;
      l.result.scenarios[sc.name] = summarize(rounds.get(`${l.def.name}/${sc.name}`) ?? []);
    }
    if (l.target.server !== null) {
      const kib = treeRssKiB(l.target.server.pid);
      l.result.rssMiB = kib === null ? null : Math.round((kib / 1024) * 10) / 10;
    }
  }
}
