import Foundation

/// Segments of one role in one list version, looked up together: a key is
/// in the set when any segment holds it.
///
/// Segments ordered by first key with disjoint ranges (a version's merges
/// each write one key range) are searched in the one segment whose range
/// holds the key; otherwise every segment is asked.
public struct SegmentSet: Sendable {
    /// The non-empty segments, by first key.
    public let segments: [Segment]
    private let disjoint: Bool
    /// Each segment's first key, in order: what a key's segment is found by.
    private let firstKeys: [Key16]

    public init(_ segments: [Segment]) {
        let nonEmpty = segments.filter { $0.count > 0 }.sorted { $0.info.firstKey! < $1.info.firstKey! }
        self.segments = nonEmpty
        var disjoint = true
        for (a, b) in zip(nonEmpty, nonEmpty.dropFirst()) where !(a.info.lastKey! < b.info.firstKey!) { disjoint = false }
        self.disjoint = disjoint
        self.firstKeys = nonEmpty.map { $0.info.firstKey! }
    }

    /// Keys in all segments (a key held by two overlapping ones counts twice).
    public var keyCount: Int { segments.reduce(0) { $0 + $1.count } }

    /// The segment whose range may hold `key` (disjoint segments): the last
    /// whose first key is at or before it; -1 if none.
    @inline(__always)
    private func segmentIndex(_ key: Key16) -> Int {
        var l = 0
        var r = firstKeys.count
        while l < r {
            let m = (l + r) / 2
            if firstKeys[m] <= key { l = m + 1 } else { r = m }
        }
        return l - 1
    }

    /// The one segment to ask about `key`: the only one, or the one whose
    /// range holds it; nil when none may hold it or the segments overlap
    /// (`mayHoldInOne` false: ask `contains`).
    @inline(__always)
    public func segment(for key: Key16) -> Segment? {
        if segments.count == 1 { return segments[0] }
        guard disjoint else { return nil }
        let s = segmentIndex(key)
        return s >= 0 ? segments[s] : nil
    }

    /// Whether at most one segment may hold any key (`segment(for:)` answers).
    public var mayHoldInOne: Bool { segments.count <= 1 || disjoint }

    @inline(__always)
    public func contains(_ key: Key16) -> Bool {
        if segments.count == 1 { return segments[0].contains(key) }
        if disjoint {
            let s = segmentIndex(key)
            return s >= 0 && segments[s].contains(key)
        }
        return segments.contains { $0.contains(key) }
    }

    /// Sets bit i of `bitmap` for each of the `count` 16-byte keys at `keys` in the set.
    ///
    /// Each segment answers its keys as one batch (`Segment.lookup`, whose
    /// prefetching overlaps cache misses): a set of several segments, as
    /// every list of more than one block is, first sorts the batch's keys by
    /// segment. Looked up one at a time instead, a batch of 1,000 keys cost
    /// three times as much (the match server spent 81% of its time there).
    public func lookup(_ keys: UnsafeRawPointer, count: Int, into bitmap: UnsafeMutablePointer<UInt8>) {
        if segments.count == 1 {
            segments[0].lookup(keys, count: count, into: bitmap)
            return
        }
        guard disjoint else {
            // Overlapping segments: a key is in the set if any has it.
            for segment in segments { segment.lookup(keys, count: count, into: bitmap) }
            return
        }
        guard count > 0 else { return }
        // A counting sort by segment: where each segment's keys start in
        // `gathered`, and each gathered key's place in the request.
        let n = segments.count
        var owner = [Int32](repeating: -1, count: count)
        var starts = [Int](repeating: 0, count: n + 1)
        for i in 0..<count {
            let s = segmentIndex(Key16(keys + i &* 16))
            owner[i] = Int32(truncatingIfNeeded: s)
            if s >= 0 { starts[s + 1] += 1 }
        }
        for s in 0..<n { starts[s + 1] += starts[s] }
        let gathered = UnsafeMutableRawPointer.allocate(byteCount: max(1, starts[n]) * 16, alignment: 16)
        defer { gathered.deallocate() }
        var places = [Int32](repeating: 0, count: starts[n])
        var fill = starts
        for i in 0..<count where owner[i] >= 0 {
            let s = Int(owner[i])
            (gathered + fill[s] &* 16).copyMemory(from: keys + i &* 16, byteCount: 16)
            places[fill[s]] = Int32(truncatingIfNeeded: i)
            fill[s] += 1
        }
        var found = [UInt8](repeating: 0, count: (starts[n] + 7) / 8 + 1)
        for s in 0..<n where starts[s + 1] > starts[s] {
            let first = starts[s]
            let run = starts[s + 1] - first
            // Each run's bits start at bit 0 of its own stretch of `found`.
            let stretch = (run + 7) / 8
            found.withUnsafeMutableBufferPointer { bits in
                let out = bits.baseAddress!
                for b in 0..<stretch { out[b] = 0 }
                segments[s].lookup(gathered + first &* 16, count: run, into: out)
                for j in 0..<run where out[j >> 3] >> UInt8(j & 7) & 1 == 1 {
                    let i = Int(places[first + j])
                    bitmap[i >> 3] |= UInt8(1) << UInt8(i & 7)
                }
            }
        }
    }
}

