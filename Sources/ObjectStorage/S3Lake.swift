import DataLake
import Foundation

/// The lake in an S3-compatible bucket: `s3://bucket/prefix/<advertiser>/<file>`.
///
/// The same contract as `LocalFolderLake`: objects directly under an
/// advertiser's "folder" are its lists; deeper keys, keys at the top and
/// names starting with `.` are ignored. An object's ETag is its version, and
/// every block read carries `If-Match`, so a list replaced while it is being
/// ingested answers 412 and the coordinator supersedes that version, as it
/// does when a local file changes.
public struct S3Lake: DataLake {
    public let client: S3Client

    public init(client: S3Client) {
        self.client = client
    }

    /// `<advertiser>/<file>`, neither hidden: the folder lake's rule (`LakePath`).
    static func isListPath(_ key: String) -> Bool { LakePath.isListPath(key) }

    static func lakeError(_ error: S3Error, path: String) -> LakeError {
        error.isNotFound ? .notFound(path) : error.isTransient ? .unavailable(path: path, reason: error.description)
            : .io(path: path, reason: error.description)
    }

    public func list(prefix: String, after: String?, limit: Int) async throws(LakeError) -> [LakeObject] {
        var out: [LakeObject] = []
        var token: String?
        var startAfter = after
        repeat {
            let page: (objects: [S3Object], next: String?)
            do {
                page = try await client.listPage(prefix: prefix, startAfter: startAfter, token: token, maxKeys: 1000)
            } catch {
                throw error.isTransient ? .unavailable(path: client.address(prefix), reason: error.description)
                    : .io(path: client.address(prefix), reason: error.description)
            }
            for object in page.objects where Self.isListPath(object.key) {
                out.append(LakeObject(path: object.key, size: object.size, etag: object.etag, modified: object.lastModified))
                if out.count == limit { return out }
            }
            token = page.next
            startAfter = nil
        } while token != nil
        return out
    }

    public func head(_ path: String) async throws(LakeError) -> LakeObject {
        guard Self.isListPath(path) else { throw .invalidPath(path) }
        let object: S3Object?
        do { object = try await client.head(path) } catch { throw Self.lakeError(error, path: path) }
        guard let object else { throw .notFound(path) }
        return LakeObject(path: path, size: object.size, etag: object.etag, modified: object.lastModified)
    }

    public func read(_ path: String, offset: Int64, length: Int, ifMatch etag: String?) async throws(LakeError) -> [UInt8] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(0, length), alignment: 16)
        defer { buffer.deallocate() }
        let n = try await read(path, offset: offset, into: buffer, ifMatch: etag)
        return Array(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
    }

    /// Streams the range into `buffer` (no copy of the block beyond it).
    public func read(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) async throws(LakeError) -> Int {
        guard Self.isListPath(path) else { throw .invalidPath(path) }
        do {
            return try await client.read(path, offset: offset, into: buffer, ifMatch: etag)
        } catch where error.status == 412 {
            let now = (try? await client.head(path)).flatMap { $0?.etag } ?? "(deleted)"
            throw .changed(path: path, expected: etag ?? "", found: now)
        } catch {
            throw Self.lakeError(error, path: path)
        }
    }
}
