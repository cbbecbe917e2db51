#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SegmentStore

/// Runs and segments in an S3-compatible bucket, with a local folder for
/// the files being written and the copies being read.
///
/// - Writing: a worker writes a run or segment to `local/<path>` as it
///   would in a folder store; `commit` uploads it (one PUT with Content-MD5,
///   or a multipart upload aborted on failure, so a half-written object is
///   never listed) and removes the local file.
/// - Merging: `localRun` fetches only what the merge reads — the header,
///   its partitions' table entries and keys, by ranged GETs — into a sparse
///   local file of the run's full size, which `RunFile` reads as it reads any
///   run (checksums included).
/// - Serving: `localFile` downloads a segment into `local/<path>` once; the
///   match server maps it, and `discardLocal` removes it when its version
///   is retired, so the cache holds what is served.
/// - Packs are not used: `reserveSlot` is nil, so each merge writes its own
///   segment object.
public struct S3SegmentStorage: SegmentStorage {
    public let client: S3Client
    public let local: URL

    public init(client: S3Client, local: URL) {
        self.client = client
        self.local = local.standardizedFileURL
    }

    private func localPath(_ path: String) throws -> String {
        guard !path.isEmpty, !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else {
            throw SegmentError(path, "store paths must be relative and stay inside the store")
        }
        return local.appendingPathComponent(path).path
    }

    private func makeParent(_ file: String) throws {
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    }

    public func prepareWrite(_ path: String) throws -> String {
        let file = try localPath(path)
        try makeParent(file)
        return file
    }

    public func commit(_ path: String) async throws {
        let file = try localPath(path)
        try await client.upload(file: file, as: path)
        unlink(file)
    }

    public func localFile(_ path: String) async throws -> String {
        let file = try localPath(path)
        if access(file, F_OK) == 0 { return file }
        try makeParent(file)
        _ = try await client.download(path, to: file)
        return file
    }

    public func localRun(_ path: String, low: UInt64, high: UInt64) async throws -> String {
        let file = try localPath(".merges/\(path).\(UInt64.random(in: 0...UInt64.max))")
        try makeParent(file)
        let fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SegmentError(file, "cannot create: \(String(cString: strerror(errno)))") }
        var keep = false
        defer {
            close(fd)
            if !keep { unlink(file) }
        }
        /// Bytes `range` of the run, written at their offsets; `exact`: fewer is an error.
        func fetch(_ range: Range<Int>, exact: Bool = true) async throws -> [UInt8] {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: range.count, alignment: 16)
            defer { buffer.deallocate() }
            let n = try await client.read(path, offset: Int64(range.lowerBound), into: buffer)
            let bytes = Array(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            guard n == range.count || (!exact && n >= RunFormat.headerSize) else {
                throw SegmentError(path, "truncated: \(n) of \(range.count) bytes at \(range.lowerBound)")
            }
            try bytes.withUnsafeBytes { try AtomicFile.writeAll(fd, $0, at: range.lowerBound, path: file) }
            return bytes
        }
        // One request for the header and, for runs of up to 2^11 partitions
        // (what the coordinator picks for lists of up to about 100 GB),
        // the whole partition table: a merge reads each run with two.
        let prefix: [UInt8]
        do {
            prefix = try await fetch(0..<Self.prefixBytes, exact: false)
        } catch let error as S3Error where error.isNotFound {
            return file // no file: the merge reports the run lost
        } catch is SegmentError {
            keep = true // too short to be a run: RunFile says so
            return file
        }
        keep = true
        guard let (bits, keys) = prefix.withUnsafeBytes({ RunFormat.readHeader($0) }) else { return file } // RunFile says what is wrong
        guard ftruncate(fd, off_t(RunFormat.fileSize(keys: keys, bits: bits))) == 0 else {
            throw SegmentError(file, "cannot size: \(String(cString: strerror(errno)))")
        }
        let partitions = RunFormat.partitions(low: low, high: high, bits: bits)
        guard !partitions.isEmpty else { return file }
        let table = RunFormat.tableRanges(bits: bits, partitions: partitions)
        let starts = table.starts.upperBound <= prefix.count ? Array(prefix[table.starts]) : try await fetch(table.starts)
        if table.checksums.upperBound > prefix.count { _ = try await fetch(table.checksums) }
        let first = starts.withUnsafeBytes { Int(truncatingIfNeeded: UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let last = starts.withUnsafeBytes {
            Int(truncatingIfNeeded: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: starts.count - 8, as: UInt64.self)))
        }
        // A damaged table is RunFile's to report; fetch only what is plausible.
        guard first >= 0, first <= last, last <= keys else { return file }
        let keysOffset = RunFormat.headerSize + RunFormat.tableBytes(bits: bits)
        try await client.download(path, range: (keysOffset + first * 16)..<(keysOffset + last * 16), into: fd)
        return file
    }

    /// The first bytes of a run fetched at once: its header and, for up to
    /// 2^11 partitions, its whole partition table.
    static let prefixBytes = RunFormat.headerSize + RunFormat.tableBytes(bits: 11)

    public func discardLocal(_ localPath: String) async {
        guard localPath.hasPrefix(local.path + "/") else { return }
        unlink(localPath)
    }

    public func list(under prefix: String) async throws -> [String] {
        try await client.listAll(prefix: prefix.hasSuffix("/") ? prefix : prefix + "/").map(\.key)
    }

    public func remove(_ path: String) async throws {
        try await client.delete(path)
        unlink(try localPath(path))
    }

    public func removeAll(under prefix: String) async throws {
        try await client.deleteAll(under: prefix.hasSuffix("/") ? prefix : prefix + "/")
        try? FileManager.default.removeItem(atPath: try localPath(prefix))
    }
}
