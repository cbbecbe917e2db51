#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A segment read with `pread` instead of a memory mapping: for merges,
/// which read one key range from each of many runs once.
///
/// A mapping would count every page it touches (and, through the kernel's
/// fault-around, up to sixteen neighbours of each) as the process's memory
/// until unmapped; with hundreds of runs open that grows with the file.
/// Reading the range into a buffer the caller owns keeps memory at the
/// range's size. The header is checked as `Segment` checks it (magic,
/// version, header checksum, sizes); the key checksum is not, since only a
/// slice is read: `readKeys` checks the slice is strictly increasing instead.
public struct SegmentFile: ~Copyable {
    public let path: String
    public let keyCount: Int
    private let fd: Int32
    private let bits: Int
    private let keysOffset: Int

    public init(path: String) throws(SegmentError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SegmentError(path, "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        fstat(fd, &st)
        var header = [UInt8](repeating: 0, count: SegmentFormat.headerSize)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, SegmentFormat.headerSize, 0) }
        guard n == SegmentFormat.headerSize else {
            close(fd)
            throw SegmentError(path, "truncated: no complete header")
        }
        func u64(_ o: Int) -> UInt64 { header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self)) } }
        let magic = header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        let version = header.withUnsafeBytes { UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: SegmentFormat.versionOffset, as: UInt16.self)) }
        let headerHash = header.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[..<SegmentFormat.headerChecksumOffset])) }
        let bits = Int(header[SegmentFormat.indexBitsOffset])
        let count = u64(SegmentFormat.keyCountOffset)
        var problem: String?
        if magic != SegmentFormat.magic { problem = "not a segment file (bad magic)" }
        else if version != SegmentFormat.version { problem = "unsupported format version \(version)" }
        else if headerHash != u64(SegmentFormat.headerChecksumOffset) { problem = "header checksum mismatch" }
        else if bits > SegmentFormat.maxIndexBits || count > UInt64(Int.max / 32) { problem = "implausible header" }
        else if Int(st.st_size) != SegmentFormat.fileSize(keys: Int(count), bits: bits) {
            problem = "size \(st.st_size) does not match \(count) keys"
        }
        if let problem {
            close(fd)
            throw SegmentError(path, problem)
        }
        self.fd = fd
        self.bits = bits
        self.keyCount = Int(count)
        self.keysOffset = SegmentFormat.headerSize + SegmentFormat.indexBytes(bits: bits)
    }

    deinit { close(fd) }

    private func readExactly(_ p: UnsafeMutableRawPointer, _ length: Int, at offset: Int) throws(SegmentError) {
        var done = 0
        while done < length {
            let n = pread(fd, p + done, length - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw SegmentError(path, n == 0 ? "truncated while reading" : "read failed: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    private func key(at i: Int) throws(SegmentError) -> Key16 {
        var raw = (UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &raw) { (b) throws(SegmentError) in try readExactly(b.baseAddress!, 16, at: keysOffset + i * 16) }
        return Key16(hi: UInt64(bigEndian: raw.0), lo: UInt64(bigEndian: raw.1))
    }

    /// The index of the first key not less than `key` (`keyCount` if none).
    public func lowerBound(_ key: Key16) throws(SegmentError) -> Int {
        var l = 0, r = keyCount
        if bits > 0 {
            let b = Int(key.hi >> UInt64(64 - bits))
            var entries = (UInt64(0), UInt64(0))
            try withUnsafeMutableBytes(of: &entries) { (e) throws(SegmentError) in
                try readExactly(e.baseAddress!, 16, at: SegmentFormat.headerSize + b * 8)
            }
            l = Int(UInt64(littleEndian: entries.0))
            r = Int(UInt64(littleEndian: entries.1))
            guard l <= r, r <= keyCount else { throw SegmentError(path, "index entry \(b) is out of range") }
        }
        while l < r {
            let m = (l + r) / 2
            if try self.key(at: m) < key { l = m + 1 } else { r = m }
        }
        return l
    }

    /// Appends keys `range` to `keys`, checking they are strictly increasing.
    public func readKeys(_ range: Range<Int>, into keys: inout [Key16]) throws(SegmentError) {
        guard !range.isEmpty else { return }
        precondition(range.lowerBound >= 0 && range.upperBound <= keyCount)
        let chunk = 1 << 16
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk * 16, alignment: 16)
        defer { buffer.deallocate() }
        var previous: Key16?
        var i = range.lowerBound
        while i < range.upperBound {
            let n = min(chunk, range.upperBound - i)
            try readExactly(buffer, n * 16, at: keysOffset + i * 16)
            for j in 0..<n {
                let key = Key16(buffer + j * 16)
                if let previous, !(previous < key) {
                    throw SegmentError(path, "keys out of order at \(i + j): the file is damaged")
                }
                previous = key
                keys.append(key)
            }
            i += n
        }
    }
}
