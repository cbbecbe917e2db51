#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Writes one segment file from keys given in strictly increasing order.
///
/// Keys stream to disk through a small buffer, so memory does not depend on
/// the number of keys (apart from the bucket counts, at most 128 MiB for the
/// largest index). The file appears atomically: it is written under a
/// temporary name, synced, then renamed, so a reader never sees half a
/// segment and a crash leaves at worst a stray temporary file.
public final class SegmentWriter {
    public let path: String
    private let output: SegmentOutput
    /// Where the segment starts in its file: 0, or its pack slot's offset.
    private let start: Int
    /// The most bytes the segment may take: its pack slot's size.
    private let capacity: Int?
    private let advertiserID: String
    private let version: UInt64
    private let hashKind: HashKind
    private let role: SegmentRole
    private let layout: SegmentLayout
    private let bits: Int
    /// `layout.stride` and `layout.dropped * 8`, for the append loops.
    private let stride: Int
    private let droppedBits: UInt64
    private var fd: Int32
    /// Keys waiting to be written, already in file byte order.
    private let buffer: UnsafeMutableRawPointer
    private var buffered = 0
    private var bucketCounts: [UInt64]
    private var keysHash = XXH64()
    private var count = 0
    private var last: Key16?
    private var first: Key16?
    private static let bufferSize = 1 << 20

    /// - Parameters:
    ///   - estimatedKeys: an upper bound on the keys to come; it sizes the
    ///     index (a lower real count only makes buckets smaller).
    ///   - durable: sync the file and its folder before the rename; off only
    ///     for scratch files that a crash may lose.
    ///   - formatVersion: the segment format to write (docs/STORAGE.md):
    ///     the current one unless a reader of the old one must read it.
    ///   - hashKind: what the keys are hashes of, kept in the header.
    ///   - role: members of a list, or a delta's adds or removes (written
    ///     as format version 4, `SegmentFormat.roleVersion`).
    public convenience init(path: String, advertiserID: String, version: UInt64, estimatedKeys: Int,
                            durable: Bool = true, formatVersion: UInt16 = SegmentFormat.version,
                            hashKind: HashKind = .md5, role: SegmentRole = .members) throws(SegmentError) {
        try Self.check(advertiserID: advertiserID, path: path)
        let layout = try Self.layout(forKeys: estimatedKeys, version: formatVersion, hashKind: hashKind, role: role, path: path)
        let (file, fd) = try TemporaryFile.create(for: path, durable: durable)
        try self.init(path: path, advertiserID: advertiserID, version: version, hashKind: hashKind, role: role,
                      layout: layout, output: .file(file), fd: fd, start: 0, capacity: nil)
    }

    /// Writes the segment into `slot` of a pack file (`PackFile.reserve`),
    /// sized for `estimatedKeys`: more keys than that are refused rather
    /// than written over the next slot.
    public convenience init(slot: PackSlot, advertiserID: String, version: UInt64, estimatedKeys: Int,
                            hashKind: HashKind = .md5) throws(SegmentError) {
        try Self.check(advertiserID: advertiserID, path: slot.path)
        let layout = try Self.layout(forKeys: estimatedKeys, version: SegmentFormat.version, hashKind: hashKind, role: .members, path: slot.path)
        guard layout.fileSize(keys: estimatedKeys) <= slot.capacity else {
            throw SegmentError(slot.path, "a slot of \(slot.capacity) bytes cannot hold \(estimatedKeys) keys")
        }
        let fd = open(slot.path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SegmentError(slot.path, "cannot open the pack: \(String(cString: strerror(errno)))") }
        try self.init(path: slot.path, advertiserID: advertiserID, version: version, hashKind: hashKind, role: .members,
                      layout: layout, output: .slot(slot), fd: fd, start: slot.offset, capacity: slot.capacity)
    }

