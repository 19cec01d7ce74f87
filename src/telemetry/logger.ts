/**
 * Skiff's own log (operational lines, not the access log): pino JSON lines on stderr, written
 * synchronously (they are rare, and a line logged just before a crash must not be lost). The
 * level is set by `telemetry.logLevel` and changed at runtime through the admin port's
 * `/logging` (Envoy's admin has the same endpoint).
 */
import { pino } from 'pino';
import type { LogLevel } from '../config/types.js';

export type Logger = pino.Logger;

export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** A logger writing to `fd` (2, stderr, by default) at `level`. */
export function createLogger(level: LogLevel, fd = 2): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, name: 'skiff' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label: string) => ({ level: label }) },
    },
    pino.destination({ dest: fd, sync: true }),
  );
}
