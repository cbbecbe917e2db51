#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SegmentStore

/// Merges one key range of a version's runs into one segment, dropping
/// duplicates.
///
/// Runs are grouped by key range, not sorted (see `RunFormat`), so merging
/// is sorting, in memory bounded whatever the sizes:
/// - When the range's keys fit in the memory limit (32 bytes a key: the keys
///   and a sort buffer), which with 32 MiB ranges they always do, the range
///   is read from every run with `pread` and bucket-sorted on the bits below
///   the range's common prefix (`KeySorter`): two passes over the keys.
/// - Otherwise (a range crowded by skewed keys) it is an external sort:
///   chunks that fit are sorted and written as scratch segments, which a
///   heap then merges.
public enum RunMerger {
    /// A run could not be read (missing, truncated, damaged): which one, by
    /// its place in `runPaths`, so the worker can name it to the
    /// coordinator, which has its block parsed again. Failures of the merge
    /// itself (its scratch files, its output) are thrown as they are.
    public struct RunUnreadable: Error, CustomStringConvertible {
        public var run: Int
        public var reason: SegmentError
        public var description: String { "run \(run) unreadable: \(reason)" }
    }

    /// Reading run `index` fails as `RunUnreadable`.
    private static func reading<T>(run index: Int, _ body: () throws(SegmentError) -> T) throws(RunUnreadable) -> T {
        do { return try body() } catch { throw RunUnreadable(run: index, reason: error) }
    }

    /// How many keys the runs' partitions covering `[low, high)` hold: an
    /// upper bound on the merged count (duplicates are still in).
    public static func keysCovering(runPaths: [String], low: UInt64, high: UInt64) throws -> Int {
        var total = 0
        for (index, path) in runPaths.enumerated() {
            total += try reading(run: index) { () throws(SegmentError) in try RunFile(path: path).keysCovering(low: low, high: high) }
        }
        return total
    }

    /// Writes the distinct keys of `[low, high)` (`high` 0: the end of the
    /// key space) from every run to `writer`; returns how many.
    ///
    /// - Parameters:
    ///   - coveredKeys: `keysCovering(runPaths:low:high:)`.
    ///   - memoryLimit: bytes of keys to hold at once (twice over, to sort).
    ///   - scratch: a path prefix for the external sort's scratch files,
    ///     which are removed before returning.
    ///   - keys, buffer: memory to reuse (see `ScratchBuffer`): the keys
    ///     read, and the sort's output.
    public static func merge(runPaths: [String], low: UInt64, high: UInt64, coveredKeys: Int, memoryLimit: Int,
                             scratch: String, into writer: SegmentWriter, keys: inout [Key16],
                             buffer: ScratchBuffer = ScratchBuffer(), isCancelled: () -> Bool = { false }) throws -> Int {
        let capacity = max(1024, memoryLimit / 32)
        let span = high &- low // 0 means the whole key space
        let significantBits = span == 0 ? 64 : 64 - (span - 1).leadingZeroBitCount
        keys.removeAll(keepingCapacity: true)
        keys.reserveCapacity(min(coveredKeys, capacity))

        var spills: [String] = []
        defer { for path in spills { unlink(path) } }
        func sorted() -> UnsafeBufferPointer<Key16> {
            keys.withUnsafeBufferPointer { KeySorter.sortAndDeduplicate($0, low: low, significantBits: significantBits, in: buffer) }
        }
        func spill() throws {
            let path = "\(scratch).spill-\(spills.count)"
            spills.append(path)
            // Format 1: whole 16-byte keys, which the merge reads straight
            // from the map (`Segment.wholeKeys`).
            _ = try SegmentWriter.create(sorted(), at: path, advertiserID: "", version: 0, durable: false, formatVersion: 1)
            keys.removeAll(keepingCapacity: true)
        }
        /// A spill's own failure, told apart from the run's as it crosses `forEachKey`.
        struct SpillFailed: Error { var error: any Error }
        for (index, path) in runPaths.enumerated() {
            let run = try reading(run: index) { () throws(SegmentError) in try RunFile(path: path) }
            do {
                try run.forEachKey(low: low, high: high) { chunk in
                    var rest = chunk[...]
                    while !rest.isEmpty {
                        // Full, and more to come: sort what is held aside.
                        if keys.count == capacity {
                            do { try spill() } catch { throw SpillFailed(error: error) }
                        }
                        let take = min(rest.count, capacity - keys.count)
                        keys.append(contentsOf: rest.prefix(take))
                        rest = rest.dropFirst(take)
                    }
                }
            } catch let failure as SpillFailed {
                throw failure.error
            } catch let error as SegmentError {
                throw RunUnreadable(run: index, reason: error)
            }
            if isCancelled() { throw CancellationError() }
        }
        guard !spills.isEmpty else {
            // The range fit in memory, as it does unless its keys are skewed.
            let distinct = sorted()
            try writer.append(contentsOf: distinct)
            return distinct.count
        }
        if !keys.isEmpty { try spill() }
        let sortedSpills = try spills.map { try Segment(path: $0, verify: false) }
        return try mergeSorted(sortedSpills, low: low, high: high, into: writer, isCancelled: isCancelled)
    }

    /// Merges the key range of sorted segments of whole keys (format 1, as
    /// spills are written) through a heap, in constant memory (the segments
    /// are mapped); returns the number of distinct keys written.
    public static func mergeSorted(_ runs: [Segment], low: UInt64, high: UInt64, into writer: SegmentWriter,
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
            guard let base = run.wholeKeys else {
                throw SegmentError(run.info.path, "a merge reads whole keys; this segment drops \(run.layout.dropped) bytes of each")
            }
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
