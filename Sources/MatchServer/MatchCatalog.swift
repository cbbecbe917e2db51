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
    /// The base and the overlays of deltas on it (`LayeredList`).
    public let layers: LayeredList
    /// Every non-empty segment, base and overlays: what a scrub verifies.
    public var segments: [Segment] { layers.segments.filter { $0.count > 0 } }
    /// What the list's keys are hashes of (every segment of a version says
    /// the same; `MatchCatalog` refuses a publication whose segments differ).
    public let hashKind: HashKind
    /// Every file the version was published with, empty segments included
    /// (they answer nothing and are not kept open): what a store that
    /// copied them here removes when the version is retired.
    public let files: [String]

    public init(advertiserID: String, version: UInt64, segments: [Segment]) {
        self.advertiserID = advertiserID
        self.version = version
        self.hashKind = segments.first?.info.hashKind ?? .md5
        self.files = Array(Set(segments.map(\.info.path))).sorted()
        self.layers = LayeredList(segments)
        self.memoryMaps = Set(segments.filter { $0.count > 0 && !$0.mapping.isCopy }.map { ObjectIdentifier($0.mapping) }).count
    }

    /// Distinct keys; with overlays, as `LayeredList.keyCount` estimates them.
    public var keyCount: Int { layers.keyCount }

    /// Up to `limit` distinct keys greater than `after` (from the first when
    /// nil), ascending, packed 16 bytes each, and whether more follow. Keys
    /// are merged across the segments (which may overlap), de-duplicated and
    /// read through the overlays, so the pages of an export are the list exactly.
    public func keys(after: Key16?, limit: Int) -> (packed: Data, more: Bool) {
        var out = Data(capacity: min(limit, max(0, keyCount)) * 16)
        var written = 0
        var more = false
        layers.forEachKey(after: after) { key in
            if written == limit {
                more = true
                return false
            }
            withUnsafeBytes(of: (key.hi.bigEndian, key.lo.bigEndian)) { out.append(contentsOf: $0) }
            written += 1
            return true
        }
        return (out, more)
    }

    /// Memory maps this version holds: one per mapped file (a pack is one),
    /// none for files read into memory.
    public let memoryMaps: Int

    /// The one segment to ask about `key`: the only one, or the one whose
    /// range holds it; nil when none may hold it, the segments overlap or
    /// deltas lie on top (`mayHoldInOne` false: ask `contains`).
    @inline(__always)
    public func segment(for key: Key16) -> Segment? { layers.segment(for: key) }

    /// Whether at most one segment may hold any key (`segment(for:)` answers).
    public var mayHoldInOne: Bool { layers.mayHoldInOne }

    @inline(__always)
    public func contains(_ key: Key16) -> Bool { layers.contains(key) }

    /// Sets bit i of `bitmap` for each of the `count` 16-byte keys at `keys` in the list.
    public func lookup(_ keys: UnsafeRawPointer, count: Int, into bitmap: UnsafeMutablePointer<UInt8>) {
        layers.lookup(keys, count: count, into: bitmap)
    }
}

/// What the server serves: the newest published version of each advertiser,
/// persisted in a manifest so that a restart serves the same.
public final class MatchCatalog: Sendable {
    /// A version the server was given but cannot serve.
    public struct Damage: Sendable, Equatable {
        public var version: UInt64
        public var reason: String
    }

    public let root: URL
    /// The most memory maps the live lists may hold (`memoryMaps`). Linux
    /// allows a process `vm.max_map_count` maps (65,530 by default) for
    /// everything: at that limit malloc, thread stacks and the runtime fail
    /// in places that cannot recover, so the server refuses a version that
    /// would take it past its budget (RESOURCE_EXHAUSTED: the coordinator
    /// tries again later) and keeps the rest for itself.
    public let mapBudget: Int
    private let mapsInUse = Mutex(0)
    private let live = Mutex<[String: ListVersion]>([:])
    /// Versions whose segments failed their checks (at start or in a
    /// scrub), by advertiser, until a newer version is published.
    private let damaged = Mutex<[String: Damage]>([:])
    /// What a restart serves: changed under this lock, with the live table.
    private let manifest: Mutex<ManifestLog>
    private let logger: Logger

