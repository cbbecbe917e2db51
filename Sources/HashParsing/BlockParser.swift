import DataLake
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

    public init(chunkSize: Int = 1 << 20, maxLineLength: Int = 4096, maxSamples: Int = 10) {
        self.chunkSize = chunkSize
        self.maxLineLength = maxLineLength
        self.maxSamples = maxSamples
    }

    /// Parses the lines `block` owns in `object`, handing every valid key to
    /// `sink` in file order. Fails with `.changed` if the object changes
    /// while it is being read.
    public func parse(
        _ lake: some DataLake, object: LakeObject, block: BlockRange, sink: (Key16) throws -> Void
    ) async throws -> BlockStats {
        var stats = BlockStats()
        var position = max(0, block.start - 1)
        // Before the first owned line: skip to just after the first '\n' at or after start-1.
        var seekingLineStart = block.start > 0
        var lineStart = block.start
        var line: [UInt8] = []
        line.reserveCapacity(maxLineLength)
        var overlong = false
        var overlongHasAt = false
        var done = false

        func finishLine(_ parser: BlockParser) throws {
            let result: ParsedLine
            if overlong {
                result = .invalid(overlongHasAt ? .unhashedEmail : .malformed)
            } else {
                result = line.withUnsafeBytes { LineParser.parse($0, isFirstLineOfFile: lineStart == 0) }
            }
            switch result {
            case .key(let key):
                try sink(key)
                stats.keys += 1
            case .skipped:
                stats.skipped += 1
            case .invalid(let kind):
                stats.invalid[kind, default: 0] += 1
                if stats.samples.count < parser.maxSamples {
                    stats.samples.append(InvalidLineSample(lineInBlock: stats.lines, kind: kind))
                }
            }
            stats.lines += 1
            line.removeAll(keepingCapacity: true)
            overlong = false
            overlongHasAt = false
        }

        while !done {
            if !seekingLineStart && lineStart >= block.end { break }
            let chunk = try await lake.read(object.path, offset: position, length: chunkSize, ifMatch: object.etag)
            if chunk.isEmpty {
                // End of the object: a last line without '\n' still counts.
                if !seekingLineStart && (!line.isEmpty || overlong) && lineStart < block.end { try finishLine(self) }
                break
            }
            var i = 0
            while i < chunk.count {
                if seekingLineStart {
                    guard let nl = chunk[i...].firstIndex(of: UInt8(ascii: "\n")) else {
                        i = chunk.count
                        break
                    }
                    i = nl + 1
                    seekingLineStart = false
                    lineStart = position + Int64(i)
                    if lineStart >= block.end {
                        done = true
                        break
                    }
                    continue
                }
                // Inside an owned line: copy up to the next '\n'.
                let nl = chunk[i...].firstIndex(of: UInt8(ascii: "\n"))
                let stop = nl ?? chunk.count
                if !overlong {
                    if line.count + (stop - i) > maxLineLength {
                        overlong = true
                        overlongHasAt = line.contains(UInt8(ascii: "@"))
                        line.removeAll(keepingCapacity: true)
                    } else {
                        line.append(contentsOf: chunk[i..<stop])
                    }
                }
                if overlong, !overlongHasAt, chunk[i..<stop].contains(UInt8(ascii: "@")) { overlongHasAt = true }
                guard let nl else {
                    i = chunk.count
                    break
                }
                try finishLine(self)
                i = nl + 1
                lineStart = position + Int64(i)
                if lineStart >= block.end {
                    done = true
                    break
                }
            }
            position += Int64(chunk.count)
        }
        return stats
    }
}
