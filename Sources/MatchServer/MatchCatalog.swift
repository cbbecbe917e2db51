import Foundation
import Logging
import SegmentStore
import Synchronization

/// One advertiser's list at one version: its segments, immutable.
///
/// Calls take a reference to the version that is live when they start and
/// answer from it alone, so a reply never mixes two versions; when the last
/// such call ends after a newer version went live, the segments unmap.
public final class ListVersion: Sendable {
    public let advertiserID: String
    public let version: UInt64
    public let segments: [Segment]
    /// Segments ordered by first key with disjoint ranges: a key is looked
    /// up in the one segment whose range holds it. Otherwise, in all.
    private let disjoint: Bool

    public init(advertiserID: String, version: UInt64, segments: [Segment]) {
        self.advertiserID = advertiserID
        self.version = version
        let nonEmpty = segments.filter { $0.count > 0 }.sorted { $0.info.firstKey! < $1.info.firstKey! }
        self.segments = nonEmpty
        var disjoint = true
        for (a, b) in zip(nonEmpty, nonEmpty.dropFirst()) where !(a.info.lastKey! < b.info.firstKey!) { disjoint = false }
        self.disjoint = disjoint
    }

    public var keyCount: Int { segments.reduce(0) { $0 + $1.count } }

    public func contains(_ key: Key16) -> Bool {
        if segments.count == 1 { return segments[0].contains(key) }
        if disjoint {
            // The last segment whose first key is <= key.
            var l = 0
            var r = segments.count
            while l < r {
                let m = (l + r) / 2
                if segments[m].info.firstKey! <= key { l = m + 1 } else { r = m }
            }
            return l > 0 && segments[l - 1].contains(key)
        }
        return segments.contains { $0.contains(key) }
    }

    /// Sets bit i of `bitmap` for each of the `count` 16-byte keys at `keys` in the list.
    public func lookup(_ keys: UnsafeRawPointer, count: Int, into bitmap: UnsafeMutablePointer<UInt8>) {
        if segments.count == 1 {
            segments[0].lookup(keys, count: count, into: bitmap)
            return
        }
        for i in 0..<count where contains(Key16(keys + i * 16)) {
            bitmap[i >> 3] |= UInt8(1) << UInt8(i & 7)
        }
    }
}

/// What the server serves: the newest published version of each advertiser,
/// persisted in a manifest so that a restart serves the same.
public final class MatchCatalog: Sendable {
    /// The manifest's JSON form (docs/STORAGE.md).
    struct ManifestFile: Codable {
        struct Entry: Codable {
            var version: UInt64
            var segments: [String]
        }
        var format = 1
        var advertisers: [String: Entry] = [:]
    }

    public let root: URL
    private let live = Mutex<[String: ListVersion]>([:])
    private let manifest = Mutex(ManifestFile())
    private let logger: Logger

    public var manifestURL: URL { root.appendingPathComponent("match-manifest.json") }

    /// Opens the catalog in `root` (the segment store's folder), reloading
    /// every advertiser the manifest names. A version whose segments fail
    /// their checks is logged and left out; the rest serve.
    public init(root: URL, logger: Logger = Logger(label: "roster.match.catalog")) throws {
        self.root = root
        self.logger = logger
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        guard let data = try? Data(contentsOf: manifestURL) else { return }
        let file = try JSONDecoder().decode(ManifestFile.self, from: data)
        var loaded: [String: ListVersion] = [:]
        for (advertiser, entry) in file.advertisers.sorted(by: { $0.key < $1.key }) {
            do {
                let segments = try entry.segments.map { (path) throws(SegmentError) in try Segment(path: resolve(path).path) }
                loaded[advertiser] = ListVersion(advertiserID: advertiser, version: entry.version, segments: segments)
            } catch {
                // Kept on record in the manifest; a new publish replaces it.
                logger.error("cannot reload advertiser; it is not served", metadata: [
                    "advertiser": "\(advertiser)", "version": "\(entry.version)", "error": "\(error)"])
            }
        }
        live.withLock { $0 = loaded }
        manifest.withLock { $0 = file }
        logger.info("reloaded", metadata: ["advertisers": "\(loaded.count)"])
    }