    /// Where the manifest is kept: the store's folder, or a folder of the
    /// server's own when several servers share one store (a tier's nodes on
    /// one folder store).
    public let manifestFolder: URL
    public var manifestURL: URL { manifestFolder.appendingPathComponent("match-manifest.json") }
    public var manifestLogURL: URL { manifestFolder.appendingPathComponent("match-manifest.log") }

    /// Opens the catalog in `root` (the segment store's folder), reloading
    /// every advertiser the manifest names. A version whose segments fail
    /// their checks is logged, left out and recorded as damaged (its calls
    /// answer UNAVAILABLE; `ListServed` tells the coordinator, which
    /// rebuilds it); the rest serve. Manifests left half-written by a
    /// process killed mid-write are removed.
    public init(root: URL, manifestFolder: URL? = nil, mapBudget: Int? = nil, logger: Logger = Logger(label: "roster.match.catalog")) throws {
        self.root = root
        let manifestFolder = manifestFolder ?? root
        self.manifestFolder = manifestFolder
        self.mapBudget = mapBudget ?? Self.defaultMapBudget()
        self.logger = logger
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: manifestFolder, withIntermediateDirectories: true)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: manifestFolder.path)) ?? []
        where name.hasPrefix("match-manifest.json.tmp-") || name.hasPrefix("match-manifest.log.tmp-") {
            try? FileManager.default.removeItem(at: manifestFolder.appendingPathComponent(name))
            logger.info("removed a stray temporary manifest", metadata: ["file": "\(name)"])
        }
        let log = try ManifestLog(root: manifestFolder)
        var loaded: [String: ListVersion] = [:]
        var broken: [String: Damage] = [:]
        for (advertiser, entry) in log.entries.sorted(by: { $0.key < $1.key }) {
            do {
                // Headers and indexes only: a restart with 10,000 lists of
                // 100 MB would otherwise read a terabyte before serving. The
                // keys are verified by the scrub, which starts at once.
                let segments = try Self.open(entry.segments, in: root, checks: .headerAndIndex)
                loaded[advertiser] = ListVersion(advertiserID: advertiser, version: entry.version, segments: segments)
            } catch {
                // Kept on record in the manifest; a new publish replaces it.
                logger.error("cannot reload advertiser; it is not served", metadata: [
                    "advertiser": "\(advertiser)", "version": "\(entry.version)", "error": "\(error)"])
                broken[advertiser] = Damage(version: entry.version, reason: "\(error)")
            }
        }
        live.withLock { $0 = loaded }
        mapsInUse.withLock { $0 = loaded.values.reduce(0) { $0 + $1.memoryMaps } }
        damaged.withLock { $0 = broken }
        manifest = Mutex(log)
        logger.info("reloaded", metadata: ["advertisers": "\(loaded.count)"])
    }

    /// A segment path relative to the root; absolute paths and `..` are refused.
    public func resolve(_ relative: String) throws(SegmentError) -> URL {
        try Self.resolve(relative, in: root)
    }

    private static func resolve(_ relative: String, in root: URL) throws(SegmentError) -> URL {
        guard !relative.isEmpty, !relative.hasPrefix("/"), !relative.split(separator: "/").contains("..") else {
            throw SegmentError(relative, "segment paths must be relative to the segment store and stay inside it")
        }
        return root.appendingPathComponent(relative)
    }

    /// Opens the segments at `locations`, mapping each file once: a
    /// version's pack is one map however many segments it holds.
    private static func open(_ locations: [SegmentLocation], in root: URL, checks: Segment.Checks) throws(PublishError) -> [Segment] {
        var mappings: [String: FileMapping] = [:]
        var segments: [Segment] = []
        for location in locations {
            let url: URL
            do { url = try resolve(location.path, in: root) } catch { throw .mismatch(error.reason + ": \(location.path)") }
            do {
                let mapping: FileMapping
                if let mapped = mappings[location.path] {
                    mapping = mapped
                } else {
                    mapping = try FileMapping(path: url.path)
                    mappings[location.path] = mapping
                }
                segments.append(try Segment(in: mapping, slice: location.slice, checks: checks))
            } catch {
                throw .badSegment(error)
            }
        }
        return segments
    }

    /// The memory maps the live lists hold: what counts against the
    /// process's limit of maps. One per pack or segment file, none for a
    /// small file read into memory (`FileMapping.copyLimit`).
    public var memoryMaps: Int { mapsInUse.withLock { $0 } }

    /// `vm.max_map_count` less 5,000 maps (at least 1,000) for the process's own use.
    public static func defaultMapBudget() -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/vm/max_map_count", encoding: .utf8)) ?? ""
        let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 65_530
        return max(1_000, limit - 5_000)
    }

    public func current(_ advertiser: String) -> ListVersion? {
        live.withLock { $0[advertiser] }
    }

    /// The live version of each advertiser (nil: none), taken under one
    /// acquisition of the lock.
    public func current(_ advertisers: [String]) -> [ListVersion?] {
        live.withLock { live in advertisers.map { live[$0] } }
    }

    public var advertisers: [String: UInt64] {
        live.withLock { $0.mapValues(\.version) }
    }

    /// Why `advertiser` is not served, if its version was found damaged.
    public func damage(_ advertiser: String) -> Damage? {
        damaged.withLock { $0[advertiser] }
    }

    /// Every advertiser served or damaged: (advertiser, served version or 0, damage).
    public func served() -> [(advertiser: String, version: UInt64, damage: Damage?)] {
        let versions = advertisers
        let damage = damaged.withLock { $0 }
        return Set(versions.keys).union(damage.keys).sorted().map { ($0, versions[$0] ?? 0, damage[$0]) }
    }

    /// Bytes the scrub hashes between two pauses.
    public static let scrubPiece = 1 << 20

    /// Re-verifies the checksums of every live segment from disk, at most
    /// `bytesPerSecond` on average (it pauses after each MiB it reads, so it
    /// never holds a core for long: `Segment.verify(inPiecesOf:)`), so a
    /// bit that rots on disk after a version went live is found without a
    /// restart. A version that fails is taken out of service and recorded
    /// as damaged: wrong answers are worse than UNAVAILABLE. Returns the
    /// advertisers found damaged.
    public func scrub(bytesPerSecond: Int, pause: (Duration) async -> Void = { try? await Task.sleep(for: $0) }) async -> [String] {
        let lists = live.withLock { Array($0.values) }.sorted { $0.advertiserID < $1.advertiserID }
        var found: [String] = []
        for list in lists {
            for segment in list.segments {
                do {
                    try await segment.verify(inPiecesOf: Self.scrubPiece) { bytes in
                        if bytesPerSecond > 0 { await pause(.nanoseconds(Int64(Double(bytes) / Double(bytesPerSecond) * 1e9))) }
                    }
                } catch where error.isResourceLimit {
                    // Out of descriptors for a moment: nothing is known of the file.
                    logger.warning("cannot scrub a segment now", metadata: ["segment": "\(segment.info.path)", "error": "\(error)"])
                    break
                } catch {
                    markDamaged(list, reason: "\(error)")
                    found.append(list.advertiserID)
                    break
                }
            }
        }
        return found
    }

    /// Takes `list` out of service (if it is still the live version).
    private func markDamaged(_ list: ListVersion, reason: String) {
        let removed = live.withLock { live -> Bool in
            guard live[list.advertiserID] === list else { return false }
            live[list.advertiserID] = nil
            return true
        }
        guard removed else { return }
        mapsInUse.withLock { $0 -= list.memoryMaps }
        damaged.withLock { $0[list.advertiserID] = Damage(version: list.version, reason: reason) }
        logger.error("a live list is damaged; it is no longer served", metadata: [
            "advertiser": "\(list.advertiserID)", "version": "\(list.version)", "error": "\(reason)"])
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
        /// The server is at its budget of memory maps: nothing is wrong with the version.
        case atMapBudget(String)
    }

    /// One version to publish.
    public struct Publication: Sendable {
        public var advertiser: String
        public var version: UInt64
        public var segments: [SegmentLocation]
        /// An older version may replace the live one (a rollback).
        public var rollback: Bool
        /// The live version's layers compacted: it may replace the live
        /// version of the same number (`PublishRequest.compacted`).
        public var compacted: Bool

        public init(advertiser: String, version: UInt64, segments: [SegmentLocation], rollback: Bool = false, compacted: Bool = false) {
            self.advertiser = advertiser
            self.version = version
            self.segments = segments
            self.rollback = rollback
            self.compacted = compacted
        }

        public init(advertiser: String, version: UInt64, paths: [String]) {
            self.init(advertiser: advertiser, version: version, segments: paths.map { SegmentLocation(path: $0) })
        }
    }

    /// Opens and verifies `paths`, records the version in the manifest, then
    /// makes it live. Any failure leaves the live version untouched.
    public func publish(advertiser: String, version: UInt64, paths: [String]) throws(PublishError) -> PublishOutcome {
        try publish([Publication(advertiser: advertiser, version: version, paths: paths)])[0].get()
    }

    /// Publishes many versions with one manifest append and one sync. Each
    /// gets its own outcome: a refused one does not hold back the others.
    public func publish(_ batch: [Publication]) -> [Result<PublishOutcome, PublishError>] {
        var results = [Result<PublishOutcome, PublishError>?](repeating: nil, count: batch.count)
        var opened: [(index: Int, list: ListVersion)] = []
        for (index, publication) in batch.enumerated() {
            do {
                if let list = try open(publication) { opened.append((index, list)) } else { results[index] = .success(.alreadyLive) }
            } catch {
                results[index] = .failure(error)
            }
        }
        // The manifest and the live table change together, under one lock,
        // so concurrent publishes cannot interleave them.
        manifest.withLock { log in
            var changes: [ManifestLog.Change] = []
            var accepted: [(index: Int, list: ListVersion, previous: UInt64)] = []
            var newest: [String: ListVersion] = [:]
            var maps = mapsInUse.withLock { $0 }
            for (index, list) in opened {
                let replaced = newest[list.advertiserID] ?? live.withLock { $0[list.advertiserID] }
                let previous = replaced?.version ?? 0
                let recompacted = batch[index].compacted && previous == list.version
                if previous >= list.version && previous != 0 && !(batch[index].rollback && previous != list.version) && !recompacted {
                    results[index] = previous == list.version ? .success(.alreadyLive)
                        : .failure(.staleVersion(requested: list.version, live: previous))
                    continue
                }
                let added = list.memoryMaps - (replaced?.memoryMaps ?? 0)
                if added > 0 && maps + added > mapBudget {
                    results[index] = .failure(.atMapBudget(
                        "version \(list.version) of \(list.advertiserID) needs \(list.memoryMaps) memory map(s); \(maps) of the server's budget of \(mapBudget) are in use (--max-maps)"))
                    continue
                }
                maps += added
                newest[list.advertiserID] = list
                changes.append(.init(advertiser: list.advertiserID, version: list.version, segments: batch[index].segments))
                accepted.append((index, list, previous))
            }
            do {
                try log.record(changes)
            } catch {
                for (index, _, _) in accepted { results[index] = .failure(.manifest("\(error)")) }
                return
            }
            mapsInUse.withLock { $0 = maps }
            for (index, list, previous) in accepted {
                live.withLock { $0[list.advertiserID] = list }
                damaged.withLock { _ = $0.removeValue(forKey: list.advertiserID) }
                results[index] = .success(.published(previous: previous))
                logger.info(list.version < previous ? "rolled back" : "published", metadata: [
                    "advertiser": "\(list.advertiserID)", "version": "\(list.version)", "keys": "\(list.keyCount)", "previous": "\(previous)"])
            }
        }
        return results.map { $0! }
    }

    /// Opens and checks a publication's segments; nil if it is live already.
    private func open(_ publication: Publication) throws(PublishError) -> ListVersion? {
        let (advertiser, version) = (publication.advertiser, publication.version)
        if let live = current(advertiser) {
            if live.version == version && (!publication.compacted || live.files == Self.files(publication.segments, in: root)) { return nil }
            if live.version > version && !publication.rollback { throw .staleVersion(requested: version, live: live.version) }
        }
        let segments = try Self.open(publication.segments, in: root, checks: .everything)
        // A version made by deltas holds its base's segments (of the base's
        // version) and each delta's overlay (of that delta's version), the
        // newest being this version's own: every other segment belongs to
        // this version.
        let layered = segments.contains { $0.info.role != .members }
        let baseVersion = segments.first { $0.info.role == .members }?.info.version
        let newestOverlay = segments.filter { $0.info.role != .members }.map(\.info.version).max()
        for (location, segment) in zip(publication.segments, segments) {
            let info = segment.info
            let fits = !layered ? info.version == version
                : info.role == .members ? info.version == baseVersion && info.version < version
                : info.version <= version && info.version > (baseVersion ?? 0)
            guard info.advertiserID == advertiser, fits else {
                throw .mismatch("segment \(location) (\(info.role)) belongs to advertiser '\(info.advertiserID)' version \(info.version), not '\(advertiser)' version \(version)"
                    + (layered ? " or a version it is built on" : ""))
            }
            if layered, let base = segments.first(where: { $0.info.role == .members }), info.hashKind != base.info.hashKind {
                throw .mismatch("a delta of \(info.hashKind) hashes (version \(info.version)) cannot change a list of \(base.info.hashKind) hashes (version \(base.info.version))")
            }
            guard segment.info.hashKind == segments[0].info.hashKind else {
                throw .mismatch("segment \(location) holds \(segment.info.hashKind) keys, \(publication.segments[0]) \(segments[0].info.hashKind): one version holds one hash type")
            }
        }
        if layered, newestOverlay != version {
            throw .mismatch("version \(version) of '\(advertiser)' is made by deltas but has no overlay of its own (the newest is version \(newestOverlay ?? 0))")
        }
        return ListVersion(advertiserID: advertiser, version: version, segments: segments)
    }

    /// The files `locations` name, as `ListVersion.files` lists them.
    private static func files(_ locations: [SegmentLocation], in root: URL) -> [String] {
        Array(Set(locations.map { root.appendingPathComponent($0.path).path })).sorted()
    }

    /// Stops serving `advertiser`; returns the version removed, 0 if none.
    public func unpublish(advertiser: String) throws(PublishError) -> UInt64 {
        try manifest.withLock { (log) throws(PublishError) -> UInt64 in
            let recorded = log.entries[advertiser]
            guard recorded != nil || live.withLock({ $0[advertiser] != nil }) else { return 0 }
            do { try log.record([.init(advertiser: advertiser, version: 0, segments: nil)]) } catch { throw .manifest("\(error)") }
            let removed = live.withLock { $0.removeValue(forKey: advertiser) }
            mapsInUse.withLock { $0 -= removed?.memoryMaps ?? 0 }
            let version = removed?.version ?? recorded?.version ?? 0
            damaged.withLock { _ = $0.removeValue(forKey: advertiser) }
            logger.info("unpublished", metadata: ["advertiser": "\(advertiser)", "version": "\(version)"])
            return version
        }
    }
}
