/**
 * The one error type of Skiff. Every failure on the data path becomes a SkiffError with a
 * stable code, the side it came from and whether a retry is safe. Exactly one function,
 * `errorResponse`, maps an error to what the downstream sees (status, plain-text body,
 * `x-skiff-error` header); adapters that can no longer send a status reset the stream instead.
 */

export type ErrorSource = 'upstream' | 'downstream' | 'internal';

export const ErrorCode = {
  BadRequest: 'SKIFF_ERR_BAD_REQUEST',
  Forbidden: 'SKIFF_ERR_FORBIDDEN',
  NoRoute: 'SKIFF_ERR_NO_ROUTE',
  BodyTooLarge: 'SKIFF_ERR_BODY_TOO_LARGE',
  HeadersTooLarge: 'SKIFF_ERR_HEADERS_TOO_LARGE',
  MethodNotAllowed: 'SKIFF_ERR_METHOD_NOT_ALLOWED',
  UpstreamConnect: 'SKIFF_ERR_UPSTREAM_CONNECT',
  UpstreamReset: 'SKIFF_ERR_UPSTREAM_RESET',
  UpstreamProtocol: 'SKIFF_ERR_UPSTREAM_PROTOCOL',
  NoEndpoint: 'SKIFF_ERR_NO_ENDPOINT',
  Overloaded: 'SKIFF_ERR_OVERLOADED',
  /** The sidecar itself is over its memory high-water mark (src/overload.ts). */
  LoadShed: 'SKIFF_ERR_LOAD_SHED',
  NoCluster: 'SKIFF_ERR_NO_CLUSTER',
  Timeout: 'SKIFF_ERR_TIMEOUT',
  RequestTimeout: 'SKIFF_ERR_REQUEST_TIMEOUT',
  ConnectTimeout: 'SKIFF_ERR_CONNECT_TIMEOUT',
  DownstreamReset: 'SKIFF_ERR_DOWNSTREAM_RESET',
  BufferOverflow: 'SKIFF_ERR_BUFFER_OVERFLOW',
  StaleContext: 'SKIFF_ERR_STALE_CONTEXT',
  Internal: 'SKIFF_ERR_INTERNAL',
  Config: 'SKIFF_ERR_CONFIG',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class SkiffError extends Error {
  readonly code: ErrorCode;
  readonly source: ErrorSource;
  /** True when the request provably did not reach the upstream application. */
  readonly isRetrySafe: boolean;
  override readonly cause: unknown;

  constructor(code: ErrorCode, source: ErrorSource, message: string, isRetrySafe = false, cause: unknown = null) {
    super(message);
    this.name = 'SkiffError';
    this.code = code;
    this.source = source;
    this.isRetrySafe = isRetrySafe;
    this.cause = cause;
  }
}

/** Wraps anything thrown into a SkiffError; SkiffErrors pass through unchanged. */
export function toSkiffError(err: unknown, code: ErrorCode = ErrorCode.Internal, source: ErrorSource = 'internal'): SkiffError {
  if (err instanceof SkiffError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SkiffError(code, source, message, false, err);
}

/** What the downstream sees for an error that happens before the response started. */
export interface ErrorResponse {
  readonly status: number;
  readonly code: ErrorCode;
  /** Short plain text naming the cause, ending in a newline. */
  readonly body: string;
  /** `retry-after` value in seconds, '' for none (only load shedding says when to come back). */
  readonly retryAfter: string;
}

const STATUS_BY_CODE: Record<ErrorCode, number> = {
  SKIFF_ERR_BAD_REQUEST: 400,
  SKIFF_ERR_FORBIDDEN: 403,
  SKIFF_ERR_NO_ROUTE: 404,
  SKIFF_ERR_METHOD_NOT_ALLOWED: 405,
  SKIFF_ERR_BODY_TOO_LARGE: 413,
  SKIFF_ERR_HEADERS_TOO_LARGE: 431,
  SKIFF_ERR_UPSTREAM_CONNECT: 502,
  SKIFF_ERR_UPSTREAM_RESET: 502,
  SKIFF_ERR_UPSTREAM_PROTOCOL: 502,
  SKIFF_ERR_BUFFER_OVERFLOW: 502,
  SKIFF_ERR_NO_ENDPOINT: 503,
  SKIFF_ERR_OVERLOADED: 503,
  SKIFF_ERR_LOAD_SHED: 503,
  SKIFF_ERR_NO_CLUSTER: 503,
  SKIFF_ERR_TIMEOUT: 504,
  SKIFF_ERR_REQUEST_TIMEOUT: 408,
  SKIFF_ERR_CONNECT_TIMEOUT: 504,
  SKIFF_ERR_DOWNSTREAM_RESET: 499,
  SKIFF_ERR_STALE_CONTEXT: 500,
  SKIFF_ERR_INTERNAL: 500,
  SKIFF_ERR_CONFIG: 500,
};

const responseCache = new Map<string, ErrorResponse>();
/**
 * Seconds a shed client is asked to wait. The shedding state is re-evaluated every 250 ms, so
 * one second (the smallest value the header can say) lets a client back as soon as it may help.
 */
const LOAD_SHED_RETRY_AFTER = '1';

/**
 * The single mapping from errors to HTTP responses. The body names the cause but never echoes
 * request data or internal stack traces. Results for the same code and message are cached:
 * error storms allocate nothing per response.
 */
export function errorResponse(err: SkiffError): ErrorResponse {
  const key = err.code + '\0' + err.message;
  let res = responseCache.get(key);
  if (res === undefined) {
    res = { status: STATUS_BY_CODE[err.code], code: err.code, body: `${err.code}: ${err.message}\n`, retryAfter: err.code === ErrorCode.LoadShed ? LOAD_SHED_RETRY_AFTER : '' };
    if (responseCache.size < 1024) responseCache.set(key, res);
  }
  return res;
}

/**
 * Envoy's response flags (the `response_flags` of access logs and Istio metrics) for each
 * error: NR no route, NC no cluster, UH no healthy upstream, UF upstream connect failure,
 * UO upstream overflow, UT upstream request timeout, UC upstream connection termination,
 * UPE upstream protocol error, DC downstream connection termination, DPE downstream protocol
 * error, OM overload manager (load shed), SI stream idle timeout (a request body that stopped arriving). Codes without an Envoy flag map to '-', as a request without an error does.
 */
const FLAG_BY_CODE: Record<ErrorCode, string> = {
  SKIFF_ERR_BAD_REQUEST: 'DPE',
  SKIFF_ERR_FORBIDDEN: '-',
  SKIFF_ERR_NO_ROUTE: 'NR',
  SKIFF_ERR_METHOD_NOT_ALLOWED: 'NR',
  SKIFF_ERR_BODY_TOO_LARGE: '-',
  SKIFF_ERR_HEADERS_TOO_LARGE: 'DPE',
  SKIFF_ERR_UPSTREAM_CONNECT: 'UF',
  SKIFF_ERR_UPSTREAM_RESET: 'UC',
  SKIFF_ERR_UPSTREAM_PROTOCOL: 'UPE',
  SKIFF_ERR_BUFFER_OVERFLOW: 'UPE',
  SKIFF_ERR_NO_ENDPOINT: 'UH',
  SKIFF_ERR_OVERLOADED: 'UO',
  SKIFF_ERR_LOAD_SHED: 'OM',
  SKIFF_ERR_NO_CLUSTER: 'NC',
  SKIFF_ERR_TIMEOUT: 'UT',
  SKIFF_ERR_REQUEST_TIMEOUT: 'SI',
  SKIFF_ERR_CONNECT_TIMEOUT: 'UF',
  SKIFF_ERR_DOWNSTREAM_RESET: 'DC',
  SKIFF_ERR_STALE_CONTEXT: '-',
  SKIFF_ERR_INTERNAL: '-',
  SKIFF_ERR_CONFIG: '-',
};

/** The response flag of a finished request ('-' when it had no error). */
export function responseFlagOf(err: SkiffError | null): string {
  return err === null ? '-' : FLAG_BY_CODE[err.code];
}
