#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The layout of a run file (docs/STORAGE.md, "Runs"): the keys of one
/// parsed block, **grouped by their top bits, not sorted**.
///
/// A merge task sorts its whole key range anyway, so sorting each block
/// first would be work done twice; grouping is one counting pass and one
/// scatter pass. The coordinator picks the number of groups (partitions) so
/// that every merge range is a whole number of them: a merge then reads one
/// contiguous slice of every run. Each partition carries its own checksum,
/// so a merge verifies exactly the bytes it reads.
public enum RunFormat {
    public static let magic: UInt32 = 0x4E55_5252 // "RRUN" as bytes
    public static let version: UInt16 = 1
    public static let headerSize = 64
    public static let maxPartitionBits = 16

    static let versionOffset = 4
    static let bitsOffset = 6
    static let keyCountOffset = 8
    static let listVersionOffset = 16
    static let headerChecksumOffset = 56

    /// The partition table: `2^bits + 1` key positions, then `2^bits` checksums.
    public static func tableBytes(bits: Int) -> Int { ((2 << bits) + 1) * 8 }

    public static func fileSize(keys: Int, bits: Int) -> Int { headerSize + tableBytes(bits: bits) + 16 * keys }

    /// The partition of a key whose first eight bytes, read big-endian, are `hi`.
    @inlinable
    public static func partition(_ hi: UInt64, bits: Int) -> Int { bits == 0 ? 0 : Int(hi >> UInt64(64 - bits)) }

    /// The partitions `[low, high)` covers (`high` 0 means the end of the key space).
    public static func partitions(low: UInt64, high: UInt64, bits: Int) -> Range<Int> {
        let first = partition(low, bits: bits)
        let end = high == 0 ? 1 << bits : partition(high - 1, bits: bits) + 1
        return first..<max(first, end)
    }

    /// The partition bits and key count of a run whose first `headerSize`
    /// bytes are `header`; nil unless the magic, version and checksum hold.
    /// For a reader that fetches a run in pieces (an object store).
    public static func readHeader(_ header: UnsafeRawBufferPointer) -> (bits: Int, keys: Int)? {
        guard header.count >= headerSize,
              UInt32(littleEndian: header.loadUnaligned(as: UInt32.self)) == magic,
              UInt16(littleEndian: header.loadUnaligned(fromByteOffset: versionOffset, as: UInt16.self)) == version,
              XXH64.hash(UnsafeRawBufferPointer(rebasing: header[..<headerChecksumOffset]))
                == UInt64(littleEndian: header.loadUnaligned(fromByteOffset: headerChecksumOffset, as: UInt64.self)) else { return nil }
        let bits = Int(header[bitsOffset])
        let keys = UInt64(littleEndian: header.loadUnaligned(fromByteOffset: keyCountOffset, as: UInt64.self))
        guard bits <= maxPartitionBits, keys <= UInt64(Int.max / 32) else { return nil }
        return (bits, Int(keys))
    }

    /// The byte ranges of the partition table that `RunFile` reads for
    /// `partitions`: their starts (one more than their count), then their
    /// checksums. With the header and the keys between the first start and
    /// the last, they are every byte a merge of those partitions reads.
    public static func tableRanges(bits: Int, partitions: Range<Int>) -> (starts: Range<Int>, checksums: Range<Int>) {
        let starts = headerSize + partitions.lowerBound * 8
        let checksums = headerSize + ((1 << bits) + 1 + partitions.lowerBound) * 8
        return (starts..<starts + (partitions.count + 1) * 8, checksums..<checksums + partitions.count * 8)
    }
}

