#!/usr/bin/env node
/**
 * `skiff [--config FILE] [--check-config FILE]`. With no flags it runs the embedded default
 * (inbound 127.0.0.1:15006 with http1 and h2c to 127.0.0.1:8080, admin on 127.0.0.1:15000).
 * SIGTERM and SIGINT drain: listeners close, in-flight requests finish (up to the drain
 * timeout), then the process exits 0. With --config the file is watched and reloaded when it
 * changes (Runtime.applySnapshot; a bad file is logged and the running config stays).
 */
import { ConfigError, defaultSnapshot, loadConfigFile } from './config/load.js';
import type { ConfigSnapshot } from './config/types.js';
import { Runtime } from './runtime.js';

const USAGE = `usage: skiff [--config FILE] [--check-config FILE] [--help]

  --config FILE        run with the YAML config FILE
  --check-config FILE  validate FILE, print the errors, exit 0 when valid, 1 when not
  (no flags)           run the embedded default: inbound 127.0.0.1:15006 (http1, h2c)
                       to a local app on 127.0.0.1:8080, admin on 127.0.0.1:15000
`;

function parseArgs(argv: string[]): { config: string | null; check: string | null; help: boolean } {
  let config: string | null = null;
  let check: string | null = null;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const inline = eq > 0 ? a.slice(eq + 1) : null;
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new Error(`${flag} needs a file path`);
      return v;
    };
    if (flag === '--config' || flag === '-c') config = value();
    else if (flag === '--check-config') check = value();
    else if (flag === '--help' || flag === '-h') help = true;
    else throw new Error(`unknown argument: ${a}`);
  }
  return { config, check, help };
}

async function main(): Promise<number> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`skiff: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.check !== null) {
    try {
      loadConfigFile(args.check, 1);
      process.stdout.write(`${args.check}: ok\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`${err instanceof ConfigError ? err.message : `skiff: ${(err as Error).message}`}\n`);
      return 1;
    }
  }
  let snapshot: ConfigSnapshot;
  try {
    snapshot = args.config !== null ? loadConfigFile(args.config, 1) : defaultSnapshot(1);
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : `skiff: ${(err as Error).message}`}\n`);
    return 1;
  }
  const runtime = new Runtime(snapshot, args.config !== null ? { configPath: args.config } : {});
  try {
    await runtime.start();
  } catch (err) {
    runtime.logger.fatal({ err }, `cannot start: ${(err as Error).message}`);
    await runtime.stop();
    return 1;
  }
  runtime.logger.info({ config: snapshot.source, version: snapshot.version }, 'ready');
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      runtime.logger.info({ signal: sig }, 'signal received, draining');
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  const cut = await runtime.stop();
  if (cut > 0) runtime.logger.warn({ cut }, 'drain timeout cut requests short');
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Leftover handles (kept-alive upstream sockets closing) must not hold the exit.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => {
    process.stderr.write(`skiff: fatal: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
