/**
 * HTTP/1.1 listener adapter on node:http. It turns each parsed request into a RequestContext
 * (metadata referenced from node's `rawHeaders`, body pushed as DATA frames with backpressure
 * through `req.pause()`), and writes the response back through an H1Exchange, the
 * DownstreamWriter of this protocol.
 *
 * Event listeners are shared module-level functions that find their exchange through a symbol
 * slot on the emitter, so a request allocates no closures.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { ContextArena } from '../../src/arena.js';
import { Hold, type DownstreamWriter, type RequestContext } from '../../src/context.js';
import { ErrorCode, SkiffError, errorResponse } from '../../src/errors.js';
import type { FrameSource } from '../../src/frames.js';
import { getHeader } from '../../src/headers.js';
import type { ProxyEngine } from '../../src/proxy/engine.js';
import type { Limits, ListenerConfig } from '../../src/config/types.js';

const kExchange = Symbol('skiff.h1.exchange');

type TaggedReq = http.IncomingMessage & { [kExchange]: H1Exchange | null };
type TaggedRes = http.ServerResponse & { [kExchange]: H1Exchange | null };

export class H1Exchange implements DownstreamWriter, FrameSource {
  readonly ctx: RequestContext;
  readonly gen: number;
  readonly engine: ProxyEngine;
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  trailerPairs: [string, string][] | null;

  constructor(engine: ProxyEngine, ctx: RequestContext, req: http.IncomingMessage, res: http.ServerResponse) {
    this.ctx = ctx;
    this.gen = ctx.generation;
    this.engine = engine;
    this.req = req;
    this.res = res;
    this.trailerPairs = null;
  }

  // ---- DownstreamWriter ----

  writeHead(status: number, rawHeaders: readonly string[], _isEndStream: boolean): void {
    this.res.writeHead(status, rawHeaders as string[]);
  }

  writeError(status: number, code: string, body: string): void {
    const res = this.res;
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    // A request body we did not read keeps the connection out of sync: close it.
    if (!this.req.complete) res.shouldKeepAlive = false;
    res.writeHead(status, ['content-type', 'text/plain; charset=utf-8', 'content-length', String(Buffer.byteLength(body)), 'x-skiff-error', code]);
    res.end(body);
  }

  abort(_err: SkiffError): void {
    this.res.destroy();
  }

  // ---- FrameSink (response body) ----

  onData(chunk: Buffer): boolean {
    return this.res.write(chunk);
  }

  onTrailers(raw: readonly string[]): void {
    const pairs: [string, string][] = [];
    for (let i = 0; i < raw.length; i += 2) pairs.push([raw[i], raw[i + 1]]);
    this.res.addTrailers(pairs);
  }

  onEnd(): void {
    this.res.end();
  }

  onReset(_err: SkiffError): void {
    this.res.destroy();
  }

  // ---- FrameSource (request body) ----

  pauseSource(): void {
    this.req.pause();
  }

  resumeSource(): void {
    this.req.resume();
  }
}

function onReqData(this: TaggedReq, chunk: Buffer): void {
  const ex = this[kExchange];
  if (ex !== null && ex.ctx.isLive(ex.gen)) ex.ctx.requestBody.push(chunk);
}

function onReqEnd(this: TaggedReq): void {
  const ex = this[kExchange];
  if (ex === null || !ex.ctx.isLive(ex.gen)) return;
  const body = ex.ctx.requestBody;
  const trailers = this.rawTrailers;
  if (trailers.length > 0) body.pushTrailers(trailers);
  body.end();
  this[kExchange] = null;
  ex.ctx.release(Hold.RequestBody);
}

function onReqClose(this: TaggedReq): void {
  const ex = this[kExchange];
  if (ex === null) return;
  this[kExchange] = null;
  if (!ex.ctx.isLive(ex.gen)) return;
  if (ex.ctx.requestBody.isOpen) {
    ex.ctx.requestBody.reset(new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'client closed the connection before the request body ended'));
  }
  ex.ctx.release(Hold.RequestBody);
}

function onResDrain(this: TaggedRes): void {
  const ex = this[kExchange];
  if (ex !== null && ex.ctx.isLive(ex.gen)) ex.ctx.responseBody.resumeSink();
}

function onResFinish(this: TaggedRes): void {
  const ex = this[kExchange];
  if (ex === null) return;
  this[kExchange] = null;
  settleRequestBody(ex);
  ex.engine.onDownstreamDone(ex.ctx, ex.gen, false);
}

function onResClose(this: TaggedRes): void {
  const ex = this[kExchange];
  if (ex === null) return;
  this[kExchange] = null;
  settleRequestBody(ex);
  ex.engine.onDownstreamDone(ex.ctx, ex.gen, true);
}

/**
 * After an early response to a request whose body had not fully arrived (413, 404, an
 * upstream that answered first), node:http detaches the request from the socket and never
 * emits 'end' or 'close' on it: the body is discarded here so its hold is released.
 * Regression: test/e2e/errors.test.ts (413 with the body still unsent leaked a context).
 */