/// One list version as its segments make it: a base of members and, for a
/// version made by deltas, one overlay per delta on top (docs/STORAGE.md).
///
/// A key is in the list when the newest overlay that names it adds it; when
/// no overlay names it, when the base holds it. (A delta names a key in its
/// adds or its removes, never both: the last line about a key wins.) The
/// match server answers from this, and a compaction writes it out as a new
/// base, so both read a layered version the same way.
public struct LayeredList: Sendable {
    /// One delta's segments: what it adds and what it removes.
    public struct Overlay: Sendable {
        /// The delta's version.
        public let version: UInt64
        public let adds: SegmentSet
        public let removes: SegmentSet
    }

    public let base: SegmentSet
    /// Oldest first.
    public let overlays: [Overlay]
    /// Every segment, base and overlays, as given (empty ones included).
    public let segments: [Segment]

    /// Groups `segments` by role, and overlays by their version.
    public init(_ segments: [Segment]) {
        self.segments = segments
        base = SegmentSet(segments.filter { $0.info.role == .members })
        let layered = Dictionary(grouping: segments.filter { $0.info.role != .members }, by: \.info.version)
        overlays = layered.keys.sorted().map { version in
            let layer = layered[version]!
            return Overlay(version: version, adds: SegmentSet(layer.filter { $0.info.role == .adds }),
                           removes: SegmentSet(layer.filter { $0.info.role == .removes }))
        }
    }

    /// Keys in the list: exact without overlays; with them, the base's count
    /// plus what overlays add less what they remove (a delta may add a
    /// member already there or remove one that is not).
    public var keyCount: Int {
        max(0, overlays.reduce(base.keyCount) { $0 + $1.adds.keyCount - $1.removes.keyCount })
    }

    @inline(__always)
    public func contains(_ key: Key16) -> Bool {
        if overlays.isEmpty { return base.contains(key) }
        for overlay in overlays.reversed() {
            if overlay.removes.contains(key) { return false }
            if overlay.adds.contains(key) { return true }
        }
        return base.contains(key)
    }

    /// The one segment to ask about `key` (`SegmentSet.segment(for:)`); nil
    /// when a version has overlays: ask `contains`.
    @inline(__always)
    public func segment(for key: Key16) -> Segment? {
        overlays.isEmpty ? base.segment(for: key) : nil
    }

    /// Whether at most one segment may hold any key (`segment(for:)` answers).
    public var mayHoldInOne: Bool { overlays.isEmpty && base.mayHoldInOne }

