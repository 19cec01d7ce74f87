/** Chunked framing on the way out, shared by the listener and upstream codecs. */
import type { Socket } from 'node:net';

const LAST_CHUNK = '0\r\n\r\n';

/** Writes one chunk (size line, data, CRLF); returns the socket's backpressure signal. */
export function writeChunk(socket: Socket, chunk: Buffer): boolean {
  socket.write(chunk.length.toString(16) + '\r\n', 'latin1');
  socket.write(chunk);
  return socket.write('\r\n', 'latin1');
}

/** Writes the last chunk with the trailer section (flat [name, value, ...]). */
export function writeLastChunk(socket: Socket, trailers: readonly string[] | null): void {
  if (trailers === null || trailers.length === 0) {
    socket.write(LAST_CHUNK, 'latin1');
    return;
  }
  let s = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) s += trailers[i] + ': ' + trailers[i + 1] + '\r\n';
  socket.write(s + '\r\n', 'latin1');
}
