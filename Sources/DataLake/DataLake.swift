#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// One file in the lake, as `list` and `head` describe it.
public struct LakeObject: Sendable, Hashable {
    /// `<advertiser-id>/<file>`, with `/` separators.
    public var path: String
    public var size: Int64
    /// Changes whenever the content may have changed: an S3 ETag, or for a
    /// folder the modification time and inode.
    public var etag: String
    public var modified: Date

    public init(path: String, size: Int64, etag: String, modified: Date) {
        self.path = path
        self.size = size
        self.etag = etag
        self.modified = modified
    }

    /// The order files arrive in, as the scan and the catalog compare
    /// them: by modification time; at the same time (an object store's
    /// are whole seconds), a list file before a delta (a delta in the same
    /// second as a list most likely changes it); then by path.
    public var arrival: LakeArrival { LakeArrival(modified: modified.timeIntervalSince1970, path: path) }

    /// The advertiser a path belongs to: its first component.
    public var advertiserID: String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty ? String(parts[0]) : nil
    }
}

/// Where a file stands in the order of arrival (`LakeObject.arrival`).
public struct LakeArrival: Comparable, Sendable {
    public var modified: Double
    public var path: String

    public init(modified: Double, path: String) {
        self.modified = modified
        self.path = path
    }

    public static func < (a: LakeArrival, b: LakeArrival) -> Bool {
        (a.modified, LakePath.isDelta(a.path) ? 1 : 0, a.path) < (b.modified, LakePath.isDelta(b.path) ? 1 : 0, b.path)
    }
}

/// The lake's naming rules, in one place for every lake (a folder, a
/// bucket) and the scan: a list lives at `<advertiser>/<file>`; a name
/// starting with `.` is hidden (a copier's temporary file or folder), and
/// the usual partial-download names are not lists yet: write under such a
/// name, then rename into place.
public enum LakePath {
    /// A file or folder name the lake does not show.
    public static func isHidden(_ name: some StringProtocol) -> Bool { name.hasPrefix(".") }

    /// `<advertiser>/<file>`, both named and neither hidden.
    public static func isListPath(_ path: some StringProtocol) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty && !isHidden(parts[0]) && !isHidden(parts[1])
    }

    /// Whether the file at `path` is a delta (`<advertiser>/<name>.delta`):
    /// members added and removed on top of the live list, not a whole list
    /// (docs/INGEST.md).
    public static func isDelta(_ path: String) -> Bool {
        path.hasSuffix(".delta")
    }

    /// Whether the file at `path` is a list the scan takes: not hidden, and
    /// not named as a download in progress.
    public static func isListFile(_ path: String) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return !isHidden(name) && ![".tmp", ".part", ".partial", ".crdownload"].contains { name.hasSuffix($0) }
    }
}

/// Folder listings by path, with the folder status they were read under.
final class FolderCache: @unchecked Sendable {
    private let lock = NSLock()
    private var listings: [String: (signature: [Int64], entries: [String])] = [:]

    func entries(_ path: String, signature: [Int64]) -> [String]? {
        lock.withLock { listings[path].flatMap { $0.signature == signature ? $0.entries : nil } }
    }

    func store(_ path: String, signature: [Int64], entries: [String]) {
        lock.withLock { listings[path] = (signature, entries) }
    }
}

/// Why the lake could not answer.
public enum LakeError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(String)
    /// The object is not the one the caller had: size or etag changed.
    case changed(path: String, expected: String, found: String)
    case io(path: String, reason: String)
    case invalidPath(String)
    /// A symbolic link whose target lies outside the lake: never followed.
    case outsideLake(path: String, target: String)
    /// The lake could not be reached or answered that it cannot serve now
    /// (a refused or reset connection, a timeout, a 5xx or SlowDown): says
    /// nothing about the file, and the same call may work later. Callers
    /// wait it out rather than count it against the file.
    case unavailable(path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such object in the lake"
        case .changed(let p, let expected, let found): return "\(p): changed while being read (etag \(expected) → \(found))"
        case .io(let p, let reason), .unavailable(let p, let reason): return "\(p): \(reason)"
        case .invalidPath(let p): return "\(p): not a valid lake path"
        case .outsideLake(let p, let target):
            return "\(p): a symbolic link to \(target), outside the lake; links are followed only to files inside the lake"
        }
    }
}

