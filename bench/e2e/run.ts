/**
 * `npm run bench` (and `npm run bench:quick`): the end-to-end rig of issue 3.
 *
 *   node dist/bench/e2e/run.js [--quick] [--rounds N] [--duration S]
 *                              [--targets a,b,...] [--scenarios get,latency,post,h2]
 *
 * Installs missing tools (lib/tools.ts), starts the nginx upstream on LOAD_CORE and every
 * target on PROXY_CORE (each its own process and ports, all up for the whole run), checks that
 * each answers correctly, warms each up, then measures round by round, scenario by scenario,
 * target by target (A B C A B C), retrying a round that foreign CPU contaminated. Writes
 * bench/results/<date>-<sha>[-quick].json and .md, prints the markdown table on stdout;
 * progress goes to stderr. Everything it started is stopped by PID at the end (or on a
 * signal or crash). Results are for the checkout as it is, built by `npm run build`.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CpuWindow } from '../lib/cpu-window.js';
import { sleep } from '../lib/spawn.js';
import { gitInfo, machineInfo, repoRoot, toolVersion } from '../lib/system.js';
import { ensureTools } from '../lib/tools.js';
import { LOAD_CORE, PROXY_CORE, type TargetContext, type Upstream } from './layout.js';
import type { MeasureContext } from './measure.js';
import { startUpstream } from './nginx.js';
import { markdown } from './report.js';
import { RESULT_SCHEMA, SCENARIO_NAMES, type BenchResult, type ScenarioName, type Settings } from './result.js';
import { runRounds, warmUp } from './rounds.js';
import { startTargets, type LiveTarget } from './setup.js';
import { OPT_IN_TARGETS, TARGETS } from './targets.js';

const log = (line: string): void => {
  process.stderr.write(line + '\n');
};

function parseCli(): { settings: Settings; targets: string[]; scenarios: ScenarioName[] } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      targets: { type: 'string' },
      scenarios: { type: 'string' },
    },
  });
  const quick = values.quick === true;
  const rounds = values.rounds !== undefined ? Number(values.rounds) : quick ? 1 : 3;
  const durationS = values.duration !== undefined ? Number(values.duration) : quick ? 3 : 10;
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error('--rounds: 1..20');
  if (!Number.isInteger(durationS) || durationS < 1 || durationS > 120) throw new Error('--duration: 1..120 seconds');
  const targets = values.targets !== undefined ? values.targets.split(',') : TARGETS.map((t) => t.name).filter((n) => !OPT_IN_TARGETS.has(n));
  for (const t of targets) if (!TARGETS.some((d) => d.name === t)) throw new Error(`unknown target ${t}`);
  const scenarios = (values.scenarios !== undefined ? values.scenarios.split(',') : [...SCENARIO_NAMES]) as ScenarioName[];
  for (const s of scenarios) if (!SCENARIO_NAMES.includes(s)) throw new Error(`unknown scenario ${s}`);
  return {
    settings: {
      quick,
      rounds,
      durationS,
      warmupS: quick ? 1 : 3,
      foreignLimitPctCore: 10,
      maxRetries: 2,
      patienceS: quick ? 600 : 2400,
      proxyCore: PROXY_CORE,
      loadCore: LOAD_CORE,
    },
    targets,
    scenarios,
  };
}

async function toolVersions(tools: ReadonlySet<string>): Promise<Record<string, string | null>> {
  const v = async (name: string, cmd: string, args: string[]): Promise<string | null> => (tools.has(name) ? toolVersion(cmd, args) : null);
  return {
    wrk: await v('wrk', 'wrk', ['-v']),
    h2load: await v('h2load', 'h2load', ['--version']),
    nginx: await v('nginx', 'nginx', ['-v']),
    haproxy: await v('haproxy', 'haproxy', ['-v']),
  };
}

async function main(): Promise<number> {
  const { settings, targets: targetNames, scenarios: scenarioNames } = parseCli();
  const root = repoRoot();
  if (!existsSync(join(root, 'dist/src/cli.js'))) throw new Error('dist/src/cli.js is missing: run `npm run build` first');
  if (process.platform !== 'linux') throw new Error('the rig reads /proc and uses taskset: Linux only');

  const tools = await ensureTools(log);
  for (const need of ['nginx']) {
    if (!tools.has(need)) throw new Error(`${need} is not available: the upstream of every target is nginx; cannot run`);
  }
  const notes: string[] = [];
  if (!tools.has('nginx-echo')) notes.push('nginx echo module missing: 1 MiB POST skipped (a `return` upstream would not read the body)');
  const date = new Date();
  const git = await gitInfo(root);
  const result: BenchResult = {
    schema: RESULT_SCHEMA,
    date: date.toISOString(),
    git,
    machine: machineInfo(),
    tools: await toolVersions(tools),
    settings,
    targets: [],
    notes,
  };
  if (result.machine.cores < 2) notes.push(`only ${result.machine.cores} core(s): the layout needs 2, figures are not comparable`);

  const workDir = mkdtempSync(join(tmpdir(), 'skiff-bench-'));
  let upstream: Upstream | null = null;
  let live: LiveTarget[] = [];
  try {
    upstream = await startUpstream(root, workDir, tools);
    log(`upstream nginx pid ${upstream.server.pid} on core ${LOAD_CORE}: http1 :${upstream.h1Port}, h2c :${upstream.h2Port}`);
    const tctx: TargetContext = { root, workDir, upstream, tools, log };
    const started = await startTargets(TARGETS.filter((d) => targetNames.includes(d.name)), tctx, scenarioNames);
    result.targets = started.results;
    live = started.live;

    const ourPids = [upstream.server.pid, ...live.flatMap((l) => (l.target.server === null ? [] : [l.target.server.pid]))];
    // How busy is the machine before we start? (Only a hint; every round is checked itself.)
    const idle = new CpuWindow(ourPids);
    await sleep(2000);
    const idleCpu = idle.close();
    const who = idleCpu.topForeign.map((f) => `${f.comm} ${f.pctCore.toFixed(1)}%`).join(', ');
    log(`idle foreign CPU: ${idleCpu.foreignPctCore.toFixed(1)}% of a core${who === '' ? '' : ` (${who})`}`);

    const mctx: MeasureContext = {
      root,
      durationS: settings.durationS,
      ourPids,
      foreignLimitPctCore: settings.foreignLimitPctCore,
      maxErrorFraction: 0.01,
      quietWaitMs: settings.quick ? 20_000 : 60_000,
      patienceDeadline: 0,
    };
    await warmUp(live, settings, scenarioNames, root, log);
    await runRounds(live, settings, scenarioNames, mctx, log);
  } finally {
    for (const l of live) await l.target.stop();
    if (upstream !== null) await upstream.server.stop();
    rmSync(workDir, { recursive: true, force: true });
  }

  const dir = join(root, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const stamp = result.date.replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const base = join(dir, `${stamp}-${git.sha}${settings.quick ? '-quick' : ''}`);
  const md = markdown(result);
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(`${base}.md`, md);
  process.stdout.write('\n' + md);
  log(`\nwrote ${base}.json and ${base}.md`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
