import CPrefetch
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
    /// How the bytes are laid out (format version, index bits, bytes dropped).
    public let layout: SegmentLayout
    private let base: UnsafeRawPointer
    private let size: Int
    private let index: UnsafeRawPointer
    private let keys: UnsafeRawPointer
    private let shift: UInt64
    private let bits: Int
    /// `layout.stride`, `layout.dropped * 8` and whether index entries are
    /// 8 bytes, kept unpacked for the lookups.
    private let stride: Int
    private let droppedBits: UInt64
    private let wideIndex: Bool

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
        var (info, layout) = try Segment.check(base: base, size: size, path: name, checks: checks)
        if info.keyCount > 0 {
            info.firstKey = Self.key(at: 0, keys: base + layout.keysOffset, index: base + SegmentFormat.headerSize, layout: layout)
            info.lastKey = Self.key(at: info.keyCount - 1, keys: base + layout.keysOffset, index: base + SegmentFormat.headerSize, layout: layout)
        }
        self.info = info
        self.layout = layout
        self.mapping = mapping
        self.slice = slice
        self.base = base
        self.size = size
        self.bits = layout.bits
        self.shift = UInt64(64 - layout.bits)
        self.index = base + SegmentFormat.headerSize
        self.keys = base + layout.keysOffset
        self.stride = layout.stride
        self.droppedBits = UInt64(layout.dropped * 8)
        self.wideIndex = layout.indexEntryBytes == 8
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

    /// `verify()` in pieces: the keys are hashed `pieceBytes` at a time, and
    /// `pause` is awaited after each piece with the bytes just read.
    ///
    /// The background scrub reads this way. Hashing a 140 MB segment in one
    /// go holds a core for tens of milliseconds, and a match server's event
    /// loop sharing that core waits behind it: measured, the scrub was the
    /// open-loop Match tail's worst spikes (a p99 of 1-s windows of ~2 ms).
    /// A piece of 1 MiB is a fraction of a millisecond.
    public func verify(inPiecesOf pieceBytes: Int, pause: (Int) async -> Void) async throws(SegmentError) {
        guard !mapping.isCopy else {
            // Small (at most FileMapping.copyLimit): checked in one go, copy and disk.
            try verify()
            await pause(size)
            return
        }
        _ = try Segment.check(base: base, size: size, path: info.path, checks: .headerAndIndex)
        var hash = XXH64()
        let total = layout.stride * info.keyCount
        var done = 0
        while done < total {
            let n = min(max(1, pieceBytes), total - done)
            hash.update(UnsafeRawBufferPointer(start: keys + done, count: n))
            done += n
            await pause(n)
        }
        let expected = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: SegmentFormat.keysChecksumOffset, as: UInt64.self))
        guard hash.finalize() == expected else { throw SegmentError(info.path, "key checksum mismatch") }
    }

    private static func check(base: UnsafeRawPointer, size: Int, path: String, checks: Checks) throws(SegmentError) -> (SegmentInfo, SegmentLayout) {
        func u64(_ offset: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
        guard UInt32(littleEndian: base.loadUnaligned(as: UInt32.self)) == SegmentFormat.magic else {
            throw SegmentError(path, "not a segment file (bad magic)")
        }
        let version = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: SegmentFormat.versionOffset, as: UInt16.self))
        guard (1...SegmentFormat.newestVersion).contains(version) else {
            throw SegmentError(path, "unsupported format version \(version) (this build reads 1 to \(SegmentFormat.newestVersion))")
        }
        let headerHash = XXH64.hash(UnsafeRawBufferPointer(start: base, count: SegmentFormat.headerChecksumOffset))
        guard headerHash == u64(SegmentFormat.headerChecksumOffset) else { throw SegmentError(path, "header checksum mismatch") }
        let bits = Int(base.load(fromByteOffset: SegmentFormat.indexBitsOffset, as: UInt8.self))
        guard bits <= SegmentFormat.maxIndexBits else { throw SegmentError(path, "index bits \(bits) exceed \(SegmentFormat.maxIndexBits)") }
        let dropped = Int(base.load(fromByteOffset: SegmentFormat.droppedBytesOffset, as: UInt8.self))
        guard dropped * 8 <= bits, version >= 2 || dropped == 0 else {
            throw SegmentError(path, "\(dropped) dropped key bytes with \(bits) index bits (at most \(version == 1 ? 0 : bits / 8))")
        }
        let layout = SegmentLayout(version: version, bits: bits, dropped: dropped)
        let count = u64(SegmentFormat.keyCountOffset)
        guard count <= UInt64(Int.max / 32), version == 1 || count <= UInt64(UInt32.max) else {
            throw SegmentError(path, "implausible key count \(count)")
        }
        let n = Int(count)
        let expected = layout.fileSize(keys: n)
        guard size == expected else {
            throw SegmentError(path, size < expected
                ? "truncated: \(size) bytes, \(expected) expected for \(n) keys"
                : "\(size - expected) unexpected bytes after the keys")
        }
        let idLength = Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: SegmentFormat.advertiserLengthOffset, as: UInt16.self)))
        guard idLength <= SegmentFormat.maxAdvertiserIDLength else { throw SegmentError(path, "advertiser id too long") }
        let advertiser = String(decoding: UnsafeRawBufferPointer(start: base + SegmentFormat.advertiserOffset, count: idLength), as: UTF8.self)
        let typeByte = base.load(fromByteOffset: SegmentFormat.hashKindOffset, as: UInt8.self)
        guard let hashKind = HashKind(rawValue: typeByte) else { throw SegmentError(path, "unknown hash type \(typeByte)") }
        guard version >= SegmentFormat.hashKinddVersion || hashKind == .md5 else {
            throw SegmentError(path, "a \(hashKind) segment in format version \(version), which holds only MD5")
        }
        let roleByte = base.load(fromByteOffset: SegmentFormat.roleOffset, as: UInt8.self)
        guard let role = SegmentRole(rawValue: roleByte) else { throw SegmentError(path, "unknown segment role \(roleByte)") }
        guard version == SegmentFormat.roleVersion || role == .members else {
            throw SegmentError(path, "a delta's \(role) segment in format version \(version), which holds only members")
        }

        let indexStart = SegmentFormat.headerSize
        let lastEntry = base + indexStart + (1 << bits) * layout.indexEntryBytes
        let end = version == 1 ? UInt64(littleEndian: lastEntry.loadUnaligned(as: UInt64.self))
                               : UInt64(UInt32(littleEndian: lastEntry.loadUnaligned(as: UInt32.self)))
        guard end == count else { throw SegmentError(path, "index does not end at the key count") }
        if checks != .header {
            let indexHash = XXH64.hash(UnsafeRawBufferPointer(start: base + indexStart, count: layout.indexBytes))
            guard indexHash == u64(SegmentFormat.indexChecksumOffset) else { throw SegmentError(path, "index checksum mismatch") }
        }
        if checks == .everything {
            let keysHash = XXH64.hash(UnsafeRawBufferPointer(start: base + layout.keysOffset, count: layout.stride * n))
            guard keysHash == u64(SegmentFormat.keysChecksumOffset) else { throw SegmentError(path, "key checksum mismatch") }
        }
        let info = SegmentInfo(
            path: path, advertiserID: advertiser, version: u64(SegmentFormat.listVersionOffset), keyCount: n, indexBits: bits,
            firstKey: nil, lastKey: nil, hashKind: hashKind, role: role)
        return (info, layout)
    }

    // MARK: Lookups
    //
    // A stored key is `stride` bytes: the key less its `dropped` leading
    // bytes, which its bucket implies. It is compared as two big-endian
    // words read at its first byte and at its last eight bytes; the words
    // overlap when stride < 16, and since the overlap holds the same bytes
    // on both sides, comparing the pairs in order compares the keys. A
    // query is turned into the same two words once (`probe`).

    @inline(__always)
    private func entry(_ i: Int) -> Int {
        wideIndex ? Int(truncatingIfNeeded: UInt64(littleEndian: index.loadUnaligned(fromByteOffset: i << 3, as: UInt64.self)))
                  : Int(truncatingIfNeeded: UInt32(littleEndian: index.loadUnaligned(fromByteOffset: i << 2, as: UInt32.self)))
    }

    @inline(__always)
    private func bucket(_ hi: UInt64) -> Int {
        bits == 0 ? 0 : Int(truncatingIfNeeded: hi >> shift)
    }

    @inline(__always)
    private func bucketBounds(_ hi: UInt64) -> (Int, Int) {
        let b = bucket(hi)
        return (entry(b), entry(b + 1))
    }

    /// The query's two words, as stored keys are read (`stored`).
    @inline(__always)
    private func probe(_ hi: UInt64, _ lo: UInt64) -> (UInt64, UInt64) {
        droppedBits == 0 ? (hi, lo) : (hi << droppedBits | lo >> (64 - droppedBits), lo)
    }

    @inline(__always)
    private func stored(_ i: Int) -> (UInt64, UInt64) {
        let p = keys + i &* stride
        return (UInt64(bigEndian: p.loadUnaligned(as: UInt64.self)),
                UInt64(bigEndian: p.loadUnaligned(fromByteOffset: stride &- 8, as: UInt64.self)))
    }

    @inline(__always)
    private static func less(_ a: (UInt64, UInt64), _ b: (UInt64, UInt64)) -> Bool {
        a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
    }

    /// Whether the key (`hi`, `lo`) is among keys[low ..< high], its bucket.
    ///
    /// MD5s are uniform, so the bits after the bucket's say about where in
    /// the bucket the key would be: the search starts there and walks, and
    /// after a few steps (keys that are not uniform) falls back to bisection.
    @inline(__always)
    private func search(_ hi: UInt64, _ lo: UInt64, _ low: Int, _ high: Int) -> Bool {
        guard high > low else { return false }
        let i = guess(hi, low, high)
        return search(probe(hi, lo), from: i, stored(i), low, high)
    }

    /// Where in keys[low ..< high] (not empty) the key whose first word is
    /// `hi` would be if the bucket's keys were evenly spread.
    @inline(__always)
    private func guess(_ hi: UInt64, _ low: Int, _ high: Int) -> Int {
        let fraction = bits == 0 ? hi : hi << UInt64(bits)
        return low &+ Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: high &- low).multipliedFullWidth(by: fraction).high)
    }

    /// The search for `q` from position `start`, whose stored key `first` is.
    @inline(__always)
    private func search(_ q: (UInt64, UInt64), from start: Int, _ first: (UInt64, UInt64), _ low: Int, _ high: Int) -> Bool {
        var i = start
        var k = first
        if k == q { return true }
        if Self.less(k, q) {
            var steps = 0
            while true {
                i &+= 1
                if i >= high { return false }
                k = stored(i)
                if k == q { return true }
                if Self.less(q, k) { return false }
                steps &+= 1
                if steps == 4 { return bisect(q, i &+ 1, high) }
            }
        } else {
            var steps = 0
            while true {
                i &-= 1
                if i < low { return false }
                k = stored(i)
                if k == q { return true }
                if Self.less(k, q) { return false }
                steps &+= 1
                if steps == 4 { return bisect(q, low, i) }
            }
        }
    }

    private func bisect(_ q: (UInt64, UInt64), _ low: Int, _ high: Int) -> Bool {
        var l = low
        var r = high
        while l < r {
            let m = (l &+ r) >> 1
            let k = stored(m)
            if k == q { return true }
            if Self.less(k, q) { l = m &+ 1 } else { r = m }
        }
        return false
    }

    /// The keys as stored, `count` × 16 bytes, big-endian, ascending, when
    /// they are stored whole (format 1, and format 2 below 256 keys); nil
    /// when the layout drops leading bytes. Valid while the segment is
    /// alive, for sequential readers such as merges of spills.
    public var wholeKeys: UnsafeRawPointer? { stride == 16 ? keys : nil }

    /// The key at `i` (0 ..< count), in order.
    public func key(at i: Int) -> Key16 {
        precondition(i >= 0 && i < info.keyCount)
        return Self.key(at: i, keys: keys, index: index, layout: layout)
    }

    /// The key at `i`, whole again: its dropped leading bytes are its
    /// bucket's, the bucket found by bisecting the index.
    private static func key(at i: Int, keys: UnsafeRawPointer, index: UnsafeRawPointer, layout: SegmentLayout) -> Key16 {
        let p = keys + i * layout.stride
        let a = UInt64(bigEndian: p.loadUnaligned(as: UInt64.self))
        let lo = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: layout.stride - 8, as: UInt64.self))
        guard layout.dropped > 0 else { return Key16(hi: a, lo: lo) }
        func entry(_ b: Int) -> Int {
            layout.indexEntryBytes == 8 ? Int(UInt64(littleEndian: index.loadUnaligned(fromByteOffset: b << 3, as: UInt64.self)))
                                        : Int(UInt32(littleEndian: index.loadUnaligned(fromByteOffset: b << 2, as: UInt32.self)))
        }
        // The bucket holding position i: the last whose first key is at or before it.
        var l = 0
        var r = 1 << layout.bits
        while r - l > 1 {
            let m = (l + r) >> 1
            if entry(m) <= i { l = m } else { r = m }
        }
        let droppedBits = UInt64(layout.dropped * 8)
        let prefix = UInt64(l) << UInt64(64 - layout.bits)
        let mask = ~UInt64(0) << (64 - droppedBits)
        return Key16(hi: prefix & mask | a >> droppedBits, lo: lo)
    }

    /// The index of the first key not less than `key` (count if none):
    /// where a key range starts, for paging through a list.
    public func lowerBound(_ key: Key16) -> Int {
        var (l, r) = bucketBounds(key.hi)
        let q = probe(key.hi, key.lo)
        while l < r {
            let m = (l + r) >> 1
            if Self.less(stored(m), q) { l = m + 1 } else { r = m }
        }
        return l
    }

    public func contains(_ key: Key16) -> Bool {
        let (l, r) = bucketBounds(key.hi)
        return search(key.hi, key.lo, l, r)
    }

    /// One key's lookup in stages (`prefetchEntry`, `probe`, `finish`), so
    /// that lookups of one key in many segments (one user asked of many
    /// advertisers' lists) have their cache misses in flight together, as
    /// a batch's have in `lookup`.
    public struct Probe: Sendable {
        let low: Int
        let high: Int
        let at: Int
    }

    /// Stage 1: starts fetching the key's index entry.
    @inline(__always)
    public func prefetchEntry(_ key: Key16) { prefetchEntry(key.hi) }

    /// Stage 2: reads the key's bucket bounds and starts fetching the line
    /// where the key would be.
    @inline(__always)
    public func probe(_ key: Key16) -> Probe { probe(key.hi) }

    /// Stage 3: whether the segment holds `key`, from its `probe`.
    @inline(__always)
    public func finish(_ key: Key16, _ probe: Probe) -> Bool { finish(key.hi, key.lo, probe) }

    // The stages on the key's two words, shared by the staged lookups of
    // one key and by the batch pipeline (`lookup`).

    @inline(__always)
    private func prefetchEntry(_ hi: UInt64) {
        roster_prefetch(index + (bucket(hi) << (wideIndex ? 3 : 2)))
    }

    @inline(__always)
    private func probe(_ hi: UInt64) -> Probe {
        let (low, high) = bucketBounds(hi)
        let at = high > low ? guess(hi, low, high) : low
        prefetchKeys(around: at, low, high)
        return Probe(low: low, high: high, at: at)
    }

    @inline(__always)
    private func finish(_ hi: UInt64, _ lo: UInt64, _ probe: Probe) -> Bool {
        guard probe.high > probe.low else { return false }
        return search(self.probe(hi, lo), from: probe.at, stored(probe.at), probe.low, probe.high)
    }

    /// Starts fetching the line where the search for a key in bucket
    /// [low, high) starts (`at`), and those of the keys a step either side,
    /// where it goes next when the guess is off by one: a 14-byte key's
    /// neighbour lies in another line about one time in five. (A prefetch
    /// of a line already asked for costs next to nothing; one of an address
    /// outside the keys cannot fault.)
    @inline(__always)
    private func prefetchKeys(around at: Int, _ low: Int, _ high: Int) {
        roster_prefetch(keys + at &* stride)
        roster_prefetch(keys + Swift.max(low, at &- 1) &* stride)
        roster_prefetch(keys + (Swift.min(high, at &+ 2) &* stride &- 1))
    }

    /// Looks up `count` keys stored back to back at `keys` (16 bytes each)
    /// and sets bit i of `bitmap` (LSB first) for each key found.
    ///
    /// Each key takes two cache misses, one after the other: its index
    /// entry, then the line where the key would be. The batch runs them as a
    /// pipeline, so that many keys' misses are in flight together rather
    /// than one after another: at step t, key t's index entry is prefetched;
    /// key t − d's bucket bounds are read (its entry has had d steps to
    /// arrive) and the line where it would be is prefetched; key t − 2d is
    /// searched (most searches end on that line). Unlike chunks that each
    /// fill and drain, the pipeline stays full from one key to the next.
    public func lookup(_ keysToFind: UnsafeRawPointer, count: Int, into bitmap: UnsafeMutablePointer<UInt8>) {
        let d = Self.lookupDistance
        assert(Self.pendingSlots > d && Self.pendingSlots & (Self.pendingSlots - 1) == 0)
        @inline(__always) func hi(_ i: Int) -> UInt64 {
            UInt64(bigEndian: keysToFind.loadUnaligned(fromByteOffset: i << 4, as: UInt64.self))
        }
        // Keys between their second stage and their search: d of them at a time.
        withUnsafeTemporaryAllocation(of: Probe.self, capacity: Self.pendingSlots) { pending in
            let mask = Self.pendingSlots - 1
            var t = 0
            let end = count &+ 2 &* d
            while t < end {
                if t < count {
                    prefetchEntry(hi(t))
                }
                let j = t &- d
                if j >= 0 && j < count {
                    pending[j & mask] = probe(hi(j))
                }
                let k = t &- 2 &* d
                if k >= 0 {
                    let lo = UInt64(bigEndian: keysToFind.loadUnaligned(fromByteOffset: (k << 4) | 8, as: UInt64.self))
                    if finish(hi(k), lo, pending[k & mask]) {
                        bitmap[k >> 3] |= UInt8(1) << UInt8(k & 7)
                    }
                }
                t &+= 1
            }
        }
    }

    /// Steps between a key's stages in a batch lookup: enough misses in
    /// flight to cover memory latency, few enough that the lines fetched
    /// first are still in cache when their key's turn comes. (At 10^7 keys,
    /// `match-bench lookup`: 6 to 12 measured alike and best, 38-46 ns a
    /// key against 51 for the chunks of 16 it replaced; 4, 16 and 24 slower.)
    static let lookupDistance = 8
    /// A power of two above `lookupDistance`: a key's slot is free again
    /// before a later key reuses it.
    private static let pendingSlots = 16
}
