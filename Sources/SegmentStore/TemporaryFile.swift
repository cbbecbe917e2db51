#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A file written under a temporary name beside its final path, then
/// renamed into place: a reader sees it whole or not at all, and a crash
/// leaves at worst a stray temporary file. Segments and runs are written
/// this way.
struct TemporaryFile: Sendable {
    /// Where the file goes when committed.
    let path: String
    let temporaryPath: String
    /// Sync the file and its folder on commit.
    let durable: Bool

    /// Creates the temporary file; returns it and a descriptor open for writing.
    static func create(for path: String, durable: Bool) throws(SegmentError) -> (TemporaryFile, Int32) {
        let file = TemporaryFile(path: path, temporaryPath: path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
                                 durable: durable)
        let fd = open(file.temporaryPath, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SegmentError(path, "cannot create \(file.temporaryPath): \(String(cString: strerror(errno)))") }
        return (file, fd)
    }

    /// Writes all of `bytes` to `fd`, at `offset` or at its current position.
    func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int? = nil) throws(SegmentError) {
        try AtomicFile.writeAll(fd, bytes, at: offset, path: path)
    }

    /// Syncs the file (when durable), renames it into place and syncs its
    /// folder, so that after a crash the file is either whole at its path or
    /// absent. On failure the temporary file is removed.
    func commit() throws(SegmentError) {
        if durable {
            let fd = open(temporaryPath, O_RDONLY | O_CLOEXEC)
            let synced = fd >= 0 && fsync(fd) == 0
            let reason = String(cString: strerror(errno))
            if fd >= 0 { close(fd) }
            guard synced else {
                discard()
                throw SegmentError(path, "fsync failed: \(reason)")
            }
        }
        guard rename(temporaryPath, path) == 0 else {
            let reason = String(cString: strerror(errno))
            discard()
            throw SegmentError(path, "cannot rename into place: \(reason)")
        }
        if durable { syncDirectory(of: path) }
    }

    /// Abandons it: nothing appears at its path.
    func discard() {
        unlink(temporaryPath)
    }
}

/// Makes a rename durable: fsync the folder that holds `path`.
func syncDirectory(of path: String) {
    let dir = (path as NSString).deletingLastPathComponent
    let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_CLOEXEC)
    if fd >= 0 {
        fsync(fd)
        close(fd)
    }
}

/// Safe whole-file writes for anything else Roster keeps on disk (the match
/// manifest): one home for write-then-rename.
public enum AtomicFile {
    /// Writes all of `bytes` to `fd`, at `offset` or at its current position
    /// (retrying short writes and EINTR); `path` names the file in errors.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int? = nil, path: String) throws(SegmentError) {
        var done = 0
        while done < bytes.count {
            let p = bytes.baseAddress! + done
            let n = offset.map { pwrite(fd, p, bytes.count - done, off_t($0 + done)) } ?? write(fd, p, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw SegmentError(path, "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Replaces the file at `path` with `data` atomically and durably:
    /// written beside it, synced, renamed over it, its folder synced.
    public static func replace(_ path: String, with data: Data) throws(SegmentError) {
        let (file, fd) = try TemporaryFile.create(for: path, durable: true)
        var failure: SegmentError?
        data.withUnsafeBytes { bytes in
            do throws(SegmentError) { try file.writeAll(fd, bytes) } catch { failure = error }
        }
        close(fd)
        if let failure {
            file.discard()
            throw failure
        }
        try file.commit()
    }
}
