import CZlib

/// gzip (RFC 1952) compression and gzip/zlib (RFC 1950) decompression through the system zlib.
public enum Gzip {
    /// Default cap on decompressed output: 1 GiB.
    public static let defaultMaxOutputBytes = 1 << 30

    /// Decompresses a gzip or zlib stream (the framing is detected from the header).
    ///
    /// Output grows in bounded steps and the call fails as soon as it would exceed
    /// `maxOutputBytes`, so a small hostile input ("zip bomb") cannot exhaust memory.
    /// Concatenated gzip members are decoded in sequence; other trailing bytes are rejected.
    ///
    /// - Parameters:
    ///   - bytes: The compressed stream.
    ///   - maxOutputBytes: Largest decompressed size accepted (default 1 GiB).
    /// - Returns: The decompressed bytes.
    /// - Throws: ``CodecError`` for corrupt, truncated or oversized input.
    public static func decompress(_ bytes: [UInt8], maxOutputBytes: Int = defaultMaxOutputBytes) throws -> [UInt8] {
        try bytes.withUnsafeBufferPointer {
            try ZlibStream.inflate($0, windowBits: 15 + 32, maxOutputBytes: maxOutputBytes,
                                   operation: "Gzip.decompress")
        }
    }

    /// Compresses bytes into a single gzip member.
    ///
    /// - Parameters:
    ///   - bytes: Data to compress (may be empty).
    ///   - level: zlib level, `0` (store) ... `9` (best), or `-1` for zlib's default. Default `6`.
    /// - Returns: A gzip stream (`1f 8b ...`).
    /// - Throws: ``CodecError`` for an invalid level or a zlib failure.
    public static func compress(_ bytes: [UInt8], level: Int = 6) throws -> [UInt8] {
        try bytes.withUnsafeBufferPointer {
            try ZlibStream.deflate($0, level: level, windowBits: 15 + 16, operation: "Gzip.compress")
        }
    }
}
