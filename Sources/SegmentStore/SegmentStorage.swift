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

    public func removeAll(under prefix: String) async throws {
        let target = try url(prefix)
        do {
            try FileManager.default.removeItem(at: target)
        } catch CocoaError.fileNoSuchFile {
        } catch let error as NSError where error.domain == NSCocoaErrorDomain && error.code == NSFileNoSuchFileError {
        }
    }
}
