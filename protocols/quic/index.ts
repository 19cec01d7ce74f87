/** Skiff's QUIC driver on quiche's binding: endpoint (socket, routing, timers), connection (streams), configs. */
export { QuicEndpoint, type QuicEndpointOptions, type QuicServerOptions, type QuicConnectOptions, type QuicEndpointCounters } from './endpoint.js';
export {
  QuicConnection,
  ConnectionState,
  NOOP_HANDLER,
  type QuicConnectionHandler,
  type QuicCloseInfo,
  type StreamDirection,
} from './connection.js';
export {
  QuicConfig,
  QUIC_DEFAULTS,
  createServerConfig,
  createClientConfig,
  type QuicTransportOptions,
  type QuicServerConfigOptions,
  type QuicClientConfigOptions,
  type CongestionControl,
} from './config.js';
export { QuicError, QuicErrorCode, fromQuicheError, TransportErrorCode } from './binding.js';
export { SCID_LENGTH } from './packet.js';
