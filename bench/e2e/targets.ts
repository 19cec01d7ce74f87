/**
 * The targets in table order. The rounds interleave them in this order (A B C A B C).
 */
import { haproxyTarget } from './haproxy.js';
import type { TargetDef } from './layout.js';
import { directTarget, nginxTarget } from './nginx.js';
import { fastifyTarget, httpProxyTarget } from './node-proxies.js';
import { skiffTarget } from './skiff.js';

export const TARGETS: readonly TargetDef[] = [directTarget, skiffTarget, nginxTarget, haproxyTarget, httpProxyTarget, fastifyTarget];
