/// Where each version's files go in the segment store: the one place these
/// names are made (docs/INGEST.md, "The segment store"). A version's runs
/// and segments each live in a folder of their own, so garbage collection
/// deletes a version by prefix.
enum StorePaths {
    /// The folder of a version's runs.
    static func runs(advertiser: String, file: UInt64) -> String { "runs/\(advertiser)/\(file)" }

    /// The folder of a version's segments (and its pack).
    static func segments(advertiser: String, file: UInt64) -> String { "segments/\(advertiser)/\(file)" }

    /// The run of one attempt at parsing block `seq`.
    static func run(advertiser: String, file: UInt64, block seq: Int64, attempt: String) -> String {
        runs(advertiser: advertiser, file: file) + "/block-\(seq)-\(attempt).run"
    }

    /// The segment file of one attempt at task `seq` (a one-block file's
    /// segment, or a merge's where the store cannot write packs).
    static func segment(advertiser: String, file: UInt64, task seq: Int64, attempt: String) -> String {
        segments(advertiser: advertiser, file: file) + "/part-\(seq)-\(attempt).seg"
    }

    /// The version's one pack of merged segments.
    static func pack(advertiser: String, file: UInt64) -> String {
        segments(advertiser: advertiser, file: file) + "/merged.pack"
    }
}
