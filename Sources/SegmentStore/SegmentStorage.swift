#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Where runs and segments live, named by paths relative to the store
/// (`runs/<advertiser>/<version>/...`, `segments/<advertiser>/<version>/...`).
///
/// Workers, mergers and match servers on different hosts share one store.
/// The interface is shaped for an object store as much as a shared folder:
/// files are written locally and then committed (an upload), read through
/// a local file (a cached download, since segments are memory-mapped), and
/// deleted by prefix.
public protocol SegmentStorage: Sendable {
    /// A local path to write `path` at; its parent folders exist.
    func prepareWrite(_ path: String) throws -> String
    /// Makes the file written at `prepareWrite(path)` visible to every host.
    func commit(_ path: String) async throws
    /// A local file with the bytes of `path`.
    func localFile(_ path: String) async throws -> String
    /// Deletes every file under `prefix`.
    func removeAll(under prefix: String) async throws
    /// Store paths of the files under `prefix` (temporary ones included).
    func list(under prefix: String) async throws -> [String]
    /// Deletes one file; a missing one is not an error.
    func remove(_ path: String) async throws
    /// Reserves a slot of `capacity` bytes in the pack file `path` (`PackFile`),
    /// or nil when this store cannot write files in place (an object store):
    /// the segment is then written as a file of its own.
    func reserveSlot(in path: String, capacity: Int) throws -> PackSlot?
    /// Makes `path` (a pack whose slots were written and waited for) durable
    /// with its metadata: called once per version, before it is published.
    func makeDurable(_ path: String) async throws
    /// A local file holding at least the bytes of run `path` that a merge of
    /// keys `[low, high)` reads (header, those partitions' table entries and
    /// keys; a store that must download may leave the rest a hole). A run
    /// that does not exist yields a path with no file, which the merge
    /// reports as a lost run. Pass the result to `discardLocal` when done.
    func localRun(_ path: String, low: UInt64, high: UInt64) async throws -> String
    /// Forgets a local copy `localFile` or `localRun` made (a download); a
    /// store whose local files are the store itself does nothing.
    func discardLocal(_ localPath: String) async
}

extension SegmentStorage {
    public func reserveSlot(in path: String, capacity: Int) throws -> PackSlot? { nil }
    public func makeDurable(_ path: String) async throws {}
    public func localRun(_ path: String, low: UInt64, high: UInt64) async throws -> String { try await localFile(path) }
    public func discardLocal(_ localPath: String) async {}
}

/// The embedded default: a folder (shared by every process on this host,
/// or across hosts on a network file system).
public struct LocalSegmentStorage: SegmentStorage {
    public let root: URL

    public init(root: URL) {
        self.root = root
    }

    private func url(_ path: String) throws -> URL {
        guard !path.isEmpty, !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else {
            throw SegmentError(path, "store paths must be relative and stay inside the store")
        }
        return root.appendingPathComponent(path)
    }

    public func prepareWrite(_ path: String) throws -> String {
        let target = try url(path)
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        return target.path
    }

    public func commit(_ path: String) async throws {}

    public func reserveSlot(in path: String, capacity: Int) throws -> PackSlot? {
        try PackFile.reserve(at: try prepareWrite(path), capacity: capacity)
    }

    public func makeDurable(_ path: String) async throws {
        let target = try url(path).path
        try FileIO.sync(target, .data, name: path)
        syncDirectory(of: target)
    }

    public func localFile(_ path: String) async throws -> String {
        try url(path).path
    }

    public func list(under prefix: String) async throws -> [String] {
        let folder = try url(prefix)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return [] }
        return names.sorted().map { prefix.hasSuffix("/") ? prefix + $0 : prefix + "/" + $0 }
    }

    public func remove(_ path: String) async throws {
        let target = try url(path)
        if unlink(target.path) != 0 && errno != ENOENT {
            throw SegmentError(path, "cannot remove: \(String(cString: strerror(errno)))")
        }
    }

    /// Also removes the folders above `prefix` that it leaves empty (an
    /// advertiser's `runs/<advertiser>` once its last version's runs go),
    /// so 10,000 advertisers do not leave 10,000 empty folders behind.
    /// `rmdir` removes only an empty folder, so a worker's new file is never
    /// lost; a worker creating a folder at that instant sees its write fail
    /// and the task runs again.
    public func removeAll(under prefix: String) async throws {
        let target = try url(prefix)
        do {
            try FileManager.default.removeItem(at: target)
        } catch CocoaError.fileNoSuchFile {
        } catch let error as NSError where error.domain == NSCocoaErrorDomain && error.code == NSFileNoSuchFileError {
        }
        // Up to, not including, the top folders (`runs`, `segments`).
        var parents = prefix.split(separator: "/").dropLast()
        while parents.count > 1, rmdir(root.appendingPathComponent(parents.joined(separator: "/")).path) == 0 {
            parents = parents.dropLast()
        }
    }
}
