import SegmentStore

/// Merges a key range of several sorted runs into one segment, dropping
/// duplicates.
///
/// Memory is bounded whatever the sizes: the runs are memory-mapped and
/// read in order (the page cache, not the process, holds them), the merge
/// keeps one cursor per run in a heap, and the writer streams through a
/// small buffer.
public enum RunMerger {
    /// The key range's bounds in each run, read with `pread` (see `SegmentFile`).
    public static func ranges(runPaths: [String], low: UInt64, high: UInt64) throws -> [Range<Int>] {
        try runPaths.map { path in
            let file = try SegmentFile(path: path)
            let start = try file.lowerBound(Key16(hi: low, lo: 0))
            let end = high == 0 ? file.keyCount : try file.lowerBound(Key16(hi: high, lo: 0))
            return start..<max(start, end)
        }
    }

    /// Merges by sorting: the range's keys are read from every run (with
    /// `pread`, into memory this task owns: about twice the range's size,
    /// whatever the number of runs) and bucket-sorted on the bits below the
    /// range's common prefix (`KeySorter`). Two passes, against the log₂ runs
    /// compares per key of a heap merge: the path for ranges that fit in memory.
    public static func gatherAndSort(runPaths: [String], ranges: [Range<Int>], low: UInt64, high: UInt64,
                                     into writer: SegmentWriter) throws -> Int {
        let total = ranges.reduce(0) { $0 + $1.count }
        guard total > 0 else { return 0 }
        var gathered: [Key16] = []
        gathered.reserveCapacity(total)
        for (path, range) in zip(runPaths, ranges) {
            let file = try SegmentFile(path: path)
            try file.readKeys(range, into: &gathered)
        }
        let span = high &- low // 0 means the whole key space
        let count = KeySorter.sortAndDeduplicate(&gathered, low: low,
                                                 significantBits: span == 0 ? 64 : 64 - (span - 1).leadingZeroBitCount)
        try gathered.withUnsafeBufferPointer { try writer.append(contentsOf: UnsafeBufferPointer(rebasing: $0[..<count])) }
        return count
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
}
