/**
 * Starting the targets: each is started, checked (check.ts) and given its per-scenario skips
 * before any load. A target that cannot start or answers wrongly is recorded as skipped with
 * the reason and left out of the rounds; it never stops the run.
 */
import { checkTarget } from './check.js';
import type { RunningTarget, TargetContext, TargetDef } from './layout.js';
import { summarize } from './report.js';
import type { ScenarioName, ScenarioResult, TargetResult } from './result.js';
import { SCENARIOS } from './scenarios.js';

/** A started, checked target and the result record the rounds fill in. */
export interface LiveTarget {
  def: TargetDef;
  target: RunningTarget;
  result: TargetResult;
}

function skippedScenario(why: string): ScenarioResult {
  return { ...summarize([]), skipped: why };
}

/** Starts `defs` in order; returns every result (for the report) and the live ones. */
export async function startTargets(
  defs: readonly TargetDef[],
  ctx: TargetContext,
  scenarioNames: readonly ScenarioName[],
): Promise<{ results: TargetResult[]; live: LiveTarget[] }> {
  const results: TargetResult[] = [];
  const live: LiveTarget[] = [];
  const { log, tools, upstream } = ctx;
  for (const def of defs) {
    const tr: TargetResult = { name: def.name, label: def.label, skipped: null, rssMiB: null, scenarios: {} };
    results.push(tr);
    const missing = def.needs.filter((n) => !tools.has(n));
    if (missing.length > 0) {
      tr.skipped = `${missing.join(', ')} not available`;
      log(`${def.name}: SKIPPED (${tr.skipped})`);
      continue;
    }
    let target: RunningTarget;
    try {
      target = await def.start(ctx);
    } catch (err) {
      // A process it spawned, if any, is killed by PID when the runner exits (lib/spawn.ts).
      tr.skipped = `did not start: ${(err as Error).message.split('\n')[0]}`;
      log(`${def.name}: SKIPPED (${(err as Error).message})`);
      continue;
    }
    const check = await checkTarget(target, upstream, tools.has('h2load'));
    if (check.get !== null) {
      tr.skipped = `answers wrongly: ${check.get}`;
      log(`${def.name}: SKIPPED (${tr.skipped})`);
      await target.stop();
      continue;
    }
    if (check.post !== null) tr.scenarios.post = skippedScenario(`POST check failed: ${check.post}`);
    if (check.h2 !== null) tr.scenarios.h2 = skippedScenario(check.h2);
    for (const sc of SCENARIOS) {
      if (!scenarioNames.includes(sc.name) || tr.scenarios[sc.name] !== undefined) continue;
      const missingTools = sc.needs.filter((n) => !tools.has(n));
      const why = missingTools.length > 0 ? `${missingTools.join(', ')} not available` : sc.skipReason(target, upstream);
      if (why !== null) {
        tr.scenarios[sc.name] = skippedScenario(why);
        log(`${def.name} ${sc.name}: skipped (${why})`);
      }
    }
    const pid = target.server === null ? 'no proxy' : `pid ${target.server.pid}`;
    log(`${def.name}: ${pid}, http1 :${target.h1Port}${target.h2Port === null ? '' : `, h2c :${target.h2Port}`}`);
    live.push({ def, target, result: tr });
  }
  return { results, live };
}
