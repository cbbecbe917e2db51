import SegmentStore

/// Merges a key range of several sorted runs into one segment, dropping
/// duplicates.
///
/// Memory is bounded whatever the sizes: the runs are memory-mapped and
/// read in order (the page cache, not the process, holds them), the merge
/// keeps one cursor per run in a heap, and the writer streams through a
/// small buffer.
public enum RunMerger {
    /// Returns the number of distinct keys written.
    public static func merge(runs: [Segment], low: UInt64, high: UInt64, into writer: SegmentWriter,
                             isCancelled: () -> Bool = { false }) throws -> Int {
        struct Cursor {
            var segment: Segment
            var next: Int
            var end: Int
            var key: Key16
        }
        var heap: [Cursor] = []
        for run in runs {
            let start = run.lowerBound(Key16(hi: low, lo: 0))
            let end = high == 0 ? run.count : run.lowerBound(Key16(hi: high, lo: 0))
            if start < end { heap.append(Cursor(segment: run, next: start + 1, end: end, key: run.key(at: start))) }
        }
        // A binary min-heap on the cursors' current keys.
        func siftDown(_ i: Int) {
            var i = i
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && heap[l].key < heap[m].key { m = l }
                if r < heap.count && heap[r].key < heap[m].key { m = r }
                if m == i { return }
                heap.swapAt(i, m)
                i = m
            }
        }
        for i in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
        var last: Key16?
        var written = 0
        while !heap.isEmpty {
            let key = heap[0].key
            if key != last {
                try writer.append(key)
                last = key
                written += 1
                if written & 0xFFFFF == 0, isCancelled() { throw CancellationError() }
            }
            if heap[0].next < heap[0].end {
                heap[0].key = heap[0].segment.key(at: heap[0].next)
                heap[0].next += 1
            } else {
                heap.swapAt(0, heap.count - 1)
                heap.removeLast()
            }
            if !heap.isEmpty { siftDown(0) }
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
