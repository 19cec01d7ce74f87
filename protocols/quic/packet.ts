/**
 * QUIC header parsing for routing (RFC 9000 section 17, RFC 8999 for the invariants). Only
 * what the endpoint needs to pick a connection: header form, version, the DCID's place, the
 * SCID's place and the long packet type. Everything else is quiche's job.
 *
 * Allocation-free: the parser fills a caller-owned `PacketHeader` with offsets into the
 * datagram, and connection ids become numeric table keys (`cidKey`) instead of strings.
 */

/** Length of every connection id Skiff issues. Short-header packets carry exactly this many DCID bytes. */
export const SCID_LENGTH = 16;

/** The largest connection id QUIC v1 allows; longer ones are only legal in unknown versions. */
export const MAX_CID_LENGTH = 20;

/** A client's first Initial must arrive in a datagram at least this large (RFC 9000 section 14.1). */
export const MIN_INITIAL_DATAGRAM = 1200;

export const LongPacketType = { Initial: 0, ZeroRtt: 1, Handshake: 2, Retry: 3 } as const;

/** One parsed header; fields are offsets into the datagram it was parsed from. Reuse one per endpoint. */
export class PacketHeader {
  isLong = false;
  /** 0 for short headers (the version is implicit), the wire version otherwise (0 = version negotiation). */
  version = 0;
  /** Long packet type (LongPacketType) for version 1; -1 for short headers. */
  longType = -1;
  dcidOffset = 0;
  dcidLength = 0;
  scidOffset = 0;
  scidLength = 0;
}

/**
 * Parses the header of the first packet in `buf`. Returns false for anything that cannot be a
 * QUIC packet we could route: empty or truncated datagrams, a clear fixed bit in a v1 packet,
 * a long header whose CID lengths overrun the datagram, a short header too short to hold our
 * DCID plus a minimal protected payload.
 */
export function parseHeader(buf: Uint8Array, length: number, out: PacketHeader): boolean {
  if (length < 1) return false;
  const first = buf[0] as number;
  if ((first & 0x80) !== 0) {
    // Long header: 1 byte flags, 4 bytes version, DCID len + DCID, SCID len + SCID.
    if (length < 7) return false;
    const version = ((buf[1] as number) * 0x1000000) + (((buf[2] as number) << 16) | ((buf[3] as number) << 8) | (buf[4] as number));
    const dcidLength = buf[5] as number;
    const scidLenAt = 6 + dcidLength;
    if (scidLenAt >= length) return false;
    const scidLength = buf[scidLenAt] as number;
    if (scidLenAt + 1 + scidLength > length) return false;
    if (version === 1) {
      if ((first & 0x40) === 0) return false;
      if (dcidLength > MAX_CID_LENGTH || scidLength > MAX_CID_LENGTH) return false;
    }
    out.isLong = true;
    out.version = version;
    out.longType = version === 1 ? (first & 0x30) >> 4 : -1;
    out.dcidOffset = 6;
    out.dcidLength = dcidLength;
    out.scidOffset = scidLenAt + 1;
    out.scidLength = scidLength;
    return true;
  }
  // Short header: flags, DCID (our fixed length), then at least a 1-byte packet number and
  // a 16-byte AEAD tag plus the 4-byte header protection sample offset (RFC 9001 section 5.4.2).
  if ((first & 0x40) === 0) return false;
  if (length < 1 + SCID_LENGTH + 20) return false;
  out.isLong = false;
  out.version = 0;
  out.longType = -1;
  out.dcidOffset = 1;
  out.dcidLength = SCID_LENGTH;
  out.scidOffset = 0;
  out.scidLength = 0;
  return true;
}

/**
 * The table key of one of our connection ids: its first 6 bytes as a number (exact below
 * 2^53). Our SCIDs are random and unique in their first 6 bytes per endpoint (the endpoint
 * checks at issue time); `cidMatches` confirms the rest. Cheaper than a hex or latin1 string
 * key: no string is built or hashed per datagram.
 */
export function cidKey(buf: Uint8Array, offset: number): number {
  return (
    ((buf[offset] as number) * 0x10000 + (((buf[offset + 1] as number) << 8) | (buf[offset + 2] as number))) * 0x1000000 +
    (((buf[offset + 3] as number) << 16) | ((buf[offset + 4] as number) << 8) | (buf[offset + 5] as number))
  );
}

/** True when `buf[offset .. offset + cid.length)` equals `cid`. */
export function cidMatches(buf: Uint8Array, offset: number, cid: Uint8Array): boolean {
  const n = cid.length;
  for (let i = 0; i < n; i++) {
    if (buf[offset + i] !== cid[i]) return false;
  }
  return true;
}

/** A string key for a peer-chosen connection id (client Initial DCIDs; cold path only). */
export function foreignCidKey(buf: Uint8Array, offset: number, length: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + offset, length).toString('latin1');
}
