import Foundation
import SegmentStore

/// The coordinator's knobs. Defaults suit production; tests shrink them.
public struct IngestPolicy: Sendable {
    /// Bytes per parse block (the last block of a file is shorter): the
    /// most; see `blockSize(forFileSize:)`.
    public var blockSize: Int64 = 64 << 20
    /// A file smaller than this many full blocks is cut into this many
    /// smaller ones, down to `minimumBlockSize`, so that every worker gets a
    /// share of it (see `blockSize(forFileSize:)`).
    public var minimumBlocks: Int64 = 8
    public var minimumBlockSize: Int64 = 4 << 20
    /// How long a lease lasts without a heartbeat.
    public var lease: Duration = .seconds(30)
    /// Reported failures of one task before its file version fails.
    public var maxAttempts = 4
    /// Expired leases of one task (its worker died or stalled) before its
    /// file version fails: more than `maxAttempts`, since a killed worker is
    /// not the file's fault, but bounded, since a file that kills every
    /// worker that reads it must not loop for ever.
    public var maxLeaseExpiries = 8
    /// The wait before a failed task is handed out again, doubling with each
    /// failure up to `maxRetryBackoff`, ±20% jitter: a missing file or a
    /// full disk does not burn every attempt within a second.
    public var retryBackoff: Duration = .seconds(1)
    public var maxRetryBackoff: Duration = .seconds(60)
    /// A file of one block is parsed, sorted and written as its segment in
    /// one task (no run, no merge): half the leases and reports for small
    /// files. Off only to test the two-phase path on small inputs.
    public var wholeFileTasks = true
    /// A version whose invalid lines exceed this fraction of its lines is rejected.
    public var invalidThreshold = 0.001
    /// The waiting time that doubles a file's priority (see `Priority`).
    public var aging: Duration = .seconds(120)
    /// Distinct-key bytes per merge task: a version's runs are merged in
    /// key ranges of about this many bytes, in parallel.
    public var mergeTargetBytes: Int64 = 32 << 20
    /// At most this many merge tasks (segments) per version; a power of two.
    public var maxMergeTasks = 4096
    /// A version with fewer than this many merge ranges of
    /// `mergeTargetBytes` gets this many smaller ones, of at least
    /// `minimumMergeBytes` (see `mergeRangeBits(keys:)`).
    public var minimumMergeTasks: Int64 = 8
    public var minimumMergeBytes: Int64 = 1 << 20
    /// The shrink guard: a new version that would lose more than this share
    /// of the live version's distinct keys (an empty file, a header only, a
    /// truncated export) is held for an operator's approval instead of
    /// published; the live list keeps serving. 0 holds any shrink; 1 turns
    /// the guard off. An advertiser may have its own (`SetMaxShrink`).
    public var maxShrink = 0.5
    /// The largest delta file taken (docs/INGEST.md): a delta is read whole
    /// by one worker, so it must be small beside the list. A larger change
    /// is a new list file; a larger delta is refused with that advice.
    public var maxDeltaBytes: Int64 = 256 << 20
    /// Deltas on one base before the coordinator compacts them into a new
    /// base: each overlay costs every lookup of the list a search more.
    public var maxOverlays = 8
    /// Keys named by the overlays (added or removed), as a share of the
    /// base's, past which they are compacted into a new base.
    public var compactionShare = 0.1

    public init() {}

    /// The lease in seconds: the catalog's clock is seconds.
    var leaseSeconds: Double { lease.seconds }

    /// Why a version of `keys` distinct keys must be held rather than
    /// replace a live version of `liveKeys` under a guard of `maxShrink`, or
    /// nil when it may go live. Nothing live (or an empty live list): nothing
    /// to protect.
    public static func shrinkHold(keys: Int64, liveKeys: Int64, liveVersion: UInt64, maxShrink: Double) -> String? {
        guard liveKeys > 0, maxShrink < 1 else { return nil }
        let kept = Double(keys) / Double(liveKeys)
        guard kept < 1 - maxShrink else { return nil }
        let lost = String(format: "%.1f", 100 * (1 - kept))
        let limit = String(format: "%g", 100 * maxShrink)
        let what = keys == 0 ? "has no keys" : "has \(keys) keys"
        return "held by the shrink guard: it \(what) where live version \(liveVersion) has \(liveKeys) (\(lost)% fewer; at most \(limit)% without approval)"
    }

    /// Why `value` cannot be a shrink guard (a share from 0 to 1), or nil.
    public static func problem(withMaxShrink value: Double) -> String? {
        value.isFinite && (0...1).contains(value) ? nil : "max shrink must be a share from 0 (0%) to 1 (100%), not \(value)"
    }

    /// The pause after a background scan that took `took`: the configured
    /// interval, or fifty times the scan's own time if that is longer, so
    /// scanning a large idle lake costs at most 2% of a core (a 0.15-s scan
    /// of 10,000 folders is repeated every 7.5 s, not every 2) — but never
    /// more than `maxScanPause` (60 s), so that a file dropped into a very
    /// large lake is seen within a minute whatever a scan costs. `Scan` and
    /// `SubmitFile` still queue a file at once.
    public static func scanPause(after took: Duration, interval: Duration) -> Duration {
        max(interval, min(took * 50, maxScanPause))
    }

