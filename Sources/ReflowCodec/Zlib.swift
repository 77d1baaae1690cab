import CZlib

/// Internal zlib stream drivers shared by `Gzip` and `PNG`.
///
/// The `z_stream` lives in manually allocated memory: zlib stores a back-pointer to the stream in
/// its private state and rejects calls made through any other address (`inflateStateCheck`), so it
/// must not move between calls the way a Swift `var` passed `inout` is allowed to.
enum ZlibStream {
    /// Output is produced through a scratch buffer of this size, so growth is bounded per step.
    static let chunkSize = 1 << 16
    /// `avail_in` is a 32-bit `uInt`; feed at most this much per step.
    static let maxInputStep = 1 << 30

    private static func message(_ strm: UnsafeMutablePointer<z_stream>, _ fallback: String) -> String {
        if let msg = strm.pointee.msg { return String(cString: msg) }
        return fallback
    }

    /// Compresses `input`. `windowBits` 15 gives a zlib stream, 15 + 16 a gzip stream.
    static func deflate(_ input: UnsafeBufferPointer<UInt8>, level: Int, windowBits: Int32,
                        operation: String) throws -> [UInt8] {
        guard level >= -1 && level <= 9 else {
            throw CodecError.input(operation, "compression level must be -1...9, got \(level)")
        }
        let strm = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        strm.initialize(to: z_stream())
        defer { strm.deinitialize(count: 1); strm.deallocate() }

        var rc = czlib_deflateInit2(strm, Int32(level), Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY)
        guard rc == Z_OK else {
            throw CodecError(operation: "deflateInit2", source: .zlib, code: rc,
                             detail: message(strm, "cannot initialise deflate"))
        }
        defer { deflateEnd(strm) }

        var output: [UInt8] = []
        output.reserveCapacity(min(input.count / 2 + 64, 1 << 26))
        var scratch = [UInt8](repeating: 0, count: chunkSize)
        var offset = 0
        var flush: Int32 = Z_NO_FLUSH
        repeat {
            let take = min(input.count - offset, maxInputStep)
            strm.pointee.next_in = input.baseAddress.map { UnsafeMutablePointer(mutating: $0 + offset) }
            strm.pointee.avail_in = uInt(take)
            offset += take
            flush = offset == input.count ? Z_FINISH : Z_NO_FLUSH
            repeat {
                let produced = scratch.withUnsafeMutableBufferPointer { out -> Int in
                    strm.pointee.next_out = out.baseAddress
                    strm.pointee.avail_out = uInt(out.count)
                    rc = CZlib.deflate(strm, flush)
                    return out.count - Int(strm.pointee.avail_out)
                }
                if rc == Z_STREAM_ERROR {
                    throw CodecError(operation: "deflate", source: .zlib, code: rc,
                                     detail: message(strm, "stream state inconsistent"))
                }
                output.append(contentsOf: scratch[0..<produced])
            } while strm.pointee.avail_out == 0
        } while flush != Z_FINISH
        guard rc == Z_STREAM_END else {
            throw CodecError(operation: "deflate", source: .zlib, code: rc,
                             detail: message(strm, "stream did not finish"))
        }
        return output
    }

    /// Decompresses `input`, refusing to produce more than `maxOutputBytes`.
    ///
    /// `windowBits` 15 + 32 auto-detects zlib or gzip framing. Concatenated gzip members (as
    /// produced by `cat a.gz b.gz`) are decoded in sequence, like `gzip -d`; any other bytes after
    /// the end of the stream are an error.
    static func inflate(_ input: UnsafeBufferPointer<UInt8>, windowBits: Int32, maxOutputBytes: Int,
                        operation: String) throws -> [UInt8] {
        guard maxOutputBytes >= 0 else {
            throw CodecError.input(operation, "maxOutputBytes must be >= 0, got \(maxOutputBytes)")
        }
        let strm = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        strm.initialize(to: z_stream())
        defer { strm.deinitialize(count: 1); strm.deallocate() }

        var rc = czlib_inflateInit2(strm, windowBits)
        guard rc == Z_OK else {
            throw CodecError(operation: "inflateInit2", source: .zlib, code: rc,
                             detail: message(strm, "cannot initialise inflate"))
        }
        defer { inflateEnd(strm) }

        var output: [UInt8] = []
        output.reserveCapacity(min(input.count * 3, maxOutputBytes, 1 << 26))
        var scratch = [UInt8](repeating: 0, count: chunkSize)
        var offset = 0  // bytes of `input` handed to zlib so far
        while true {
            if strm.pointee.avail_in == 0 && offset < input.count {
                let take = min(input.count - offset, maxInputStep)
                strm.pointee.next_in = input.baseAddress.map { UnsafeMutablePointer(mutating: $0 + offset) }
                strm.pointee.avail_in = uInt(take)
                offset += take
            }
            let produced = scratch.withUnsafeMutableBufferPointer { out -> Int in
                strm.pointee.next_out = out.baseAddress
                strm.pointee.avail_out = uInt(out.count)
                rc = CZlib.inflate(strm, Z_NO_FLUSH)
                return out.count - Int(strm.pointee.avail_out)
            }
            if produced > maxOutputBytes - output.count {
                throw CodecError.input(operation,
                                       "decompressed size exceeds the limit of \(maxOutputBytes) bytes")
            }
            output.append(contentsOf: scratch[0..<produced])
            switch rc {
            case Z_OK:
                continue
            case Z_STREAM_END:
                let remaining = Int(strm.pointee.avail_in) + (input.count - offset)
                if remaining == 0 { return output }
                // The unconsumed bytes start at next_in (pieces of `input` are fed contiguously).
                let isGzipMember: Bool
                if remaining >= 2, let next = strm.pointee.next_in {
                    isGzipMember = next[0] == 0x1f && next[1] == 0x8b
                } else {
                    isGzipMember = false
                }
                guard isGzipMember else {
                    throw CodecError.input(operation, "\(remaining) trailing byte(s) after the end of the stream")
                }
                rc = inflateReset(strm)
                guard rc == Z_OK else {
                    throw CodecError(operation: "inflateReset", source: .zlib, code: rc,
                                     detail: message(strm, "cannot reset for the next gzip member"))
                }
            case Z_BUF_ERROR where strm.pointee.avail_in == 0 && offset == input.count:
                throw CodecError(operation: "inflate", source: .zlib, code: rc,
                                 detail: "input ended before the end of the compressed stream (truncated)")
            case Z_NEED_DICT:
                throw CodecError(operation: "inflate", source: .zlib, code: rc,
                                 detail: "stream needs a preset dictionary, which is not supported")
            default:
                throw CodecError(operation: "inflate", source: .zlib, code: rc,
                                 detail: message(strm, "corrupt or invalid compressed data"))
            }
        }
    }

    /// CRC-32 (ISO 3309 / ITU-T V.42, as used by PNG and gzip) continuing from `crc`.
    static func crc32(_ crc: UInt32, _ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        var c = uLong(crc)
        guard let base = bytes.baseAddress else { return crc }
        var offset = 0
        while offset < bytes.count {
            let take = min(bytes.count - offset, maxInputStep)
            c = CZlib.crc32(c, base + offset, uInt(take))
            offset += take
        }
        return UInt32(truncatingIfNeeded: c)
    }
}
