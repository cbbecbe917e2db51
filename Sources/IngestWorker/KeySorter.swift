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
        let n = keys.count
        guard n > 1 else { return n }
        var bits = 1
        while bits < 24 && (n >> bits) > 8 { bits += 1 }
        bits = max(0, min(bits, significantBits))
        let shift = UInt64(max(0, significantBits - bits))
        let buckets = 1 << bits
        var starts = [Int](repeating: 0, count: buckets + 1)
        keys.withUnsafeBufferPointer { k in
            starts.withUnsafeMutableBufferPointer { starts in
                for key in k { starts[Int((key.hi &- low) >> shift) + 1] += 1 }
                for b in 0..<buckets { starts[b + 1] += starts[b] }
            }
        }
        var sorted = [Key16](unsafeUninitializedCapacity: n) { out, initialized in
            var next = starts
            keys.withUnsafeBufferPointer { k in
                next.withUnsafeMutableBufferPointer { next in
                    for key in k {
                        let b = Int((key.hi &- low) >> shift)
                        (out.baseAddress! + next[b]).initialize(to: key)
                        next[b] += 1
                    }
                }
            }
            initialized = n
        }
        let distinct = sorted.withUnsafeMutableBufferPointer { k -> Int in
            var out = 0
            starts.withUnsafeBufferPointer { starts in
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
            }
            return out
        }
        swap(&keys, &sorted)
        return distinct
    }
}
