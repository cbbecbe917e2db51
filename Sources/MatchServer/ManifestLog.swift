#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SegmentStore

/// What the match server serves, kept on disk so a restart serves the same:
/// a snapshot (`match-manifest.json`) and an append-only log of the changes
/// since (`match-manifest.log`, one JSON object a line). A publish appends
/// one short line and syncs once, whatever the number of advertisers; many
/// publishes in one call share the sync. When the log outgrows the snapshot
/// (and 1 MiB), the state is written as a new snapshot and the log starts
/// again, so the bytes written per change stay constant on average.
///
/// Replaying the log over a snapshot is idempotent (each line sets an
/// advertiser's entry), so a crash between writing a snapshot and emptying
/// the log loses nothing. A torn last line (a crash mid-append) is dropped.
/// Not thread-safe: `MatchCatalog` calls it under its manifest lock.
final class ManifestLog {
    struct Entry: Codable, Equatable {
        var version: UInt64
        /// A whole file is a JSON string, a slice of a pack an object (`SegmentLocation`).
        var segments: [SegmentLocation]
    }

    /// The snapshot's JSON form (docs/STORAGE.md).
    struct Snapshot: Codable {
        var format = 1
        var advertisers: [String: Entry] = [:]
    }

    /// One line of the log: an advertiser's new entry, or its removal (version 0).
    struct Change: Codable {
        var advertiser: String
        var version: UInt64
        var segments: [SegmentLocation]?
    }

    let root: URL
    private(set) var entries: [String: Entry] = [:]
    private var fd: Int32 = -1
    private var logBytes = 0
    private var snapshotBytes = 0
    /// The log is compacted once it is larger than this and the snapshot.
    let minimumCompaction: Int

    var snapshotURL: URL { root.appendingPathComponent("match-manifest.json") }
    var logURL: URL { root.appendingPathComponent("match-manifest.log") }

    /// Loads the snapshot and replays the log.
    init(root: URL, minimumCompaction: Int = 1 << 20) throws {
        self.root = root
        self.minimumCompaction = minimumCompaction
        if let data = try? Data(contentsOf: snapshotURL) {
            entries = try JSONDecoder().decode(Snapshot.self, from: data).advertisers
            snapshotBytes = data.count
        }
        fd = open(logURL.path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ManifestError("cannot open \(logURL.path): \(String(cString: strerror(errno)))") }
        let data = (try? Data(contentsOf: logURL)) ?? Data()
        var complete = 0
        let decoder = JSONDecoder()
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast() {
            complete += line.count + 1
            guard !line.isEmpty, let change = try? decoder.decode(Change.self, from: Data(line)) else { continue }
            apply(change)
        }
        if complete < data.count {
            // A torn line from a crash mid-append: cut it, so the next append starts a line of its own.
            guard ftruncate(fd, off_t(complete)) == 0 else { throw ManifestError("cannot truncate \(logURL.path)") }
        }
        logBytes = complete
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    private func apply(_ change: Change) {
        if change.version == 0 {
            entries[change.advertiser] = nil
        } else {
            entries[change.advertiser] = Entry(version: change.version, segments: change.segments ?? [])
        }
    }

    /// Appends `changes` and syncs them (one sync for all), then applies
    /// them; on failure nothing is applied.
    func record(_ changes: [Change]) throws {
        guard !changes.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var bytes = Data()
        for change in changes {
            bytes.append(try encoder.encode(change))
            bytes.append(UInt8(ascii: "\n"))
        }
        var failure: SegmentError?
        bytes.withUnsafeBytes { raw in
            do throws(SegmentError) { try AtomicFile.writeAll(fd, raw, path: logURL.path) } catch { failure = error }
        }
        if let failure { throw ManifestError("cannot append: \(failure)") }
        guard fsync(fd) == 0 else { throw ManifestError("cannot sync \(logURL.path): \(String(cString: strerror(errno)))") }
        logBytes += bytes.count
        for change in changes { apply(change) }
        if logBytes > max(minimumCompaction, snapshotBytes) { try compact() }
    }

    /// Writes the state as a new snapshot and empties the log.
    func compact() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(Snapshot(advertisers: entries))
        try Self.replace(snapshotURL, with: data)
        try Self.replace(logURL, with: Data())
        close(fd)
        fd = open(logURL.path, O_RDWR | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw ManifestError("cannot reopen \(logURL.path): \(String(cString: strerror(errno)))") }
        snapshotBytes = data.count
        logBytes = 0
    }

    /// Replaces `url` atomically and durably (`AtomicFile`).
    static func replace(_ url: URL, with data: Data) throws {
        do { try AtomicFile.replace(url.path, with: data) } catch { throw ManifestError("\(error)") }
    }
}

struct ManifestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
