#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DataLake
import HexDigits
import SegmentStore

/// A byte range of one lake object: the unit a worker leases.
public struct BlockRange: Sendable, Hashable {
    public var start: Int64
    public var end: Int64

    public init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
    }

    /// Splits a file of `size` bytes into blocks of `blockSize` (the last one shorter).
    public static func split(size: Int64, blockSize: Int64) -> [BlockRange] {
        precondition(blockSize > 0)
        guard size > 0 else { return [BlockRange(start: 0, end: 0)] }
        return stride(from: Int64(0), to: size, by: Int(blockSize)).map { BlockRange(start: $0, end: min(size, $0 + blockSize)) }
    }
}

/// What parsing one block found.
public struct BlockStats: Sendable, Equatable {
    /// Lines that start in the block (blank and header lines included).
    public var lines = 0
    public var keys = 0
    public var skipped = 0
    public var invalid: [InvalidLineKind: Int] = [:]
    /// The first few invalid lines: their index among the block's lines
    /// (0-based; the coordinator adds the lines of earlier blocks to make
    /// file line numbers) and kind. Their content is never kept.
    public var samples: [InvalidLineSample] = []

    public init() {}

    public var invalidCount: Int { invalid.values.reduce(0, +) }
}

public struct InvalidLineSample: Sendable, Hashable {
    public var lineInBlock: Int
    public var kind: InvalidLineKind
}

/// Reads the records of one block from the lake.
///
/// **The boundary rule.** A line *starts* at offset 0 and right after every
/// `\n`. A block `[start, end)` owns exactly the lines that start inside it,
/// and reads each of them to its end, even past `end`. So a line cut by a
/// block boundary belongs to the block where its first byte is, and the
/// next block skips its tail: every record belongs to exactly one block,
/// whatever the block size or offsets.
public struct BlockParser: Sendable {
    public var chunkSize: Int
    /// Lines longer than this are malformed; their bytes are skipped, not buffered.
    public var maxLineLength: Int
    public var maxSamples: Int

    public init(chunkSize: Int = 4 << 20, maxLineLength: Int = 4096, maxSamples: Int = 10) {
        self.chunkSize = chunkSize
        self.maxLineLength = maxLineLength
        self.maxSamples = maxSamples
    }

    /// Parses the lines `block` owns in `object`, appending every valid key
    /// to `keys` in file order: the fast path workers use.
    ///
    /// Lines are read straight out of each chunk the lake returns; only a
    /// line cut by a chunk boundary is copied. A line of exactly 32 hex
    /// digits (optionally followed by CR) is decoded inline; anything else
    /// goes through `LineParser`, which knows the rules for whitespace,
    /// headers and invalid lines.
    ///
    /// `hashKind` is the file's (`HashSniffer`): lines holding a hash of
    /// the other type are invalid (`wrongHashType`).
    public func parse(
        _ lake: some DataLake, object: LakeObject, block: BlockRange, hashKind: HashKind = .md5, into keys: inout [Key16]
    ) async throws -> BlockStats {
        var state = LineState(maxLineLength: maxLineLength, maxSamples: maxSamples, lineStart: block.start, hashKind: hashKind)
        var position = max(0, block.start - 1)
        // Before the first owned line: skip to just after the first '\n' at or after start-1.
        var seekingLineStart = block.start > 0
        // One buffer for the whole block, refilled chunk by chunk.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            if !seekingLineStart && state.lineStart >= block.end { break }
            let filled = try await lake.read(object.path, offset: position, into: buffer, ifMatch: object.etag)
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<filled])
            if chunk.isEmpty {
                // End of the object: a last line without '\n' still counts.
                if !seekingLineStart && state.hasPending && state.lineStart < block.end { state.finishPending(into: &keys) }
                break
            }
            let done = { (raw: UnsafeRawBufferPointer) -> Bool in
                let base = raw.baseAddress!
                let count = raw.count
                var i = 0
                if seekingLineStart {
                    guard let nl = memchr(base, 0x0A, count) else { return false }
                    i = base.distance(to: UnsafeRawPointer(nl)) + 1
                    seekingLineStart = false
                    state.lineStart = position + Int64(i)
                    if state.lineStart >= block.end { return true }
                }
                while i < count {
                    // The common case first: a line of 32 (or 64) hex digits
                    // ending in '\n', wholly in this chunk, not the file's first line.
                    if !state.hasPending && state.lineStart != 0 {
                        let (parsed, next) = hashKind == .md5
                            ? HexKey.run(base, from: i, count: count, position: position, end: block.end, hashKind: .md5, into: &keys)
                            : HexKey.run(base, from: i, count: count, position: position, end: block.end, hashKind: .sha256, into: &keys)
                        if parsed > 0 {
                            state.stats.keys += parsed
                            state.stats.lines += parsed
                            i = next
                            state.lineStart = position + Int64(i)
                            if state.lineStart >= block.end { return true }
                            continue
                        }
                    }
                    guard let found = memchr(base + i, 0x0A, count - i) else {
                        state.carry(UnsafeRawBufferPointer(start: base + i, count: count - i))
                        return false
                    }
                    let e = base.distance(to: UnsafeRawPointer(found))
                    if state.hasPending {
                        state.carry(UnsafeRawBufferPointer(start: base + i, count: e - i))
                        state.finishPending(into: &keys)
                    } else {
                        state.line(UnsafeRawBufferPointer(start: base + i, count: e - i), into: &keys)
                    }
                    i = e + 1
                    state.lineStart = position + Int64(i)
                    if state.lineStart >= block.end { return true }
                }
                return false
            }(chunk)
            if done { break }
            position += Int64(chunk.count)
        }
        return state.stats
    }
}

