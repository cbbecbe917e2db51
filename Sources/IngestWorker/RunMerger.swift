import SegmentStore

/// Merges a key range of several sorted runs into one segment, dropping
/// duplicates.
///
/// Memory is bounded whatever the sizes: the runs are memory-mapped and
/// read in order (the page cache, not the process, holds them), the merge
/// keeps one cursor per run in a heap, and the writer streams through a
/// small buffer.
public enum RunMerger {
    /// Merges by bucketing: the range's keys go straight from the runs into
    /// buckets on their next bits (a counting pass, then a scatter pass), each
    /// bucket of a few keys is insertion-sorted and de-duplicated, and the
    /// result is written in one go. Two passes over the input against the
    /// log₂ runs compares per key of a heap merge: the fast path while the
    /// range fits in memory.
    public static func gatherAndSort(runs: [Segment], low: UInt64, high: UInt64, into writer: SegmentWriter) throws -> Int {
        struct Slice {
            var base: UnsafeRawPointer
            var start: Int
            var end: Int
            var path: String
        }
        let slices = runs.map { run -> Slice in
            let start = run.lowerBound(Key16(hi: low, lo: 0))
            let end = high == 0 ? run.count : run.lowerBound(Key16(hi: high, lo: 0))
            return Slice(base: run.keyBytes, start: start, end: max(start, end), path: run.info.path)
        }
        let total = slices.reduce(0) { $0 + $1.end - $1.start }
        guard total > 0 else { return 0 }
        // Buckets of about eight keys on the bits below the range's common prefix.
        var bits = 1
        while bits < 24 && (total >> bits) > 8 { bits += 1 }
        let span = high &- low // 0 means the whole key space
        let significant = span == 0 ? 64 : 64 - (span - 1).leadingZeroBitCount
        bits = min(bits, max(1, significant))
        let shift = UInt64(max(0, significant - bits))
        let buckets = 1 << bits
        var corrupt: String?
        let distinct = try withExtendedLifetime(runs) { () throws -> Int in
            var starts = [Int](repeating: 0, count: buckets + 1)
            starts.withUnsafeMutableBufferPointer { starts in
                for slice in slices {
                    for i in slice.start..<slice.end {
                        let hi = UInt64(bigEndian: slice.base.loadUnaligned(fromByteOffset: i << 4, as: UInt64.self))
                        starts[Int((hi &- low) >> shift) + 1] += 1
                    }
                }
                for b in 0..<buckets { starts[b + 1] += starts[b] }
            }
            var keys = [Key16](unsafeUninitializedCapacity: total) { out, initialized in
                var next = starts
                next.withUnsafeMutableBufferPointer { next in
                    for slice in slices {
                        var previous: Key16?
                        for i in slice.start..<slice.end {
                            let key = Key16(slice.base + i << 4)
                            // Runs are opened without hashing them whole (a merge reads only
                            // its range); a damaged key almost surely breaks the order.
                            if let previous, !(previous < key) { corrupt = "\(slice.path): keys out of order at \(i)" }
                            previous = key
                            let b = Int((key.hi &- low) >> shift)
                            (out.baseAddress! + next[b]).initialize(to: key)
                            next[b] += 1
                        }
                    }
                }
                initialized = total
            }
            if let corrupt { throw SegmentError(corrupt, "run is damaged; its block must be parsed again") }
            // Sort each bucket, dropping duplicates, compacting to the front.
            let count = keys.withUnsafeMutableBufferPointer { k -> Int in
                var out = 0
                starts.withUnsafeBufferPointer { starts in
                    for b in 0..<buckets {
                        let start = starts[b], end = starts[b + 1]
                        guard start < end else { continue }
                        for i in (start + 1)..<end {
                            let key = k[i]
                            var j = i
                            while j > start && key < k[j - 1] {
                                k[j] = k[j - 1]
                                j -= 1
                            }
                            k[j] = key
                        }
                        for i in start..<end where out == 0 || k[out - 1] != k[i] {
                            k[out] = k[i]
                            out += 1
                        }
                    }
                }
                return out
            }
            try keys.withUnsafeBufferPointer { try writer.append(contentsOf: UnsafeBufferPointer(rebasing: $0[..<count])) }
            return count
        }
        return distinct
    }

    /// Returns the number of distinct keys written.
    public static func merge(runs: [Segment], low: UInt64, high: UInt64, into writer: SegmentWriter,
                             isCancelled: () -> Bool = { false }) throws -> Int {
        /// A run's next key, and where the rest of its range is.
        struct Cursor {
            var key: Key16
            var next: UnsafeRawPointer
            var end: UnsafeRawPointer
        }
        var heap: [Cursor] = []
        for run in runs {
            let start = run.lowerBound(Key16(hi: low, lo: 0))
            let end = high == 0 ? run.count : run.lowerBound(Key16(hi: high, lo: 0))
            guard start < end else { continue }
            let base = run.keyBytes
            heap.append(Cursor(key: Key16(base + start * 16), next: base + (start + 1) * 16, end: base + end * 16))
        }
        var written = 0
        var last: Key16?
        try withExtendedLifetime(runs) {
            try heap.withUnsafeMutableBufferPointer { h in
                var size = h.count
                // A binary min-heap on the cursors' current keys.
                func siftDown(_ i: Int) {
                    var i = i
                    let item = h[i]
                    while true {
                        let l = 2 * i + 1
                        guard l < size else { break }
                        var m = l
                        if l + 1 < size && h[l + 1].key < h[l].key { m = l + 1 }
                        guard h[m].key < item.key else { break }
                        h[i] = h[m]
                        i = m
                    }
                    h[i] = item
                }
                for i in stride(from: size / 2 - 1, through: 0, by: -1) { siftDown(i) }
                while size > 0 {
                    let key = h[0].key
                    if key != last {
                        try writer.append(key)
                        last = key
                        written += 1
                        if written & 0xFFFFF == 0, isCancelled() { throw CancellationError() }
                    }
                    if h[0].next < h[0].end {
                        h[0].key = Key16(h[0].next)
                        h[0].next += 16
                    } else {
                        size -= 1
                        h[0] = h[size]
                    }
                    if size > 1 { siftDown(0) }
                }
            }
        }
        return written
    }

    /// How many keys the runs hold in [low, high): an upper bound for the segment's index.
    public static func count(runs: [Segment], low: UInt64, high: UInt64) -> Int {
        runs.reduce(0) { total, run in
            let start = run.lowerBound(Key16(hi: low, lo: 0))
            let end = high == 0 ? run.count : run.lowerBound(Key16(hi: high, lo: 0))
            return total + max(0, end - start)
        }
    }
}