/// Writes runs.
public enum RunWriter {
    /// Writes `keys` (in any order, duplicates allowed) as a run grouped on
    /// their top `partitionBits` bits, atomically (a temporary name, then a
    /// rename). With `durable` the file and its folder are synced first.
    /// The file is built in `scratch` (fresh memory when nil).
    ///
    /// - Returns: the number of keys written.
    @discardableResult
    public static func write(_ keys: UnsafeBufferPointer<Key16>, partitionBits: Int, version: UInt64,
                             to path: String, durable: Bool, scratch: ScratchBuffer? = nil) throws(SegmentError) -> Int {
        let bits = min(max(0, partitionBits), RunFormat.maxPartitionBits)
        let partitions = 1 << bits
        let keysOffset = RunFormat.headerSize + RunFormat.tableBytes(bits: bits)
        let size = RunFormat.fileSize(keys: keys.count, bits: bits)
        let buffer = scratch ?? ScratchBuffer()
        // The file image, then the scatter's cursors.
        let file = buffer.bytes(size + (partitions + 1) * 8)
        file.initializeMemory(as: UInt8.self, repeating: 0, count: keysOffset)

        // Partition starts (the table's first part), then every key scattered
        // to its partition in file byte order.
        let starts = (file + RunFormat.headerSize).bindMemory(to: UInt64.self, capacity: partitions + 1)
        let next = (file + size).bindMemory(to: Int.self, capacity: partitions + 1)
        next.initialize(repeating: 0, count: partitions + 1)
        for key in keys { next[RunFormat.partition(key.hi, bits: bits) + 1] += 1 }
        for p in 0..<partitions { next[p + 1] += next[p] }
        for p in 0...partitions { starts[p] = UInt64(next[p]).littleEndian }
        let out = file + keysOffset
        for key in keys {
            let p = RunFormat.partition(key.hi, bits: bits)
            key.store(to: out + next[p] << 4)
            next[p] += 1
        }
        let checksums = file + RunFormat.headerSize + (partitions + 1) * 8
        for p in 0..<partitions {
            let from = Int(UInt64(littleEndian: starts[p])), to = Int(UInt64(littleEndian: starts[p + 1]))
            let sum = XXH64.hash(UnsafeRawBufferPointer(start: out + from * 16, count: (to - from) * 16), seed: UInt64(p))
            checksums.storeBytes(of: sum.littleEndian, toByteOffset: p * 8, as: UInt64.self)
        }

        file.storeBytes(of: RunFormat.magic.littleEndian, as: UInt32.self)
        file.storeBytes(of: RunFormat.version.littleEndian, toByteOffset: RunFormat.versionOffset, as: UInt16.self)
        file.storeBytes(of: UInt8(bits), toByteOffset: RunFormat.bitsOffset, as: UInt8.self)
        file.storeBytes(of: UInt64(keys.count).littleEndian, toByteOffset: RunFormat.keyCountOffset, as: UInt64.self)
        file.storeBytes(of: version.littleEndian, toByteOffset: RunFormat.listVersionOffset, as: UInt64.self)
        let headerSum = XXH64.hash(UnsafeRawBufferPointer(start: file, count: RunFormat.headerChecksumOffset))
        file.storeBytes(of: headerSum.littleEndian, toByteOffset: RunFormat.headerChecksumOffset, as: UInt64.self)

        let (output, fd) = try TemporaryFile.create(for: path, durable: durable)
        do throws(SegmentError) {
            try output.writeAll(fd, UnsafeRawBufferPointer(start: file, count: size))
            close(fd)
        } catch {
            close(fd)
            output.discard()
            throw error
        }
        try output.commit()
        return keys.count
    }
}

/// One run, read with `pread`: a merge reads one key range of each of many
/// runs once, so it reads into memory it owns rather than mapping files
/// (a mapping counts every touched page, and its fault-around neighbours,
/// as the worker's memory until unmapped).
public final class RunFile {
    public let path: String
    public let keyCount: Int
    public let partitionBits: Int
    public let version: UInt64
    private let fd: Int32