/// The per-line work of `BlockParser`, and the one line carried across chunks.
struct LineState {
    let maxLineLength: Int
    let maxSamples: Int
    let hashKind: HashKind
    /// File offset where the current line starts.
    var lineStart: Int64
    var stats = BlockStats()
    private var pending: [UInt8] = []
    private var overlong = false
    private var overlongHasAt = false

    init(maxLineLength: Int, maxSamples: Int, lineStart: Int64, hashKind: HashKind) {
        self.maxLineLength = maxLineLength
        self.maxSamples = maxSamples
        self.hashKind = hashKind
        self.lineStart = lineStart
        pending.reserveCapacity(maxLineLength)
    }

    var hasPending: Bool { !pending.isEmpty || overlong }

    /// Keeps part of a line that continues in the next chunk. Past
    /// `maxLineLength` the bytes are dropped (only whether they held an '@').
    mutating func carry(_ bytes: UnsafeRawBufferPointer) {
        if !overlong && pending.count + bytes.count <= maxLineLength {
            pending.append(contentsOf: bytes)
            return
        }
        if !overlong {
            overlong = true
            overlongHasAt = pending.contains(UInt8(ascii: "@"))
            pending.removeAll(keepingCapacity: true)
        }
        if !overlongHasAt, bytes.contains(UInt8(ascii: "@")) { overlongHasAt = true }
    }

    mutating func finishPending(into keys: inout [Key16]) {
        if overlong {
            record(.invalid(overlongHasAt ? .unhashedEmail : .malformed), into: &keys)
        } else {
            let line = pending
            line.withUnsafeBytes { self.line($0, into: &keys) }
        }
        pending.removeAll(keepingCapacity: true)
        overlong = false
        overlongHasAt = false
    }

    /// One whole line (without its '\n').
    @inline(__always)
    mutating func line(_ bytes: UnsafeRawBufferPointer, into keys: inout [Key16]) {
        let n = bytes.count, digits = hashKind.hexDigits
        if lineStart != 0, n == digits || (n == digits + 1 && bytes[digits] == 0x0D), let key = HexKey.decode(bytes.baseAddress!, hashKind) {
            keys.append(key)
            stats.keys += 1
            stats.lines += 1
            return
        }
        if n > maxLineLength {
            record(.invalid(memchr(bytes.baseAddress!, Int32(UInt8(ascii: "@")), n) != nil ? .unhashedEmail : .malformed), into: &keys)
            return
        }
        record(LineParser.parse(bytes, isFirstLineOfFile: lineStart == 0, hashKind: hashKind), into: &keys)
    }

    private mutating func record(_ result: ParsedLine, into keys: inout [Key16]) {
        switch result {
        case .key(let key):
            keys.append(key)
            stats.keys += 1
        case .skipped:
            stats.skipped += 1
        case .invalid(let kind):
            stats.invalid[kind, default: 0] += 1
            if stats.samples.count < maxSamples {
                stats.samples.append(InvalidLineSample(lineInBlock: stats.lines, kind: kind))
            }
        }
        stats.lines += 1
    }
}

/// Decodes a line's hex digits into its key without branches per digit.
enum HexKey {
    /// Decodes consecutive lines of exactly one hash and '\n' (33 or 65
    /// bytes) starting at `i`, until a line is not one or the block ends;
    /// returns how many and where the next line starts. Called with a
    /// constant `hashKind`, so each type gets its own loop.
    @inline(__always)
    static func run(_ base: UnsafeRawPointer, from start: Int, count: Int, position: Int64, end: Int64,
                    hashKind: HashKind, into keys: inout [Key16]) -> (Int, Int) {
        let length = hashKind.hexDigits + 1
        var i = start
        var n = 0
        while i + length <= count, base.load(fromByteOffset: i + length - 1, as: UInt8.self) == 0x0A, position + Int64(i) < end,
              let key = decode(base + i, hashKind) {
            keys.append(key)
            n += 1
            i += length
        }
        return (n, i)
    }

    /// The key of the hash whose `hashKind.hexDigits` hex digits are at
    /// `p`: an MD5 whole, a SHA-256's first 16 bytes (`HashKind`), its other
    /// 32 digits checked; nil if any digit is not a hex digit.
    @inline(__always)
    static func decode(_ p: UnsafeRawPointer, _ hashKind: HashKind) -> Key16? {
        guard let key = HexDigits.decode32(p) else { return nil }
        if hashKind == .sha256, HexDigits.decode32(p + 32) == nil { return nil }
        return Key16(hi: key.hi, lo: key.lo)
    }
}
