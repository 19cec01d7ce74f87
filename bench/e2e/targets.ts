/**
 * The targets in table order. The rounds interleave them in this order (A B C A B C).
 */
import { haproxyTarget } from './haproxy.js';
import type { TargetDef } from './layout.js';
import { directTarget, nginxTarget } from './nginx.js';
import { fastifyTarget, httpProxyTarget, nodeFloorTarget } from './node-proxies.js';
import { skiffSemi2Target, skiffSemi4Target, skiffSemi8Target, skiffTarget, skiffTrace100Target, skiffTrace1Target } from './skiff.js';

export const TARGETS: readonly TargetDef[] = [
  directTarget,
  skiffTarget,
  nginxTarget,
  haproxyTarget,
  httpProxyTarget,
  fastifyTarget,
  skiffTrace1Target,
  skiffTrace100Target,
  skiffSemi2Target,
  skiffSemi4Target,
  skiffSemi8Target,
  nodeFloorTarget,
];

/** Targets run only when named in `--targets` (`npm run bench:tracing` names the tracing ones). */
export const OPT_IN_TARGETS: ReadonlySet<string> = new Set(
  [skiffTrace1Target, skiffTrace100Target, skiffSemi2Target, skiffSemi4Target, skiffSemi8Target, nodeFloorTarget].map((t) => t.name),
);