    /// The longest pause between background scans.
    public static let maxScanPause: Duration = .seconds(60)

    /// The wait before the next attempt after `failures` reported failures,
    /// in seconds (the catalog's clock).
    public func backoff(failures: Int, jitter: Double = Double.random(in: 0.8...1.2)) -> Double {
        let base = retryBackoff.seconds * Double(1 << min(max(failures - 1, 0), 20))
        return min(base, maxRetryBackoff.seconds) * jitter
    }

    /// Why an advertiser id cannot be served, or nil if it can: segments
    /// record it in at most `SegmentFormat.maxAdvertiserIDLength` bytes.
    public static func problem(withAdvertiserID id: String) -> String? {
        let length = id.utf8.count
        guard length <= maxAdvertiserIDLength else {
            return "advertiser id '\(id.prefix(16))…' is \(length) bytes long; at most \(maxAdvertiserIDLength) are allowed"
        }
        return nil
    }

    public static let maxAdvertiserIDLength = SegmentFormat.maxAdvertiserIDLength

    /// The block size for a file of `size` bytes: `blockSize`, or smaller
    /// for a file of fewer than `minimumBlocks` blocks, though not below
    /// `minimumBlockSize`. A 100 MB file cut into 64 MiB blocks is a 64 MiB
    /// block and a 36 MB one: one worker parses twice as long as the other
    /// and the rest wait. Cut into eight 12.5 MB blocks, it is shared evenly.
    public func blockSize(forFileSize size: Int64) -> Int64 {
        let even = (max(0, size) + minimumBlocks - 1) / max(1, minimumBlocks)
        return min(blockSize, max(minimumBlockSize, even))
    }

    /// log₂ of the number of merge ranges for `keys` keys: enough for
    /// about `mergeTargetBytes` each, and for a small version as many as
    /// `minimumMergeTasks` of at least `minimumMergeBytes`, as for blocks:
    /// a 100 MB file is 48 MB of keys, two 32 MiB merges, one per worker,
    /// each syncing its segment at the end; eight smaller ones overlap
    /// their syncs with the next merge (measured: 318–386 → 383–448 MB/s).
    /// Never decreasing in `keys`, so `runPartitionBits` stays an upper bound.
    public func mergeRangeBits(keys: Int64) -> Int {
        let bytes = max(0, keys) * 16
        let byTarget = (bytes + mergeTargetBytes - 1) / max(1, mergeTargetBytes)
        let bySpread = min(minimumMergeTasks, bytes / max(1, minimumMergeBytes))
        var count = 1
        while count < byTarget && count < maxMergeTasks { count <<= 1 }
        while count * 2 <= bySpread && count < maxMergeTasks { count <<= 1 }
        return count.trailingZeroBitCount
    }

    /// How finely the runs of a file of `size` bytes group their keys: as
    /// finely as its merges can split, so every merge range is a whole number
    /// of groups. A key takes at least 33 bytes (32 digits and a newline; the
    /// last line may lack it), so the file holds at most (size + 1) / 33 keys,
    /// and the ranges made from the real count are never finer.
    public func runPartitionBits(fileSize: Int64) -> Int {
        mergeRangeBits(keys: (max(0, fileSize) + 1) / 33)
    }

    /// Key ranges for merging `keys` distinct-ish keys: a power of two of
    /// them, by the first bits of the key (MD5 keys are uniform).
    public func mergeRanges(keys: Int64) -> [(low: UInt64, high: UInt64)] {
        let bits = mergeRangeBits(keys: keys)
        let count = 1 << bits
        guard bits > 0 else { return [(0, 0)] }
        return (0..<count).map { p in
            let low = UInt64(p) << UInt64(64 - bits)
            let high = p == count - 1 ? 0 : UInt64(p + 1) << UInt64(64 - bits)
            return (low, high)
        }
    }
}

/// Which file's tasks a worker gets next.
///
/// `priority = weight × (1 + waited / agingSeconds) / (1 + log2(1 + remainingBytes / blockSize)) × (merging ? 2 : 1)`
///
/// - **Size** divides, through a logarithm of the *remaining* work: a 10 KB
///   file (1 block) scores 1/2 while a 100 GB file (1,600 blocks) scores
///   about 1/11.6, so small files overtake the rest of a huge one at once.
///   A logarithm rather than the size itself, so that a big file is slowed,
///   not parked: its score is within a factor of 12 of the smallest file's.
/// - **Waiting** multiplies, linearly and without bound: a file that has
///   waited `agingSeconds × 11` catches up with a newly arrived small file,
///   so no file starves however many small files keep coming.
/// - **Weight** (per advertiser, default 1) multiplies: weight 2 is served as
///   if it had waited twice as long.
/// - A file that is **merging** is doubled: it is nearly live, and finishing
///   it frees its runs.
public enum Priority {
    public static func score(weight: Double, waited: Double, remainingBytes: Int64, blockSize: Int64,
                             merging: Bool, agingSeconds: Double) -> Double {
        let blocks = Double(max(0, remainingBytes)) / Double(max(1, blockSize))
        let age = 1 + max(0, waited) / max(0.001, agingSeconds)
        return max(0.0001, weight) * age / (1 + log2(1 + blocks)) * (merging ? 2 : 1)
    }
}