    /// Opens a run and checks its header (magic, version, checksum, sizes).
    public init(path: String) throws(SegmentError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SegmentError(path, "cannot open: \(String(cString: strerror(errno)))") }
        var header = [UInt8](repeating: 0, count: RunFormat.headerSize)
        var st = stat()
        fstat(fd, &st)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, RunFormat.headerSize, 0) }
        let problem: String? = header.withUnsafeBytes { h in
            guard n == RunFormat.headerSize else { return "truncated: no complete header" }
            guard UInt32(littleEndian: h.loadUnaligned(as: UInt32.self)) == RunFormat.magic else { return "not a run file (bad magic)" }
            let version = UInt16(littleEndian: h.loadUnaligned(fromByteOffset: RunFormat.versionOffset, as: UInt16.self))
            guard version == RunFormat.version else { return "unsupported run format version \(version)" }
            let sum = UInt64(littleEndian: h.loadUnaligned(fromByteOffset: RunFormat.headerChecksumOffset, as: UInt64.self))
            guard XXH64.hash(UnsafeRawBufferPointer(rebasing: h[..<RunFormat.headerChecksumOffset])) == sum else {
                return "header checksum mismatch"
            }
            let bits = Int(h[RunFormat.bitsOffset])
            let count = UInt64(littleEndian: h.loadUnaligned(fromByteOffset: RunFormat.keyCountOffset, as: UInt64.self))
            guard bits <= RunFormat.maxPartitionBits, count <= UInt64(Int.max / 32) else { return "implausible header" }
            guard Int(st.st_size) == RunFormat.fileSize(keys: Int(count), bits: bits) else {
                return "size \(st.st_size) does not match \(count) keys"
            }
            return nil
        }
        if let problem {
            close(fd)
            throw SegmentError(path, problem)
        }
        self.fd = fd
        partitionBits = Int(header[RunFormat.bitsOffset])
        keyCount = header.withUnsafeBytes {
            Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: RunFormat.keyCountOffset, as: UInt64.self)))
        }
        version = header.withUnsafeBytes {
            UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: RunFormat.listVersionOffset, as: UInt64.self))
        }
    }

    deinit { close(fd) }

    private func readExactly(_ p: UnsafeMutableRawPointer, _ length: Int, at offset: Int) throws(SegmentError) {
        try FileIO.readExactly(fd, p, length, at: offset, path: path)
    }

    private func table(_ partitions: Range<Int>) throws(SegmentError) -> (starts: [Int], checksums: [UInt64]) {
        // Entries lo...hi of the starts, then checksums lo..<hi.
        let count = partitions.count
        let raw = UnsafeMutablePointer<UInt64>.allocate(capacity: 2 * count + 1)
        defer { raw.deallocate() }
        try readExactly(raw, (count + 1) * 8, at: RunFormat.headerSize + partitions.lowerBound * 8)
        try readExactly(raw + count + 1, count * 8,
                        at: RunFormat.headerSize + ((1 << partitionBits) + 1 + partitions.lowerBound) * 8)
        let starts = (0...count).map { Int(truncatingIfNeeded: UInt64(littleEndian: raw[$0])) }
        for i in 0..<count where !(starts[i] >= 0 && starts[i] <= starts[i + 1] && starts[i + 1] <= keyCount) {
            throw SegmentError(path, "partition table entry \(partitions.lowerBound + i) is out of range")
        }
        let checksums = (0..<count).map { raw[count + 1 + $0] }
        return (starts, checksums.map { UInt64(littleEndian: $0) })
    }

    /// How many keys the partitions covering `[low, high)` hold: the keys
    /// `forEachKey` reads (it may drop some, when a partition reaches
    /// beyond the range).
    public func keysCovering(low: UInt64, high: UInt64) throws(SegmentError) -> Int {
        let partitions = RunFormat.partitions(low: low, high: high, bits: partitionBits)
        guard !partitions.isEmpty else { return 0 }
        let (starts, _) = try table(partitions)
        return starts[starts.count - 1] - starts[0]
    }

    /// Calls `body` with the keys in `[low, high)` (`high` 0 means the end),
    /// a chunk at a time, in file order. Each partition read is checked
    /// against its checksum, and each key against its partition; a damaged
    /// file throws (possibly after some chunks were delivered: the caller
    /// discards its output).
    public func forEachKey(low: UInt64, high: UInt64, chunkKeys: Int = 1 << 15,
                           _ body: (UnsafeBufferPointer<Key16>) throws -> Void) throws {
        let partitions = RunFormat.partitions(low: low, high: high, bits: partitionBits)
        guard !partitions.isEmpty else { return }
        let (starts, checksums) = try table(partitions)
        let keysOffset = RunFormat.headerSize + RunFormat.tableBytes(bits: partitionBits)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: chunkKeys * 16, alignment: 16)
        defer { raw.deallocate() }
        var keys = [Key16]()
        keys.reserveCapacity(chunkKeys)
        // Partitions reaching beyond the range (when runs are grouped more
        // coarsely than merges split) hold keys to leave out.
        let bits = partitionBits
        let coveredLow = UInt64(partitions.lowerBound) << UInt64(64 - bits)
        let coveredHigh = partitions.upperBound == 1 << bits ? 0 : UInt64(partitions.upperBound) << UInt64(64 - bits)
        let filter = coveredLow != low || coveredHigh != high

        let first = partitions.lowerBound
        var p = first // the partition being read
        var hasher = XXH64(seed: UInt64(p))
        var position = starts[0]
        func closeFinishedPartitions() throws(SegmentError) {
            while p < partitions.upperBound && position == starts[p - first + 1] {
                guard hasher.finalize() == checksums[p - first] else {
                    throw SegmentError(path, "partition \(p) checksum mismatch: the file is damaged")
                }
                p += 1
                hasher = XXH64(seed: UInt64(p))
            }
        }
        try closeFinishedPartitions()
        let end = starts[starts.count - 1]
        while position < end {
            let n = min(chunkKeys, end - position)
            let chunkStart = position
            try readExactly(raw, n * 16, at: keysOffset + chunkStart * 16)
            keys.removeAll(keepingCapacity: true)
            var i = 0
            while i < n {
                // The chunk's keys that belong to partition p.
                let stop = min(n, starts[p - first + 1] - chunkStart)
                hasher.update(UnsafeRawBufferPointer(start: raw + i * 16, count: (stop - i) * 16))
                for j in i..<stop {
                    let key = Key16(raw + j * 16)
                    guard RunFormat.partition(key.hi, bits: bits) == p else {
                        throw SegmentError(path, "key \(chunkStart + j) lies outside its partition \(p): the file is damaged")
                    }
                    if !filter || key.hi >= low && (high == 0 || key.hi < high) { keys.append(key) }
                }
                i = stop
                position = chunkStart + stop
                try closeFinishedPartitions()
            }
            try keys.withUnsafeBufferPointer { try body($0) }
        }
    }
}
