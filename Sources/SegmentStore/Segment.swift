#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open, memory-mapped (or, when small, memory-resident), verified
/// segment: a sorted set of 16-byte keys.
///
/// The file is mapped read-only; the only memory a lookup touches is the
/// mapping (16 bytes a key plus the index), so there is no Swift object or
/// hash-table entry per key. The mapping lives as long as the object:
/// in-flight lookups hold a reference, so a segment replaced by a newer
/// version is unmapped only after the last of them returns.
public final class Segment: @unchecked Sendable {
    public let info: SegmentInfo
    /// The file the segment lies in, kept mapped while the segment lives.
    public let mapping: FileMapping
    /// Where in the mapped file the segment lies; nil: all of it.
    public let slice: SegmentLocation.Slice?
    private let base: UnsafeRawPointer
    private let size: Int
    private let index: UnsafePointer<UInt64>
    private let keys: UnsafeRawPointer
    private let shift: UInt64
    private let bits: Int

    /// How much of a segment to check when opening it.
    public enum Checks: Sendable {
        /// Sizes and the header checksum.
        case header
        /// And the index checksum: a few kilobytes to a few megabytes,
        /// whatever the number of keys. What a restart checks; the keys are
        /// left to the background scrub.
        case headerAndIndex
        /// And the checksum of every key: reads the whole file.
        case everything
    }

    /// Opens and checks `path`: sizes, header checksum and, when `verify` is
    /// true, the checksums of the index and of every key.
    public convenience init(path: String, verify: Bool = true) throws(SegmentError) {
        try self.init(path: path, checks: verify ? .everything : .header)
    }

    /// Opens and checks the segment that is the whole file at `path`.
    public convenience init(path: String, checks: Checks) throws(SegmentError) {
        try self.init(in: try FileMapping(path: path), slice: nil, checks: checks)
    }

    /// Opens and checks the segment at `slice` of a mapped file (nil: the
    /// whole file). Segments of one pack share its one map.
    public init(in mapping: FileMapping, slice: SegmentLocation.Slice?, checks: Checks) throws(SegmentError) {
        let name = SegmentLocation(path: mapping.path, slice: slice).description
        let offset = slice?.offset ?? 0
        let size = slice?.length ?? mapping.size
        guard offset >= 0, size >= 0, offset <= mapping.size, size <= mapping.size - offset else {
            throw SegmentError(name, "the slice lies outside the \(mapping.size)-byte file")
        }
        guard size >= SegmentFormat.headerSize else {
            throw SegmentError(name, "truncated: \(size) bytes, smaller than the \(SegmentFormat.headerSize)-byte header")
        }
        let base = mapping.base + offset
        let info = try Segment.check(base: base, size: size, path: name, checks: checks)
        self.info = info
        self.mapping = mapping
        self.slice = slice
        self.base = base
        self.size = size
        self.bits = info.indexBits
        self.shift = UInt64(64 - info.indexBits)
        self.index = (base + SegmentFormat.headerSize).assumingMemoryBound(to: UInt64.self)
        self.keys = base + SegmentFormat.headerSize + SegmentFormat.indexBytes(bits: info.indexBits)
    }

    public var count: Int { info.keyCount }

    /// Checks the index and key checksums of the mapped file, as it is on
    /// disk now (the map shares the file's pages), without mapping it again:
    /// the scrub must not need a map of its own when a server is near its
    /// limit of maps.
    ///
    /// A small segment read into memory (`FileMapping.isCopy`) is checked
    /// twice: the copy, which answers lookups, and the file, read again
    /// (a transient descriptor, no map), which a restart would load.
    public func verify() throws(SegmentError) {
        _ = try Segment.check(base: base, size: size, path: info.path, checks: .everything)
        guard mapping.isCopy else { return }
        let disk = try mapping.readFromDisk(offset: slice?.offset ?? 0, count: size)
        defer { disk.deallocate() }
        _ = try Segment.check(base: UnsafeRawPointer(disk), size: size, path: info.path, checks: .everything)
    }

