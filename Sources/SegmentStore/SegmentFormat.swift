#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A 16-byte key (an MD5), ordered as its bytes are (big-endian words).
public struct Key16: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Bytes 0-7 read big-endian.
    public var hi: UInt64
    /// Bytes 8-15 read big-endian.
    public var lo: UInt64

    @inlinable
    public init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    /// Reads 16 bytes at `p`.
    @inlinable
    public init(_ p: UnsafeRawPointer) {
        hi = UInt64(bigEndian: p.loadUnaligned(as: UInt64.self))
        lo = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        let array = Array(bytes)
        self = array.withUnsafeBytes { Key16($0.baseAddress!) }
    }

    @inlinable
    public static func < (a: Key16, b: Key16) -> Bool {
        a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo)
    }

    /// Writes the 16 bytes at `p`.
    @inlinable
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: hi.bigEndian, as: UInt64.self)
        p.storeBytes(of: lo.bigEndian, toByteOffset: 8, as: UInt64.self)
    }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { store(to: $0.baseAddress!) }
        return out
    }

    /// 32 lower-case hex digits.
    public var description: String {
        String(format: "%016llx%016llx", hi, lo)
    }
}

/// The layout of a segment file (docs/STORAGE.md). All integers little-endian.
public enum SegmentFormat {
    public static let magic: UInt32 = 0x4745_5352 // "RSEG" as bytes
    public static let version: UInt16 = 1
    public static let headerSize = 128
    public static let maxAdvertiserIDLength = 64
    public static let maxIndexBits = 24

    // Header field offsets.
    static let magicOffset = 0
    static let versionOffset = 4
    static let indexBitsOffset = 6
    static let keyCountOffset = 8
    static let listVersionOffset = 16
    static let indexChecksumOffset = 24
    static let keysChecksumOffset = 32
    static let advertiserLengthOffset = 40
    static let advertiserOffset = 42
    static let headerChecksumOffset = 120

    /// Index bits for `n` keys: about 8 keys a bucket, so that a lookup reads
    /// one index entry and then one or two cache lines of keys.
    public static func indexBits(forKeys n: Int) -> Int {
        guard n >= 16 else { return 0 }
        return min(maxIndexBits, max(0, Int.bitWidth - 1 - (n / 8).leadingZeroBitCount))
    }

    static func indexBytes(bits: Int) -> Int { ((1 << bits) + 1) * 8 }

    public static func fileSize(keys n: Int, bits: Int) -> Int { headerSize + indexBytes(bits: bits) + 16 * n }
}

/// Why a segment file was refused.
/// An error of a storage service (an object store holding the segments)
/// that may say nothing about the data: the service could not be reached
/// or could not serve now. Workers wait such an outage out, holding their
/// lease, rather than count it as a failed attempt.
public protocol OutageError: Error {
    /// Whether a later retry of the same call may succeed.
    var isTransient: Bool { get }
}

public struct SegmentError: Error, Sendable, CustomStringConvertible, Equatable {
    public var path: String
    public var reason: String
    /// The process ran out of something (memory maps, file descriptors,
    /// memory): nothing is wrong with the file, and the same call may work
    /// later. Not damage.
    public var isResourceLimit: Bool

    public init(_ path: String, _ reason: String, isResourceLimit: Bool = false) {
        self.path = path
        self.reason = reason
        self.isResourceLimit = isResourceLimit
    }

    /// Whether `errno` from open or mmap means a limit rather than the file.
    static func isResourceLimit(errno: Int32) -> Bool {
        errno == ENOMEM || errno == EMFILE || errno == ENFILE || errno == EAGAIN
    }

    public var description: String { "segment \(path): \(reason)" }
}

/// What a segment holds, from its header.
public struct SegmentInfo: Sendable, Equatable {
    public var path: String
    public var advertiserID: String
    public var version: UInt64
    public var keyCount: Int
    public var indexBits: Int
    public var firstKey: Key16?
    public var lastKey: Key16?
}