/// Where member lists come from: one object per list, listed, described and
/// read by byte range — the operations an object store offers, so that an
/// S3-compatible lake (ListObjectsV2, HEAD, ranged GET with If-Match) can
/// stand in for the local folder without the coordinator or workers changing.
public protocol DataLake: Sendable {
    /// Objects whose path starts with `prefix`, in path order, starting after
    /// `after` (exclusive), at most `limit` of them.
    func list(prefix: String, after: String?, limit: Int) async throws(LakeError) -> [LakeObject]
    /// Size and etag of one object.
    func head(_ path: String) async throws(LakeError) -> LakeObject
    /// `length` bytes from `offset` (fewer at the end of the object). With
    /// `ifMatch`, fails with `.changed` if the object is no longer that version.
    func read(_ path: String, offset: Int64, length: Int, ifMatch etag: String?) async throws(LakeError) -> [UInt8]
    /// The same into a caller's buffer (up to its size), so a reader can reuse
    /// one buffer for a whole block; returns how many bytes were read.
    func read(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) async throws(LakeError) -> Int
}

extension DataLake {
    /// By default, through `read(_:offset:length:ifMatch:)` and a copy.
    public func read(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) async throws(LakeError) -> Int {
        let bytes = try await read(path, offset: offset, length: buffer.count, ifMatch: etag)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return bytes.count
    }
}

/// The embedded default: a local folder laid out as `<lake>/<advertiser-id>/<file>`.
///
/// Files whose names start with `.` are ignored (editors' and copiers'
/// temporary files), as are files directly in the root and deeper folders.
/// Drop a file into an advertiser's folder (ideally by writing elsewhere and
/// renaming it in) and it becomes that advertiser's new list.
public struct LocalFolderLake: DataLake {
    public let root: URL
    /// Each advertiser folder's entries as last read, with the folder's
    /// status: a folder whose status did not change is not read again, so a
    /// scan of an unchanged lake costs two `lstat`s per folder (the folder
    /// and its files), not a directory read.
    private let folders = FolderCache()

    public init(root: URL) {
        self.root = root
    }