    private static func check(base: UnsafeRawPointer, size: Int, path: String, checks: Checks) throws(SegmentError) -> SegmentInfo {
        func u64(_ offset: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
        guard UInt32(littleEndian: base.loadUnaligned(as: UInt32.self)) == SegmentFormat.magic else {
            throw SegmentError(path, "not a segment file (bad magic)")
        }
        let version = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: SegmentFormat.versionOffset, as: UInt16.self))
        guard version == SegmentFormat.version else { throw SegmentError(path, "unsupported format version \(version)") }
        let headerHash = XXH64.hash(UnsafeRawBufferPointer(start: base, count: SegmentFormat.headerChecksumOffset))
        guard headerHash == u64(SegmentFormat.headerChecksumOffset) else { throw SegmentError(path, "header checksum mismatch") }
        let bits = Int(base.load(fromByteOffset: SegmentFormat.indexBitsOffset, as: UInt8.self))
        guard bits <= SegmentFormat.maxIndexBits else { throw SegmentError(path, "index bits \(bits) exceed \(SegmentFormat.maxIndexBits)") }
        let count = u64(SegmentFormat.keyCountOffset)
        guard count <= UInt64(Int.max / 32) else { throw SegmentError(path, "implausible key count \(count)") }
        let n = Int(count)
        let expected = SegmentFormat.fileSize(keys: n, bits: bits)
        guard size == expected else {
            throw SegmentError(path, size < expected
                ? "truncated: \(size) bytes, \(expected) expected for \(n) keys"
                : "\(size - expected) unexpected bytes after the keys")
        }
        let idLength = Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: SegmentFormat.advertiserLengthOffset, as: UInt16.self)))
        guard idLength <= SegmentFormat.maxAdvertiserIDLength else { throw SegmentError(path, "advertiser id too long") }
        let advertiser = String(decoding: UnsafeRawBufferPointer(start: base + SegmentFormat.advertiserOffset, count: idLength), as: UTF8.self)

        let indexStart = SegmentFormat.headerSize
        let indexBytes = SegmentFormat.indexBytes(bits: bits)
        guard u64(indexStart + (1 << bits) * 8) == count else { throw SegmentError(path, "index does not end at the key count") }
        if checks != .header {
            let indexHash = XXH64.hash(UnsafeRawBufferPointer(start: base + indexStart, count: indexBytes))
            guard indexHash == u64(SegmentFormat.indexChecksumOffset) else { throw SegmentError(path, "index checksum mismatch") }
        }
        if checks == .everything {
            let keysHash = XXH64.hash(UnsafeRawBufferPointer(start: base + indexStart + indexBytes, count: 16 * n))
            guard keysHash == u64(SegmentFormat.keysChecksumOffset) else { throw SegmentError(path, "key checksum mismatch") }
        }
        let keys = base + indexStart + indexBytes
        return SegmentInfo(
            path: path, advertiserID: advertiser, version: u64(SegmentFormat.listVersionOffset), keyCount: n, indexBits: bits,
            firstKey: n > 0 ? Key16(keys) : nil, lastKey: n > 0 ? Key16(keys + 16 * (n - 1)) : nil)
    }

    // MARK: Lookups

    @inline(__always)
    private func bucketBounds(_ hi: UInt64) -> (Int, Int) {
        let b = bits == 0 ? 0 : Int(truncatingIfNeeded: hi >> shift)
        return (Int(truncatingIfNeeded: UInt64(littleEndian: index[b])), Int(truncatingIfNeeded: UInt64(littleEndian: index[b + 1])))
    }

    @inline(__always)
    private func search(_ hi: UInt64, _ lo: UInt64, _ low: Int, _ high: Int) -> Bool {
        var l = low
        var r = high
        while l < r {
            let m = (l + r) >> 1
            let p = keys + m << 4
            let kh = UInt64(bigEndian: p.loadUnaligned(as: UInt64.self))
            if kh < hi {
                l = m + 1
            } else if kh > hi {
                r = m
            } else {
                let kl = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                if kl == lo { return true }
                if kl < lo { l = m + 1 } else { r = m }
            }
        }
        return false
    }

    /// The keys as stored: `count` × 16 bytes, big-endian, ascending. Valid
    /// while the segment is alive (for sequential readers such as merges).
    public var keyBytes: UnsafeRawPointer { keys }

    /// The key at `i` (0 ..< count), in order.
    public func key(at i: Int) -> Key16 {
        precondition(i >= 0 && i < info.keyCount)
        return Key16(keys + i << 4)
    }

    /// The index of the first key not less than `key` (count if none):
    /// where a key range starts, for merging runs by range.
    public func lowerBound(_ key: Key16) -> Int {
        var (l, r) = bucketBounds(key.hi)
        while l < r {
            let m = (l + r) >> 1
            if Key16(keys + m << 4) < key { l = m + 1 } else { r = m }
        }
        return l
    }

    public func contains(_ key: Key16) -> Bool {
        let (l, r) = bucketBounds(key.hi)
        return search(key.hi, key.lo, l, r)
    }

    /// Looks up `count` keys stored back to back at `keys` (16 bytes each)
    /// and sets bit i of `bitmap` (LSB first) for each key found.
    ///
    /// The batch is done in two passes: first every key's bucket bounds (the
    /// index loads are independent, so the CPU overlaps their cache misses),
    /// then the searches within the buckets.
    public func lookup(_ keysToFind: UnsafeRawPointer, count: Int, into bitmap: UnsafeMutablePointer<UInt8>) {
        let chunk = 64
        var bounds = [(Int, Int)](repeating: (0, 0), count: min(chunk, count))
        var start = 0
        while start < count {
            let n = min(chunk, count - start)
            for i in 0..<n {
                let hi = UInt64(bigEndian: keysToFind.loadUnaligned(fromByteOffset: (start + i) << 4, as: UInt64.self))
                bounds[i] = bucketBounds(hi)
            }
            for i in 0..<n {
                let p = keysToFind + ((start + i) << 4)
                let hi = UInt64(bigEndian: p.loadUnaligned(as: UInt64.self))
                let lo = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                if search(hi, lo, bounds[i].0, bounds[i].1) {
                    bitmap[(start + i) >> 3] |= UInt8(1) << UInt8((start + i) & 7)
                }
            }
            start += n
        }
    }
}