function settleRequestBody(ex: H1Exchange): void {
  const req = ex.req as TaggedReq;
  if (req[kExchange] === ex) onReqClose.call(req);
}

/** Splits an absolute-form request target (`http://host/path`) into authority and path. */
function splitAbsolute(target: string): { authority: string; path: string } | null {
  const scheme = target.indexOf('://');
  if (scheme <= 0) return null;
  const rest = target.slice(scheme + 3);
  const slash = rest.indexOf('/');
  if (slash < 0) return { authority: rest, path: '/' };
  return { authority: rest.slice(0, slash), path: rest.slice(slash) };
}

export class H1Listener {
  readonly server: http.Server;
  private readonly engine: ProxyEngine;
  private readonly arena: ContextArena;
  readonly config: ListenerConfig;
  private readonly scheme: string;

  constructor(engine: ProxyEngine, arena: ContextArena, config: ListenerConfig, limits: Limits, isTls: boolean) {
    this.engine = engine;
    this.arena = arena;
    this.config = config;
    this.scheme = isTls ? 'https' : 'http';
    this.server = http.createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: 0,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      noDelay: true,
      // node:http would reject an unknown Transfer-Encoding, duplicated CL, etc. with 400 itself.
      insecureHTTPParser: false,
    });
    this.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.onRequest(req, res));
    this.server.on('connect', refuseConnect);
    this.server.on('clientError', onClientError);
  }

  /** Hands an accepted (and, for TLS, negotiated) socket to node:http. */
  attach(socket: Socket): void {
    this.server.emit('connection', socket);
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const ctx = this.arena.acquire();
    const raw = req.rawHeaders;
    ctx.protocol = 'http1';
    ctx.method = req.method ?? 'GET';
    ctx.scheme = this.scheme;
    const url = req.url ?? '/';
    const host = getHeader(raw, 'host');
    if (url.charCodeAt(0) === 47 /* '/' */ || url === '*') {
      ctx.path = url;
      ctx.authority = host ?? '';
    } else {
      const abs = splitAbsolute(url);
      ctx.path = abs === null ? url : abs.path;
      ctx.authority = abs === null ? (host ?? '') : abs.authority;
    }
    ctx.rawHeaders = raw;
    ctx.remoteAddress = req.socket.remoteAddress ?? '';
    ctx.listenerName = this.config.name;
    ctx.routeTable = this.config.routes;
    ctx.startTime = performance.now();
    const requestId = getHeader(raw, 'x-request-id');
    if (requestId !== null) ctx.requestId = requestId;
    const cl = getHeader(raw, 'content-length');
    const te = getHeader(raw, 'transfer-encoding');
    ctx.contentLength = cl === null ? -1 : Number(cl);
    ctx.hasRequestBody = te !== null || ctx.contentLength > 0;

    const ex = new H1Exchange(this.engine, ctx, req, res);
    ctx.downstream = ex;
    const tReq = req as TaggedReq;
    const tRes = res as TaggedRes;
    tRes[kExchange] = ex;
    res.on('drain', onResDrain);
    res.on('finish', onResFinish);
    res.on('close', onResClose);
    if (ctx.hasRequestBody) {
      ctx.requestBody.source = ex;
      tReq[kExchange] = ex;
      req.on('data', onReqData);
      req.on('end', onReqEnd);
      req.on('close', onReqClose);
    } else {
      tReq[kExchange] = null;
      ctx.requestBody.end();
      ctx.release(Hold.RequestBody);
    }
    this.engine.handle(ctx);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }
}

/** A raw error response for failures before node:http built a ServerResponse. */
function rawError(status: number, reason: string, err: SkiffError): string {
  const res = errorResponse(err);
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(res.body)}\r\nx-skiff-error: ${res.code}\r\nconnection: close\r\n\r\n${res.body}`;
}

function refuseConnect(_req: http.IncomingMessage, socket: Socket): void {
  const err = new SkiffError(ErrorCode.MethodNotAllowed, 'downstream', 'CONNECT is not supported');
  socket.end(rawError(405, 'Method Not Allowed', err));
}

interface ParserError extends Error {
  code?: string;
  rawPacket?: Buffer;
}

function onClientError(err: ParserError, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  // node:http only calls this before a response started on the socket.
  let text: string;
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    text = rawError(431, 'Request Header Fields Too Large', new SkiffError(ErrorCode.HeadersTooLarge, 'downstream', 'request head is too large'));
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT') {
    text = rawError(408, 'Request Timeout', new SkiffError(ErrorCode.BadRequest, 'downstream', 'request head did not arrive in time'));
  } else {
    text = rawError(400, 'Bad Request', new SkiffError(ErrorCode.BadRequest, 'downstream', `malformed request (${err.code ?? 'parse error'})`));
  }
  socket.end(text);
}
