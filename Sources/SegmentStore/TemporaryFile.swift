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
            do {
                try FileIO.sync(temporaryPath, .everything, name: path)
            } catch {
                discard()
                throw error
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

/// The few raw file operations segments, runs, packs and the manifest
/// share: one copy of each loop and each sync.
enum FileIO {
    /// How much of a file `sync` makes durable.
    enum Sync {
        /// Data and metadata (`fsync`).
        case everything
        /// Data, and the metadata needed to read it back (`fdatasync`).
        case data
        /// Only these bytes' pages, written and waited for
        /// (`sync_file_range`; a full `fsync` where that does not exist).
        case range(offset: Int, length: Int)
    }

    /// Opens `path` and syncs it as `how` says; errors name `name`.
    static func sync(_ path: String, _ how: Sync, name: String) throws(SegmentError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SegmentError(name, "cannot open to sync: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let (result, call): (Int32, String)
        switch how {
        case .everything: (result, call) = (fsync(fd), "fsync")
        case .data: (result, call) = (fdatasync(fd), "fdatasync")
        case .range(let offset, let length):
            #if os(Linux)
            let flags: UInt32 = 1 | 2 | 4 // SYNC_FILE_RANGE_WAIT_BEFORE | _WRITE | _WAIT_AFTER
            (result, call) = (linuxSyncFileRange(fd, off_t(offset), off_t(length), flags), "sync_file_range")
            #else
            (result, call) = (fsync(fd), "fsync")
            #endif
        }
        guard result == 0 else { throw SegmentError(name, "\(call) failed: \(String(cString: strerror(errno)))") }
    }

    /// Reads exactly `length` bytes of `fd` at `offset` into `p` (retrying
    /// short reads and EINTR); errors name `path`.
    static func readExactly(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ length: Int, at offset: Int,
                            path: String) throws(SegmentError) {
        var done = 0
        while done < length {
            let n = pread(fd, p + done, length - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw SegmentError(path, n == 0 ? "truncated: ends after \(offset + done) bytes" : "read failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Gives `[offset, offset + length)` of `path` back to the file system
    /// (a hole; the size stays). Best effort: where hole punching is not
    /// supported the blocks stay until the file is deleted.
    static func punchHole(_ path: String, offset: Int, length: Int) {
        #if os(Linux)
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = linuxFallocate(fd, 0x01 /* FALLOC_FL_KEEP_SIZE */ | 0x02 /* FALLOC_FL_PUNCH_HOLE */, off_t(offset), off_t(length))
        close(fd)
        #endif
    }
}

#if os(Linux)
/// glibc's `fallocate(2)` and `sync_file_range(2)`, which the Glibc module
/// does not export (they are declared only under `_GNU_SOURCE`).
@_silgen_name("fallocate")
private func linuxFallocate(_ fd: Int32, _ mode: Int32, _ offset: off_t, _ length: off_t) -> Int32

@_silgen_name("sync_file_range")
private func linuxSyncFileRange(_ fd: Int32, _ offset: off_t, _ length: off_t, _ flags: UInt32) -> Int32
#endif

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
/// manifest): one home for write-then-rename, and for the exact reads and
/// writes other modules need (the object store's uploads and downloads).
public enum AtomicFile {
    /// Reads exactly `length` bytes of `fd` at `offset` into `p` (retrying
    /// short reads and EINTR); a file that ends first is an error naming `path`.
    public static func readExactly(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ length: Int, at offset: Int,
                                   path: String) throws(SegmentError) {
        try FileIO.readExactly(fd, p, length, at: offset, path: path)
    }

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