    private func url(_ path: String) throws(LakeError) -> URL {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw .invalidPath(path)
        }
        return root.appendingPathComponent(path)
    }

    public func list(prefix: String, after: String?, limit: Int) async throws(LakeError) -> [LakeObject] {
        // Folders as "<name>/", in the order of their paths ("a/" sorts
        // after "a-b/"), kept while the lake folder is unchanged; a page
        // starts at its cursor by binary search and stops at `limit`, so a
        // scan of the whole lake in pages costs one pass, not one per page.
        guard let folders = entries(of: root.path, suffix: "/") else {
            throw .io(path: root.path, reason: "cannot list the lake folder")
        }
        var first = folders.startIndex
        if let after {
            let cursorFolder = String(after.prefix { $0 != "/" }) + "/"
            var high = folders.endIndex
            while first < high {
                let middle = first + (high - first) / 2
                if folders[middle] < cursorFolder { first = middle + 1 } else { high = middle }
            }
        }
        var out: [LakeObject] = []
        for advertiser in folders[first...] {
            guard advertiser.hasPrefix(prefix) || prefix.hasPrefix(advertiser) else { continue }
            let name = String(advertiser.dropLast())
            // A folder that is a link out of the lake is skipped like its files.
            guard let folder = try? inside(root.path + "/" + name, lakePath: name), let files = entries(of: folder) else { continue }
            let linkedFolder = folder != root.path + "/" + name
            for file in files {
                let path = advertiser + file
                guard path.hasPrefix(prefix), after.map({ path > $0 }) ?? true else { continue }
                // One lstat for a plain file; links are resolved and checked.
                var st = Glibc.stat()
                let object: LakeObject?
                if !linkedFolder, lstat(folder + "/" + file, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK {
                    object = (st.st_mode & S_IFMT) == S_IFREG ? Self.object(path, st) : nil
                } else {
                    object = try? describe(path)
                }
                guard let object else { continue }
                out.append(object)
                if out.count == limit { return out }
            }
        }
        return out
    }

    /// The visible entries of the folder at `path`, each followed by
    /// `suffix`, sorted; nil if it is not a folder.
    private func entries(of path: String, suffix: String = "") -> [String]? {
        var st = Glibc.stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return nil }
        let signature = [Int64(st.st_ino), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec), Int64(st.st_ctim.tv_sec), Int64(st.st_ctim.tv_nsec)]
        if let cached = folders.entries(path, signature: signature) { return cached }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return nil }
        let visible = names.filter { !LakePath.isHidden($0) }.map { $0 + suffix }.sorted()
        // File system clocks are coarse (milliseconds): a change in the same
        // tick as the one just read would keep the folder's times. As git
        // does with its index, a listing is kept only once the folder has
        // been quiet for a second.
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        if Int64(now.tv_sec) - max(Int64(st.st_mtim.tv_sec), Int64(st.st_ctim.tv_sec)) >= 2 {
            folders.store(path, signature: signature, entries: visible)
        }
        return visible
    }

    /// `filesystemPath` itself when no link is involved; otherwise the path
    /// it resolves to, which must lie inside the lake. A link out of the
    /// lake (to `/etc/passwd`, say) is refused: whoever can write into one
    /// advertiser's folder must not make Roster read any file the process
    /// can read. Links that stay inside the lake are followed.
    private func inside(_ filesystemPath: String, lakePath: String) throws(LakeError) -> String {
        var st = Glibc.stat()
        let folder = (filesystemPath as NSString).deletingLastPathComponent
        let linked = (lstat(filesystemPath, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK)
            || (folder != root.path && lstat(folder, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK)
        guard linked else { return filesystemPath }
        guard let real = Self.realPath(filesystemPath) else { throw .notFound(lakePath) }
        let lake = Self.realPath(root.path) ?? root.path
        guard real.hasPrefix(lake.hasSuffix("/") ? lake : lake + "/") else { throw .outsideLake(path: lakePath, target: real) }
        return real
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The file to open for `path`, checked by `inside`.
    private func fileToOpen(_ path: String) throws(LakeError) -> String {
        try inside(try url(path).path, lakePath: path)
    }

    /// Regular files only; the etag is the modification time in nanoseconds,
    /// the size and the inode, so a replaced or rewritten file gets a new
    /// one. `modified` is the later of the modification and status-change
    /// times: a file moved into the lake (which keeps its old mtime) counts
    /// as new when it arrives.
    private func describe(_ path: String) throws(LakeError) -> LakeObject {
        let target = try fileToOpen(path)
        var st = Glibc.stat()
        guard stat(target, &st) == 0 else {
            throw errno == ENOENT ? .notFound(path) : .io(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .notFound(path) }
        return Self.object(path, st)
    }

    private static func object(_ path: String, _ st: Glibc.stat) -> LakeObject {
        let nanos = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        let changed = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        return LakeObject(path: path, size: Int64(st.st_size), etag: "\(nanos)-\(st.st_size)-\(st.st_ino)",
                          modified: Date(timeIntervalSince1970: Double(max(nanos, changed)) / 1e9))
    }

    public func head(_ path: String) async throws(LakeError) -> LakeObject {
        try describe(path)
    }

    public func read(_ path: String, offset: Int64, length: Int, ifMatch etag: String?) async throws(LakeError) -> [UInt8] {
        var failure: LakeError?
        // Uninitialised: the bytes are read straight in, no zero-filling first.
        let buffer = [UInt8](unsafeUninitializedCapacity: max(0, length)) { out, initialized in
            do throws(LakeError) {
                initialized = try readSync(path, offset: offset, into: UnsafeMutableRawBufferPointer(out), ifMatch: etag)
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw failure }
        return buffer
    }

    public func read(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) async throws(LakeError) -> Int {
        try readSync(path, offset: offset, into: buffer, ifMatch: etag)
    }

    private func readSync(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) throws(LakeError) -> Int {
        let target = try fileToOpen(path)
        let fd = open(target, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw errno == ENOENT ? .notFound(path) : .io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        if let etag {
            // Check the open file itself, so a rename-over between head and read is caught.
            var st = Glibc.stat()
            fstat(fd, &st)
            let nanos = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            let found = "\(nanos)-\(st.st_size)-\(st.st_ino)"
            guard found == etag else { throw .changed(path: path, expected: etag, found: found) }
        }
        let length = buffer.count
        var done = 0
        while done < length {
            let n = pread(fd, buffer.baseAddress! + done, length - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, reason: String(cString: strerror(errno)))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