    private init(path: String, advertiserID: String, version: UInt64, hashKind: HashKind, role: SegmentRole, layout: SegmentLayout,
                 output: SegmentOutput, fd: Int32, start: Int, capacity: Int?) throws(SegmentError) {
        self.path = path
        self.advertiserID = advertiserID
        self.version = version
        self.hashKind = hashKind
        self.role = role
        self.layout = layout
        self.bits = layout.bits
        self.stride = layout.stride
        self.droppedBits = UInt64(layout.dropped * 8)
        self.bucketCounts = [UInt64](repeating: 0, count: 1 << layout.bits)
        self.output = output
        self.fd = fd
        self.start = start
        self.capacity = capacity
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 16)
        try seekToKeys()
    }

    /// The layout for `n` keys in format `version`; a list of another hash
    /// type than MD5 takes version 3 (the layout of 2, `SegmentFormat.hashKinddVersion`),
    /// a delta's overlay version 4 (the same layout, `SegmentFormat.roleVersion`).
    private static func layout(forKeys n: Int, version: UInt16, hashKind: HashKind, role: SegmentRole, path: String) throws(SegmentError) -> SegmentLayout {
        let layout = SegmentLayout.forKeys(n, version: version >= SegmentFormat.hashKinddVersion ? SegmentFormat.version : version)
        let needed = role != .members ? SegmentFormat.roleVersion : hashKind != .md5 ? SegmentFormat.hashKinddVersion : layout.version
        guard needed != layout.version else { return layout }
        guard layout.version == 2 else {
            throw SegmentError(path, "a \(hashKind) \(role) segment needs format version \(needed), which holds at most \(UInt32.max) keys")
        }
        return SegmentLayout(version: needed, bits: layout.bits, dropped: layout.dropped)
    }

    private static func check(advertiserID: String, path: String) throws(SegmentError) {
        guard advertiserID.utf8.count <= SegmentFormat.maxAdvertiserIDLength else {
            throw SegmentError(path, "advertiser id longer than \(SegmentFormat.maxAdvertiserIDLength) bytes")
        }
    }

    private func seekToKeys() throws(SegmentError) {
        let keysStart = off_t(start + layout.keysOffset)
        guard lseek(fd, keysStart, SEEK_SET) == keysStart else {
            let reason = String(cString: strerror(errno))
            discard()
            throw SegmentError(path, "cannot seek: \(reason)")
        }
    }

    public var keyCount: Int { count }

    /// Adds the next key; it must be greater than the one before.
    @inline(__always)
    public func append(_ key: Key16) throws(SegmentError) {
        if let last, !(last < key) {
            throw SegmentError(path, last == key ? "duplicate key \(key)" : "key \(key) is out of order after \(last)")
        }
        if first == nil { first = key }
        last = key
        count += 1
        bucketCounts[bits == 0 ? 0 : Int(key.hi >> UInt64(64 - bits))] += 1
        store(key, at: buffer + buffered)
        buffered += stride
        if Self.bufferSize - buffered < stride { try flush() }
    }

    /// Writes the key less its dropped leading bytes: `stride` bytes, as
    /// two big-endian words that overlap when stride < 16 (the overlap is
    /// the same bytes both times).
    @inline(__always)
    private func store(_ key: Key16, at p: UnsafeMutableRawPointer) {
        let a = droppedBits == 0 ? key.hi : key.hi << droppedBits | key.lo >> (64 - droppedBits)
        p.storeBytes(of: a.bigEndian, as: UInt64.self)
        p.storeBytes(of: key.lo.bigEndian, toByteOffset: stride - 8, as: UInt64.self)
    }

    /// Adds keys in increasing order: the bulk form of `append(_:)`. One
    /// pass checks the order, counts index buckets and copies the keys out in
    /// file byte order.
    public func append(contentsOf keys: UnsafeBufferPointer<Key16>) throws(SegmentError) {
        guard !keys.isEmpty else { return }
        var previous = last
        var i = 0
        let shift = UInt64(64 - bits)
        while i < keys.count {
            let n = min(keys.count - i, (Self.bufferSize - buffered) / stride)
            let out = buffer + buffered
            var outOfOrder: Int?
            bucketCounts.withUnsafeMutableBufferPointer { buckets in
                for j in 0..<n {
                    let key = keys[i + j]
                    if let p = previous, !(p < key) {
                        outOfOrder = i + j
                        return
                    }
                    previous = key
                    buckets[bits == 0 ? 0 : Int(key.hi >> shift)] += 1
                    store(key, at: out + j &* stride)
                }
            }
            if let bad = outOfOrder {
                let before = bad == 0 ? last! : keys[bad - 1]
                throw SegmentError(path, before == keys[bad] ? "duplicate key \(keys[bad])" : "key \(keys[bad]) is out of order after \(before)")
            }
            if first == nil { first = keys[0] }
            last = previous
            count += n
            buffered += n * stride
            i += n
            if Self.bufferSize - buffered < stride { try flush() }
        }
    }

    private func flush() throws(SegmentError) {
        guard buffered > 0 else { return }
        if let capacity, layout.fileSize(keys: count) > capacity {
            throw SegmentError(path, "\(count) keys overflow the \(capacity)-byte slot at \(start)")
        }
        let bytes = UnsafeRawBufferPointer(start: buffer, count: buffered)
        keysHash.update(bytes)
        try writeAll(bytes, at: nil)
        buffered = 0
    }

    private func writeAll(_ bytes: [UInt8], at offset: Int?) throws(SegmentError) {
        let result = bytes.withUnsafeBytes { b -> SegmentError? in
            do throws(SegmentError) { try writeAll(b, at: offset) } catch { return error }
            return nil
        }
        if let result { throw result }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int?) throws(SegmentError) {
        try AtomicFile.writeAll(fd, bytes, at: offset.map { start + $0 }, path: path)
    }

    /// Writes the index and header, syncs, and renames the file into place.
    public func finish() throws(SegmentError) -> SegmentInfo {
        let written = try seal()
        try written.commit()
        return written.info
    }

    /// Writes the index and header and closes the file, which stays under
    /// its temporary name until `commit()`: syncing is disk time, which a
    /// caller can spend on other work.
    public func seal() throws(SegmentError) -> UncommittedSegment {
        do throws(SegmentError) {
            try flush()
            // Index entry i: the number of keys in buckets before i; entry 2^bits = n.
            var index = [UInt8](repeating: 0, count: layout.indexBytes)
            var running: UInt64 = 0
            let wide = layout.indexEntryBytes == 8
            index.withUnsafeMutableBytes { out in
                for i in 0...bucketCounts.count {
                    if wide {
                        out.storeBytes(of: running.littleEndian, toByteOffset: i * 8, as: UInt64.self)
                    } else {
                        out.storeBytes(of: UInt32(truncatingIfNeeded: running).littleEndian, toByteOffset: i * 4, as: UInt32.self)
                    }
                    if i < bucketCounts.count { running += bucketCounts[i] }
                }
            }
            try writeAll(index, at: SegmentFormat.headerSize)

            var header = [UInt8](repeating: 0, count: SegmentFormat.headerSize)
            let indexHash = index.withUnsafeBytes { XXH64.hash($0) }
            let keysHashValue = keysHash.finalize()
            header.withUnsafeMutableBytes { h in
                h.storeBytes(of: SegmentFormat.magic.littleEndian, toByteOffset: SegmentFormat.magicOffset, as: UInt32.self)
                h.storeBytes(of: layout.version.littleEndian, toByteOffset: SegmentFormat.versionOffset, as: UInt16.self)
                h.storeBytes(of: UInt8(bits), toByteOffset: SegmentFormat.indexBitsOffset, as: UInt8.self)
                h.storeBytes(of: UInt8(layout.dropped), toByteOffset: SegmentFormat.droppedBytesOffset, as: UInt8.self)
                h.storeBytes(of: UInt64(count).littleEndian, toByteOffset: SegmentFormat.keyCountOffset, as: UInt64.self)
                h.storeBytes(of: version.littleEndian, toByteOffset: SegmentFormat.listVersionOffset, as: UInt64.self)
                h.storeBytes(of: indexHash.littleEndian, toByteOffset: SegmentFormat.indexChecksumOffset, as: UInt64.self)
                h.storeBytes(of: keysHashValue.littleEndian, toByteOffset: SegmentFormat.keysChecksumOffset, as: UInt64.self)
                let id = Array(advertiserID.utf8)
                h.storeBytes(of: UInt16(id.count).littleEndian, toByteOffset: SegmentFormat.advertiserLengthOffset, as: UInt16.self)
                for (i, byte) in id.enumerated() { h[SegmentFormat.advertiserOffset + i] = byte }
                h[SegmentFormat.hashKindOffset] = hashKind.rawValue
                h[SegmentFormat.roleOffset] = role.rawValue
                let headerHash = XXH64.hash(UnsafeRawBufferPointer(rebasing: h[..<SegmentFormat.headerChecksumOffset]))
                h.storeBytes(of: headerHash.littleEndian, toByteOffset: SegmentFormat.headerChecksumOffset, as: UInt64.self)
            }
            try writeAll(header, at: 0)
            close(fd)
            fd = -1
            let info = SegmentInfo(path: path, advertiserID: advertiserID, version: version, keyCount: count,
                                   indexBits: bits, firstKey: first, lastKey: last, hashKind: hashKind, role: role)
            let slice = capacity == nil ? nil : SegmentLocation.Slice(offset: start, length: layout.fileSize(keys: count))
            return UncommittedSegment(info: info, slice: slice, output: output)
        } catch {
            discard()
            throw error
        }
    }

    /// Abandons the segment: nothing appears at `path` (or its slot).
    public func discard() {
        if fd >= 0 { close(fd) }
        fd = -1
        output.discard()
    }

    deinit {
        if fd >= 0 {
            close(fd)
            output.discard()
        }
        buffer.deallocate()
    }
}

