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

/// What a list's lines hold: the hash of a normalised email, of one kind
/// per list (docs/INGEST.md). The wire's `HashType`, in storage's words.
///
/// Keys are 16 bytes whatever the kind: an MD5 whole, a SHA-256 its first
/// 16 bytes. Why a prefix is enough: two different members of one list
/// share a 128-bit SHA-256 prefix with probability below n²/2^129 (under
/// 10^-20 at three billion keys), and a query that agrees with a member on
/// 16 bytes but not on 32 can only be built by someone who already knows
/// that member's hash. A SHA-256 key then costs what an MD5 does (about
/// 14 bytes), not twice as much.
public enum HashKind: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case md5 = 0
    case sha256 = 1

    /// Hex digits in a line of a list file.
    public var hexDigits: Int { self == .md5 ? 32 : 64 }
    /// Bytes of a hash as callers send it.
    public var byteCount: Int { self == .md5 ? 16 : 32 }
    /// As the catalog, the CLI and metrics spell it: "md5", "sha256".
    public var name: String { self == .md5 ? "md5" : "sha256" }
    /// As people write it: "MD5", "SHA-256".
    public var description: String { self == .md5 ? "MD5" : "SHA-256" }

    public init?(name: String) {
        guard let type = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = type
    }

    /// The kind's number in the wire's `HashType` (1 MD5, 2 SHA-256; 0 unspecified).
    public var wireValue: Int32 { Int32(rawValue) + 1 }

    /// The kind numbered `wireValue` in the wire's `HashType`; nil for 0 and unknown numbers.
    public init?(wireValue: Int32) {
        guard wireValue > 0, wireValue <= 255, let kind = HashKind(rawValue: UInt8(wireValue - 1)) else { return nil }
        self = kind
    }

    /// The hash type whose hashes are `byteCount` bytes.
    public init?(byteCount: Int) {
        guard let type = Self.allCases.first(where: { $0.byteCount == byteCount }) else { return nil }
        self = type
    }
}

/// The layout of a segment file (docs/STORAGE.md). All integers little-endian.
public enum SegmentFormat {
    public static let magic: UInt32 = 0x4745_5352 // "RSEG" as bytes
    /// The version writers write for MD5 lists. Readers take 1 to 3.
    public static let version: UInt16 = 2
    /// Version 3: the layout of version 2, for lists of another hash type
    /// than MD5 (`hashKindOffset`). Only such segments are written as 3,
    /// so a build that predates hash types refuses them instead of
    /// serving them as MD5, and still reads every MD5 segment.
    public static let hashKinddVersion: UInt16 = 3
    /// Version 4: the layout of version 2, for a delta's overlay segments
    /// (`roleOffset`: the keys a delta adds, or removes). Only those are
    /// written as 4, so a build that predates deltas refuses them instead of
    /// serving a delta's removals as members.
    public static let roleVersion: UInt16 = 4
    /// The newest version readers take.
    public static let newestVersion: UInt16 = roleVersion
    public static let headerSize = 128
    public static let maxAdvertiserIDLength = 64
    public static let maxIndexBits = 24

    // Header field offsets.
    static let magicOffset = 0
    static let versionOffset = 4
    static let indexBitsOffset = 6
    static let droppedBytesOffset = 7
    static let keyCountOffset = 8
    static let listVersionOffset = 16
    static let indexChecksumOffset = 24
    static let keysChecksumOffset = 32
    static let advertiserLengthOffset = 40
    static let advertiserOffset = 42
    /// `HashKind.rawValue`; 0 (MD5) in every segment written before there
    /// were hash types, whose header bytes past the advertiser id were 0.
    static let hashKindOffset = 106
    /// `SegmentRole.rawValue`; 0 (members) in every segment before version 4.
    static let roleOffset = 107
    static let headerChecksumOffset = 120

    /// Index bits writers use for `n` keys (`SegmentLayout.forKeys`).
    public static func indexBits(forKeys n: Int) -> Int { SegmentLayout.forKeys(n).bits }

    /// The most bytes a segment of at most `n` keys takes, as writers lay
    /// it out: what a pack slot for it must hold.
    public static func fileSize(forKeys n: Int) -> Int { SegmentLayout.forKeys(n).fileSize(keys: n) }
}

/// How one segment's bytes are laid out: the format version, the index bits
/// `b`, and how many leading key bytes the bucket implies (`dropped`).
///
/// Version 1 stores whole 16-byte keys behind 8-byte index entries, about
/// eight keys a bucket: 17 bytes a key. Version 2 drops the leading
/// `floor(b / 8)` bytes of every key (its bucket says what they are), keeps
/// 4-byte index entries and about sixteen keys a bucket: at 10^7 keys,
/// 14 bytes of key and 0.2 of index. A lookup still reads one index entry
/// and then, guessing the key's place from its bits (MD5 is uniform), one
/// or two cache lines.
public struct SegmentLayout: Sendable, Equatable {
    public let version: UInt16
    /// Index bits: 2^b buckets by the keys' top b bits.
    public let bits: Int
    /// Leading key bytes not stored (all keys of a bucket share them).
    public let dropped: Int

    package init(version: UInt16, bits: Int, dropped: Int) {
        self.version = version
        self.bits = bits
        self.dropped = dropped
    }

    /// Bytes stored per key.
    public var stride: Int { 16 - dropped }
    /// Bytes per index entry.
    public var indexEntryBytes: Int { version == 1 ? 8 : 4 }
    public var indexBytes: Int { ((1 << bits) + 1) * indexEntryBytes }
    /// Where the keys start, from the start of the segment.
    public var keysOffset: Int { SegmentFormat.headerSize + indexBytes }
    public func fileSize(keys n: Int) -> Int { keysOffset + stride * n }

    /// The layout writers use for at most `n` keys: version 2, sixteen keys
    /// a bucket on average. (Version 1, whose 8-byte index entries count
    /// past 2^32 keys, for a segment that large.)
    public static func forKeys(_ n: Int, version: UInt16 = SegmentFormat.version) -> SegmentLayout {
        if version == 1 || n > Int(UInt32.max) {
            let bits = n >= 16 ? min(SegmentFormat.maxIndexBits, Int.bitWidth - 1 - (n / 8).leadingZeroBitCount) : 0
            return SegmentLayout(version: 1, bits: bits, dropped: 0)
        }
        let bits = n >= 32 ? min(SegmentFormat.maxIndexBits, Int.bitWidth - 1 - (n / 16).leadingZeroBitCount) : 0
        return SegmentLayout(version: 2, bits: bits, dropped: bits / 8)
    }
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
    /// What the list's keys are hashes of.
    public var hashKind: HashKind = .md5
    /// Members of a list, or keys a delta adds or removes.
    public var role: SegmentRole = .members
}

/// What a segment's keys are to its list (docs/STORAGE.md).
///
/// A list version is a base of `members` segments and, for a version made
/// by deltas, overlays on top of it: each delta's `adds` and `removes`
/// segments, which carry the delta's own version number. A key is in the
/// list when the newest overlay that names it adds it, or, when none names
/// it, when the base holds it.
public enum SegmentRole: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case members = 0
    case adds = 1
    case removes = 2

    public var description: String {
        switch self {
        case .members: "members"
        case .adds: "adds"
        case .removes: "removes"
        }
    }
}
