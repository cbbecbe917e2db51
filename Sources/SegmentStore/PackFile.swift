#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a segment's bytes are: a whole file, or a slice of a pack file.
///
/// A version merged from many key ranges has one segment per range. Written
/// as files of their own, each would be a memory map of its own in the match
/// server, and Linux allows a process about 65,000: 31 lists of 100 GB
/// (2,048 segments each) would fill a server. So merges write their segments
/// into slots of one pack file per version (`PackFile`), and a server maps
/// each pack once, whatever the number of segments in it.
public struct SegmentLocation: Hashable, Sendable, CustomStringConvertible {
    /// The file, relative to the segment store.
    public var path: String
    /// The slice of the file the segment occupies; nil: the whole file.
    public var slice: Slice?

    public struct Slice: Hashable, Sendable {
        public var offset: Int
        public var length: Int

        public init(offset: Int, length: Int) {
            self.offset = offset
            self.length = length
        }
    }

    public init(path: String, slice: Slice? = nil) {
        self.path = path
        self.slice = slice
    }

    /// `path`, or `path@offset+length` for a slice: how errors and logs name it.
    public var description: String {
        guard let slice else { return path }
        return "\(path)@\(slice.offset)+\(slice.length)"
    }
}

extension SegmentLocation: Codable {
    private enum CodingKeys: String, CodingKey { case path, offset, length }

    /// A whole file is a plain JSON string (as manifests written before packs
    /// have it); a slice is `{"path":…,"offset":…,"length":…}`.
    public init(from decoder: any Decoder) throws {
        if let path = try? decoder.singleValueContainer().decode(String.self) {
            self.init(path: path)
            return
        }
        let object = try decoder.container(keyedBy: CodingKeys.self)
        self.init(path: try object.decode(String.self, forKey: .path),
                  slice: Slice(offset: try object.decode(Int.self, forKey: .offset), length: try object.decode(Int.self, forKey: .length)))
    }

    public func encode(to encoder: any Encoder) throws {
        guard let slice else {
            var single = encoder.singleValueContainer()
            try single.encode(path)
            return
        }
        var object = encoder.container(keyedBy: CodingKeys.self)
        try object.encode(path, forKey: .path)
        try object.encode(slice.offset, forKey: .offset)
        try object.encode(slice.length, forKey: .length)
    }
}

/// A whole file mapped read-only (or, when small, read into memory), shared
/// by the segments in it. Released when the last segment that holds it goes.
public final class FileMapping: @unchecked Sendable {
    /// Files up to this size are read into memory rather than mapped. A map
    /// is scarce (Linux allows a process about 65,000) and 100,000
    /// advertisers with 10 KB lists would otherwise need 100,000 of them.
    /// Kept under glibc's malloc threshold for using a map itself (128 KiB).
    public static let copyLimit = 64 << 10

    public let path: String
    let base: UnsafeRawPointer
    public let size: Int
    /// Read into memory rather than mapped: the bytes on disk can change
    /// without the copy seeing it, so a scrub reads them again.
    public let isCopy: Bool

    public init(path: String) throws(SegmentError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SegmentError(path, "cannot open: \(String(cString: strerror(errno)))", isResourceLimit: SegmentError.isResourceLimit(errno: errno))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SegmentError(path, "cannot stat: \(String(cString: strerror(errno)))") }
        let size = Int(st.st_size)
        guard size >= SegmentFormat.headerSize else {
            throw SegmentError(path, "truncated: \(size) bytes, smaller than the \(SegmentFormat.headerSize)-byte header")
        }
        if size <= Self.copyLimit {
            self.base = UnsafeRawPointer(try Self.read(fd, path: path, offset: 0, count: size))
            self.isCopy = true
        } else {
            guard let mapped = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
                throw SegmentError(path, "cannot map: \(String(cString: strerror(errno)))", isResourceLimit: SegmentError.isResourceLimit(errno: errno))
            }
            // Lookups jump around: read-ahead and fault-around would only map
            // (and count as this process's memory) pages no lookup asked for.
            // Said before the first access, which is a header check.
            madvise(mapped, size, MADV_RANDOM)
            self.base = UnsafeRawPointer(mapped)
            self.isCopy = false
        }
        self.path = path
        self.size = size
    }

    deinit {
        if isCopy {
            base.deallocate()
        } else {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
        }
    }

    /// `count` bytes of `fd` from `offset`, in a new allocation the caller frees.
    static func read(_ fd: Int32, path: String, offset: Int, count: Int) throws(SegmentError) -> UnsafeMutableRawPointer {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        do {
            try FileIO.readExactly(fd, buffer, count, at: offset, path: path)
        } catch {
            buffer.deallocate()
            throw error
        }
        return buffer
    }

    /// The file's bytes at [offset, offset + count) as they are on disk now.
    func readFromDisk(offset: Int, count: Int) throws(SegmentError) -> UnsafeMutableRawPointer {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SegmentError(path, "cannot open: \(String(cString: strerror(errno)))", isResourceLimit: SegmentError.isResourceLimit(errno: errno))
        }
        defer { close(fd) }
        return try Self.read(fd, path: path, offset: offset, count: count)
    }
}

/// A reserved, page-aligned range of a pack file that one merge attempt
/// writes its segment into.
public struct PackSlot: Sendable, Equatable {
    /// The pack file, local to this host.
    public var path: String
    public var offset: Int
    public var capacity: Int

    public init(path: String, offset: Int, capacity: Int) {
        self.path = path
        self.offset = offset
        self.capacity = capacity
    }
}

/// Pack files: one per version, holding the segments of all its merges.
///
/// Writers on the same host (or on hosts sharing a file system with working
/// `flock`) reserve slots at the end of the file under an exclusive lock;
/// each slot is as large as its segment can be (`SegmentFormat.fileSize` of
/// the keys that cover its range) and starts on a page boundary. Every
/// attempt gets a slot of its own, so an attempt that lost its lease and
/// still writes can never touch the slot of the attempt that is published.
/// Slots left unused are holes in a sparse file: they cost address space in
/// the one map, not disk or memory.
public enum PackFile {
    public static let alignment = 4096

    /// Reserves `capacity` bytes at the end of `path` (created if missing).
    public static func reserve(at path: String, capacity: Int) throws(SegmentError) -> PackSlot {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SegmentError(path, "cannot open the pack: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw SegmentError(path, "cannot lock the pack: \(String(cString: strerror(errno)))") }
        }
        defer { flock(fd, LOCK_UN) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SegmentError(path, "cannot stat the pack: \(String(cString: strerror(errno)))") }
        let offset = (Int(st.st_size) + alignment - 1) / alignment * alignment
        let capacity = (capacity + alignment - 1) / alignment * alignment
        guard ftruncate(fd, off_t(offset + capacity)) == 0 else {
            throw SegmentError(path, "cannot grow the pack to \(offset + capacity) bytes: \(String(cString: strerror(errno)))")
        }
        return PackSlot(path: path, offset: offset, capacity: capacity)
    }
}

extension SegmentLocation: ExpressibleByStringLiteral {
    /// A whole file.
    public init(stringLiteral path: String) {
        self.init(path: path)
    }
}