/// Where a writer's bytes go.
enum SegmentOutput: Sendable {
    /// A file of its own, renamed into place on commit.
    case file(TemporaryFile)
    /// A slot of a pack file, synced on commit.
    case slot(PackSlot)

    func commit() throws(SegmentError) {
        switch self {
        case .file(let file):
            try file.commit()
        case .slot(let slot):
            // Writes this slot's pages and waits for them, and only them:
            // an fdatasync here would also flush the slots other merges of
            // the version are writing into the same pack, and measured, it
            // made the merge phase of a 1 GB list 25% slower. The pack's
            // metadata is made durable once, before the version is
            // published (`SegmentStorage.makeDurable`).
            try FileIO.sync(slot.path, .range(offset: slot.offset, length: slot.capacity), name: slot.path)
        }
    }

    func discard() {
        switch self {
        case .file(let file):
            file.discard()
        case .slot(let slot):
            FileIO.punchHole(slot.path, offset: slot.offset, length: slot.capacity)
        }
    }
}

/// A segment written in full under a temporary name (`SegmentWriter.seal()`).
public struct UncommittedSegment: Sendable {
    public let info: SegmentInfo
    /// Where in its pack the segment lies; nil for a file of its own.
    public let slice: SegmentLocation.Slice?
    let output: SegmentOutput