    /// Sets bit i of `bitmap` for each of the `count` 16-byte keys at `keys`
    /// in the list: the base's bits, then each overlay's, oldest to newest,
    /// as `(bits & ~removes) | adds`.
    public func lookup(_ keys: UnsafeRawPointer, count: Int, into bitmap: UnsafeMutablePointer<UInt8>) {
        base.lookup(keys, count: count, into: bitmap)
        guard !overlays.isEmpty, count > 0 else { return }
        let bytes = (count + 7) / 8
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: bytes) { layer in
            let bits = layer.baseAddress!
            for overlay in overlays {
                if !overlay.removes.segments.isEmpty {
                    bits.initialize(repeating: 0, count: bytes)
                    overlay.removes.lookup(keys, count: count, into: bits)
                    for b in 0..<bytes { bitmap[b] &= ~bits[b] }
                }
                if !overlay.adds.segments.isEmpty {
                    overlay.adds.lookup(keys, count: count, into: bitmap)
                }
            }
        }
    }

    /// Calls `body` with each key of the list greater than `after` (from the
    /// first when nil), ascending, once each, until it returns false: what
    /// an export pages through and a compaction writes out.
    ///
    /// One pass over every segment, in key order: the base's keys stream
    /// out with one comparison each against the smallest key any overlay
    /// names next; only at a key an overlay names are the overlays asked
    /// (the newest one naming it decides). So a compaction costs a read of
    /// the base plus the overlays, not a search of every overlay per key.
    public func forEachKey(after: Key16?, _ body: (Key16) throws -> Bool) rethrows {
        // Disjoint base segments (a version's merges) are read one after
        // the other, as one sequence; overlapping ones side by side.
        var base = self.base.mayHoldInOne ? [Cursor(self.base.segments, after: after)] : self.base.segments.map { Cursor([$0], after: after) }
        // Each overlay segment, with its overlay's age (newest highest) and role.
        var named: [Cursor] = []
        var age: [(layer: Int, adds: Bool)] = []
        for (layer, overlay) in overlays.enumerated() {
            for segment in overlay.adds.segments { named.append(Cursor([segment], after: after)); age.append((layer, true)) }
            for segment in overlay.removes.segments { named.append(Cursor([segment], after: after)); age.append((layer, false)) }
        }
        func smallest(_ cursors: [Cursor]) -> Key16? {
            var low: Key16?
            for cursor in cursors { if let key = cursor.key, low == nil || key < low! { low = key } }
            return low
        }
        var nextNamed = smallest(named)
        while true {
            let nextBase = smallest(base)
            if let key = nextBase, nextNamed == nil || key < nextNamed! {
                // No overlay names it: the base decides.
                for i in base.indices where base[i].key == key { base[i].advance() }
                guard try body(key) else { return }
                continue
            }
            guard let key = nextNamed else { return }
            // The newest overlay naming the key decides: adds or removes.
            var member = false
            var newest = -1
            for i in named.indices where named[i].key == key {
                if age[i].layer > newest { (newest, member) = (age[i].layer, age[i].adds) }
                named[i].advance()
            }
            nextNamed = smallest(named)
            if nextBase == key {
                for i in base.indices where base[i].key == key { base[i].advance() }
            }
            if member { guard try body(key) else { return } }
        }
    }

    /// A position in a sequence of segments ordered by key, not overlapping.
    private struct Cursor {
        private let segments: [Segment]
        private var segment = 0
        private var index = 0
        /// The key at the position; nil past the end.
        private(set) var key: Key16?

        init(_ segments: [Segment], after: Key16?) {
            self.segments = segments
            if let after {
                // The first segment with a key past `after`, and that key.
                while segment < segments.count, let last = segments[segment].info.lastKey, !(after < last) { segment += 1 }
                if segment < segments.count {
                    let s = segments[segment], i = s.lowerBound(after)
                    index = i < s.count && s.key(at: i) == after ? i + 1 : i
                }
            }
            load()
        }

        mutating func advance() {
            index += 1
            load()
        }

        private mutating func load() {
            while segment < segments.count, index >= segments[segment].count {
                segment += 1
                index = 0
            }
            key = segment < segments.count ? segments[segment].key(at: index) : nil
        }
    }
}