    /// A segment path relative to the root; absolute paths and `..` are refused.
    public func resolve(_ relative: String) throws(SegmentError) -> URL {
        guard !relative.isEmpty, !relative.hasPrefix("/"), !relative.split(separator: "/").contains("..") else {
            throw SegmentError(relative, "segment paths must be relative to the segment store and stay inside it")
        }
        return root.appendingPathComponent(relative)
    }

    public func current(_ advertiser: String) -> ListVersion? {
        live.withLock { $0[advertiser] }
    }

    public var advertisers: [String: UInt64] {
        live.withLock { $0.mapValues(\.version) }
    }

    public enum PublishOutcome: Equatable, Sendable {
        case published(previous: UInt64)
        /// The same version is already live: nothing changed (publish is idempotent).
        case alreadyLive
    }

    public enum PublishError: Error, Sendable, Equatable {
        case staleVersion(requested: UInt64, live: UInt64)
        case badSegment(SegmentError)
        case mismatch(String)
        case manifest(String)
    }

    /// Opens and verifies `paths`, records the version in the manifest, then
    /// makes it live. Any failure leaves the live version untouched.
    public func publish(advertiser: String, version: UInt64, paths: [String]) throws(PublishError) -> PublishOutcome {
        if let live = current(advertiser) {
            if live.version == version { return .alreadyLive }
            if live.version > version { throw .staleVersion(requested: version, live: live.version) }
        }
        var segments: [Segment] = []
        for path in paths {
            let url: URL
            do { url = try resolve(path) } catch { throw .mismatch(error.reason + ": \(path)") }
            do {
                let segment = try Segment(path: url.path)
                guard segment.info.advertiserID == advertiser, segment.info.listVersion == version else {
                    throw PublishError.mismatch("segment \(path) belongs to advertiser '\(segment.info.advertiserID)' version \(segment.info.listVersion), not '\(advertiser)' version \(version)")
                }
                segments.append(segment)
            } catch let error as SegmentError {
                throw .badSegment(error)
            } catch let error as PublishError {
                throw error
            } catch {
                throw .mismatch("\(error)")
            }
        }
        let list = ListVersion(advertiserID: advertiser, version: version, segments: segments)
        // The manifest and the live table change together, under one lock,
        // so concurrent publishes cannot interleave them.
        return try manifest.withLock { (file) throws(PublishError) -> PublishOutcome in
            let previous = live.withLock { $0[advertiser]?.version } ?? 0
            if previous >= version && previous != 0 {
                if previous == version { return .alreadyLive }
                throw .staleVersion(requested: version, live: previous)
            }
            var next = file
            next.advertisers[advertiser] = .init(version: version, segments: paths)
            try write(next)
            file = next
            live.withLock { $0[advertiser] = list }
            logger.info("published", metadata: ["advertiser": "\(advertiser)", "version": "\(version)",
                                                 "keys": "\(list.keyCount)", "previous": "\(previous)"])
            return .published(previous: previous)
        }
    }

    /// Stops serving `advertiser`; returns the version removed, 0 if none.
    public func unpublish(advertiser: String) throws(PublishError) -> UInt64 {
        try manifest.withLock { (file) throws(PublishError) -> UInt64 in
            var next = file
            let removed = next.advertisers.removeValue(forKey: advertiser)
            guard removed != nil || live.withLock({ $0[advertiser] != nil }) else { return 0 }
            try write(next)
            file = next
            let version = live.withLock { $0.removeValue(forKey: advertiser)?.version } ?? removed?.version ?? 0
            logger.info("unpublished", metadata: ["advertiser": "\(advertiser)", "version": "\(version)"])
            return version
        }
    }

    /// Writes the manifest atomically: temporary file, fsync, rename.
    private func write(_ file: ManifestFile) throws(PublishError) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(file)
            let temporary = root.appendingPathComponent("match-manifest.json.tmp-\(UUID().uuidString)")
            guard FileManager.default.createFile(atPath: temporary.path, contents: data) else {
                throw PublishError.manifest("cannot write \(temporary.path)")
            }
            let handle = try FileHandle(forWritingTo: temporary)
            try handle.synchronize()
            try handle.close()
            if rename(temporary.path, manifestURL.path) != 0 {
                throw PublishError.manifest("cannot rename manifest into place: \(String(cString: strerror(errno)))")
            }
        } catch let error as PublishError {
            throw error
        } catch {
            throw .manifest("\(error)")
        }
    }
}