    /// Syncs the segment (when durable) and renames it into place, so that
    /// after a crash it is either whole at its path or absent; a slot is
    /// synced. On failure a temporary file is removed.
    public func commit() throws(SegmentError) {
        try output.commit()
    }

    /// Abandons it: nothing appears at its path.
    public func discard() {
        output.discard()
    }
}

extension SegmentWriter {
    /// Writes `keys` (sorted, unique) as one segment.
    public static func create(_ keys: some Sequence<Key16>, count: Int, at path: String, advertiserID: String,
                             version: UInt64, formatVersion: UInt16 = SegmentFormat.version,
                             hashKind: HashKind = .md5, role: SegmentRole = .members) throws(SegmentError) -> SegmentInfo {
        let writer = try SegmentWriter(path: path, advertiserID: advertiserID, version: version, estimatedKeys: count,
                                       formatVersion: formatVersion, hashKind: hashKind, role: role)
        for key in keys { try writer.append(key) }
        return try writer.finish()
    }

    /// Writes sorted, unique `keys` as one segment, in bulk.
    public static func create(_ keys: UnsafeBufferPointer<Key16>, at path: String, advertiserID: String,
                             version: UInt64, durable: Bool = true,
                             formatVersion: UInt16 = SegmentFormat.version,
                             hashKind: HashKind = .md5, role: SegmentRole = .members) throws(SegmentError) -> SegmentInfo {
        let writer = try SegmentWriter(path: path, advertiserID: advertiserID, version: version, estimatedKeys: keys.count,
                                       durable: durable, formatVersion: formatVersion, hashKind: hashKind, role: role)
        do {
            try writer.append(contentsOf: keys)
        } catch {
            writer.discard()
            throw error
        }
        return try writer.finish()
    }
}

