import CZlib

/// gzip (RFC 1952) compression and gzip/zlib (RFC 1950) decompression through the system zlib.
///
/// Every decompression takes a cap on its output and never allocates more than that cap (plus one
/// 64 KiB scratch chunk), so a small hostile input ("zip bomb") cannot exhaust memory.
public enum Gzip {
    /// Default cap on decompressed output: 1 GiB.
    public static let defaultMaxOutputBytes = 1 << 30

    /// Whether `bytes` starts like a gzip member: the magic `1f 8b` followed (when present) by
    /// compression method 8 (deflate), the only one RFC 1952 defines.
    public static func isGzip<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var it = bytes.makeIterator()
        guard it.next() == 0x1f, it.next() == 0x8b else { return false }
        if let method = it.next() { return method == 8 }
        return true
    }

    /// Decompresses a gzip or zlib stream (the framing is detected from the header).
    ///
    /// Output grows in bounded steps and the call fails as soon as it would exceed
    /// `maxOutputBytes`. Concatenated gzip members are decoded in sequence; other trailing bytes
    /// are rejected.
    ///
    /// - Parameters:
    ///   - bytes: The compressed stream.
    ///   - maxOutputBytes: Largest decompressed size accepted (default 1 GiB).
    /// - Returns: The decompressed bytes.
    /// - Throws: ``CodecError`` for corrupt, truncated or oversized input.
    public static func decompress(_ bytes: [UInt8],
                                  maxOutputBytes: Int = defaultMaxOutputBytes) throws(CodecError) -> [UInt8] {
        do {
            return try bytes.withUnsafeBufferPointer {
                try ZlibStream.inflate($0, windowBits: 15 + 32, maxOutputBytes: maxOutputBytes,
                                       operation: "Gzip.decompress")
            }
        } catch let error as CodecError {
            throw error
        } catch {
            throw CodecError.input("Gzip.decompress", "\(error)")
        }
    }

    /// How a bounded, prefix-keeping decompression (``decompressPrefix(_:maxOutputBytes:)``) ended.
    public enum PrefixEnd: Sendable, Equatable {
        /// The whole stream was decoded and is no longer than the cap.
        case complete
        /// The stream holds more than `maxOutputBytes`; decoding stopped at the cap.
        case limitReached
        /// The input ended before the end of the compressed stream (a cut-off file).
        case truncated
    }

    /// Decompresses at most `maxOutputBytes` from the start of a gzip or zlib stream and keeps
    /// what was decoded, also when the stream is longer than the cap or cut off.
    ///
    /// Use it to read a header from the first bytes of a large compressed file before deciding
    /// how much to decompress, and to report *where* a truncated stream ends. Unlike
    /// ``decompress(_:maxOutputBytes:)`` a longer or truncated stream is not an error here but
    /// an ``PrefixEnd`` the caller judges. Concatenated gzip members are decoded in sequence.
    ///
    /// - Returns: The decoded bytes (at most `maxOutputBytes`) and how decoding ended.
    /// - Throws: ``CodecError`` for data that is not a valid gzip/zlib stream (bad header,
    ///   corrupt deflate data, a wrong checksum, or bytes after the last member that do not start
    ///   another gzip member), or a negative cap.
    public static func decompressPrefix(_ bytes: [UInt8],
                                        maxOutputBytes: Int) throws(CodecError) -> (bytes: [UInt8], end: PrefixEnd) {
        let operation = "Gzip.decompressPrefix"
        guard maxOutputBytes >= 0 else {
            throw CodecError.input(operation, "maxOutputBytes must be >= 0, got \(maxOutputBytes)")
        }
        return try bytes.withUnsafeBufferPointer { (input) throws(CodecError) -> ([UInt8], PrefixEnd) in
            let strm = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            strm.initialize(to: z_stream())
            defer { strm.deinitialize(count: 1); strm.deallocate() }
            func zlibError(_ op: String, _ rc: Int32, _ fallback: String) -> CodecError {
                let detail = strm.pointee.msg.map { String(cString: $0) } ?? fallback
                return CodecError(operation: op, source: .zlib, code: rc, detail: detail)
            }
            var rc = czlib_inflateInit2(strm, 15 + 32)
            guard rc == Z_OK else { throw zlibError("inflateInit2", rc, "cannot initialise inflate") }
            defer { inflateEnd(strm) }

            var output: [UInt8] = []
            output.reserveCapacity(min(maxOutputBytes, 1 << 26))
            var scratch = [UInt8](repeating: 0, count: ZlibStream.chunkSize)
            var offset = 0  // bytes of `input` handed to zlib so far
            while true {
                if strm.pointee.avail_in == 0 && offset < input.count {
                    let take = min(input.count - offset, ZlibStream.maxInputStep)
                    strm.pointee.next_in = input.baseAddress.map { UnsafeMutablePointer(mutating: $0 + offset) }
                    strm.pointee.avail_in = uInt(take)
                    offset += take
                }
                // Room for one byte beyond the cap, so "longer than the cap" is seen without
                // decoding (or keeping) more.
                let room = min(scratch.count - 1, maxOutputBytes - output.count) + 1
                let produced = scratch.withUnsafeMutableBufferPointer { out -> Int in
                    strm.pointee.next_out = out.baseAddress
                    strm.pointee.avail_out = uInt(room)
                    rc = CZlib.inflate(strm, Z_NO_FLUSH)
                    return room - Int(strm.pointee.avail_out)
                }
                if output.count + produced > maxOutputBytes {
                    output.append(contentsOf: scratch[0..<(maxOutputBytes - output.count)])
                    return (output, .limitReached)
                }
                output.append(contentsOf: scratch[0..<produced])
                switch rc {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    let remaining = Int(strm.pointee.avail_in) + (input.count - offset)
                    if remaining == 0 { return (output, .complete) }
                    let nextIsMember: Bool
                    if remaining >= 2, let next = strm.pointee.next_in {
                        nextIsMember = next[0] == 0x1f && next[1] == 0x8b
                    } else {
                        nextIsMember = false
                    }
                    guard nextIsMember else {
                        throw CodecError.input(operation, "\(remaining) trailing byte(s) after the end of the stream")
                    }
                    rc = inflateReset(strm)
                    guard rc == Z_OK else { throw zlibError("inflateReset", rc, "cannot reset for the next gzip member") }
                case Z_BUF_ERROR where strm.pointee.avail_in == 0 && offset == input.count:
                    return (output, .truncated)
                case Z_NEED_DICT:
                    throw zlibError("inflate", rc, "stream needs a preset dictionary, which is not supported")
                default:
                    throw zlibError("inflate", rc, "corrupt or invalid compressed data")
                }
            }
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
