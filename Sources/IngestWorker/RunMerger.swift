import SegmentStore

/// Merges a key range of several sorted runs into one segment, dropping
/// duplicates.
///
/// Memory is bounded whatever the sizes: the runs are memory-mapped and
/// read in order (the page cache, not the process, holds them), the merge
/// keeps one cursor per run in a heap, and the writer streams through a
/// small buffer.
public enum RunMerger {
    /// Merges by gathering the range's keys from every run and sorting them
    /// (a radix sort is two passes; a heap merge costs log₂ runs compares per
    /// key): the fast path while the range fits in `memoryLimit` bytes.
    public static func gatherAndSort(runs: [Segment], low: UInt64, high: UInt64, into writer: SegmentWriter) throws -> Int {
        let total = count(runs: runs, low: low, high: high)
        var corrupt: String?
        var keys = [Key16](unsafeUninitializedCapacity: total) { buffer, initialized in
            var at = 0
            for run in runs {
                let start = run.lowerBound(Key16(hi: low, lo: 0))
                let end = high == 0 ? run.count : run.lowerBound(Key16(hi: high, lo: 0))
                let base = run.keyBytes
                var previous: Key16?
                for i in start..<max(start, end) {
                    let key = Key16(base + i * 16)
                    // Runs are opened without hashing all of them (a merge reads
                    // only its range); a damaged key almost surely breaks the order.
                    if let previous, !(previous < key) { corrupt = "\(run.info.path): keys out of order at \(i)" }
                    previous = key
                    (buffer.baseAddress! + at).initialize(to: key)
                    at += 1
                }
            }
            initialized = at
        }
        if let corrupt { throw SegmentError(corrupt, "run is damaged; its block must be parsed again") }
        let distinct = KeySorter.sortAndDeduplicate(&keys)
        try keys.withUnsafeBufferPointer { try writer.append(contentsOf: UnsafeBufferPointer(rebasing: $0[..<distinct])) }
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
