import SegmentStore

/// Sorts a block's keys and removes duplicates in place.
public enum KeySorter {
    /// Sorts `keys` and moves the distinct ones to the front; returns how many there are.
    public static func sortAndDeduplicate(_ keys: inout [Key16]) -> Int {
        guard !keys.isEmpty else { return 0 }
        keys.sort()
        var out = 1
        for i in 1..<keys.count where keys[i] != keys[out - 1] {
            keys[out] = keys[i]
            out += 1
        }
        return out
    }
}
