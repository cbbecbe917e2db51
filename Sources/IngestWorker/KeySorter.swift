import SegmentStore

/// Sorts keys and removes duplicates.
///
/// MD5 keys are uniform, so one counting pass on their leading varying bits
/// spreads them into buckets of about eight keys each; a scatter pass puts
/// every key into its bucket, and an insertion sort finishes each tiny bucket
/// (dropping duplicates as it compacts). Two passes over the data, against
/// the log₂ n passes of a comparison sort. Skewed input still sorts
/// correctly, only more slowly.
public enum KeySorter {
    /// Sorts `keys` and moves the distinct ones to the front; returns how many there are.
    public static func sortAndDeduplicate(_ keys: inout [Key16]) -> Int {
        guard keys.count > 1 else { return keys.count }
        var minHi = UInt64.max, maxHi = UInt64.min
        keys.withUnsafeBufferPointer { k in
            for key in k {
                minHi = min(minHi, key.hi)
                maxHi = max(maxHi, key.hi)
            }
        }
        let spread = maxHi - minHi
        return sortAndDeduplicate(&keys, low: minHi, significantBits: spread == 0 ? 0 : 64 - spread.leadingZeroBitCount)
    }

    /// The same for keys whose first eight bytes all lie in
    /// `[low, low + 2^significantBits)`: a merge range, whose keys share
    /// their top bits, buckets on the bits below them.
    public static func sortAndDeduplicate(_ keys: inout [Key16], low: UInt64, significantBits: Int) -> Int {
        let scratch = ScratchBuffer()
        let sorted = keys.withUnsafeBufferPointer { sortAndDeduplicate($0, low: low, significantBits: significantBits, in: scratch) }
        keys.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: sorted) }
        return sorted.count
    }

    /// Sorts `keys` (first eight bytes in `[low, low + 2^significantBits)`)
    /// into `scratch`; returns the distinct keys, in order, which stay valid
    /// until `scratch` is used again.
    public static func sortAndDeduplicate(_ keys: UnsafeBufferPointer<Key16>, low: UInt64, significantBits: Int,
                                          in scratch: ScratchBuffer) -> UnsafeBufferPointer<Key16> {
        let n = keys.count
        var bits = 1
        while bits < 24 && (n >> bits) > 8 { bits += 1 }
        bits = max(0, min(bits, significantBits))
        let shift = UInt64(max(0, significantBits - bits))
        let buckets = 1 << bits
        // The output, then the bucket starts and the scatter's cursors.
        let memory = scratch.bytes(n * 16 + 2 * (buckets + 1) * 8)
        let k = UnsafeMutableBufferPointer(start: memory.bindMemory(to: Key16.self, capacity: n), count: n)
        guard n > 1 else {
            if n == 1 { k[0] = keys[0] }
            return UnsafeBufferPointer(k)
        }
        let starts = UnsafeMutableBufferPointer(start: (memory + n * 16).bindMemory(to: Int.self, capacity: buckets + 1),
                                                count: buckets + 1)
        let next = UnsafeMutableBufferPointer(start: starts.baseAddress! + buckets + 1, count: buckets + 1)
        starts.update(repeating: 0)
        for key in keys { starts[Int((key.hi &- low) >> shift) + 1] += 1 }
        for b in 0..<buckets { starts[b + 1] += starts[b] }
        _ = next.update(fromContentsOf: starts)
        for key in keys {
            let b = Int((key.hi &- low) >> shift)
            k[next[b]] = key
            next[b] += 1
        }
        var out = 0
        for b in 0..<buckets {
            let start = starts[b], end = starts[b + 1]
            guard start < end else { continue }
            if end - start > 32 {
                // Skewed input (say, hashes that are small numbers) can put
                // many keys in one bucket: sort those in n log n, not n².
                var bucket = UnsafeMutableBufferPointer(rebasing: k[start..<end])
                bucket.sort()
            } else {
                for i in (start + 1)..<end {
                    let key = k[i]
                    var j = i
                    while j > start && key < k[j - 1] {
                        k[j] = k[j - 1]
                        j -= 1
                    }
                    k[j] = key
                }
            }
            for i in start..<end where out == 0 || k[out - 1] != k[i] {
                k[out] = k[i]
                out += 1
            }
        }
        return UnsafeBufferPointer(rebasing: k[..<out])
    }
}
