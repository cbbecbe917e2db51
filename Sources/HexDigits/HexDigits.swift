/// Hex digits, decoded (and written) in one place for everyone who reads member hashes:
/// the ingest parser (millions of lines a second) and the client library
/// (a hash typed by a user). A module of its own, with no dependencies, so
/// that the client library does not have to depend on the ingest side to
/// share it.
public enum HexDigits {
    /// Each byte's value as a hex digit (either case), 0xFF when it is not one.
    public static let value: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "0123456789".utf8.enumerated() { table[Int(c)] = UInt8(i) }
        for (i, c) in "abcdef".utf8.enumerated() { table[Int(c)] = UInt8(10 + i) }
        for (i, c) in "ABCDEF".utf8.enumerated() { table[Int(c)] = UInt8(10 + i) }
        return table
    }()

    @inlinable
    public static func isHexDigit(_ byte: UInt8) -> Bool { value[Int(byte)] != 0xFF }

    /// Two hex digits at once: indexed by the two bytes as a little-endian
    /// UInt16, the byte they spell, or 0x100 if either is not a hex digit.
    /// 128 KiB, so it stays in cache; half the lookups of a digit table.
    @usableFromInline
    nonisolated(unsafe) static let pairs: UnsafePointer<UInt16> = {
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: 65536)
        p.initialize(repeating: 0x100, count: 65536)
        for a in 0..<256 where value[a] < 0x10 {
            for b in 0..<256 where value[b] < 0x10 {
                p[a | b << 8] = UInt16(value[a]) << 4 | UInt16(value[b])
            }
        }
        return UnsafePointer(p)
    }()

    /// Decodes the 32 hex digits at `p` (either case) into the 16 bytes they
    /// spell, as two big-endian halves; nil if any byte is not a hex digit.
    /// Reads exactly 32 bytes. Inlinable because the ingest parser calls it
    /// once a line.
    @inlinable @inline(__always)
    public static func decode32(_ p: UnsafeRawPointer) -> (hi: UInt64, lo: UInt64)? {
        let t = pairs
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        var bad: UInt16 = 0
        for i in 0..<8 {
            let v = t[Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))]
            bad |= v
            hi = hi << 8 | UInt64(v & 0xFF)
        }
        for i in 8..<16 {
            let v = t[Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))]
            bad |= v
            lo = lo << 8 | UInt64(v & 0xFF)
        }
        return bad & 0x100 == 0 ? (hi, lo) : nil
    }

    /// `bytes` as lower-case hex digits, two a byte (how hashes are written:
    /// member hashes, SHA-256 in request signatures).
    public static func lowercase(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        appendLowercase(bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `bytes` as lower-case hex digits to `out` (no String made).
    @inlinable
    public static func appendLowercase(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        for byte in bytes {
            out.append(lowercaseDigits[Int(byte >> 4)])
            out.append(lowercaseDigits[Int(byte & 15)])
        }
    }

    @usableFromInline static let lowercaseDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
