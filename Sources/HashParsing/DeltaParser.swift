import HexDigits
import SegmentStore

/// Reads a delta file (docs/INGEST.md): one change a line, `+<hash>` adds a
/// member, `-<hash>` removes one, on bytes.
///
/// The hash after the sign follows the list rules (`LineParser`: either
/// case, spaces around it, a byte-order mark, blank lines and a header line
/// skipped). The file's type is the one most of its signed lines have
/// (MD5 on a tie), as `HashSniffer` finds a list's. A key named by several
/// lines takes the last one's sign: a remove then an add leaves it a member.
/// A line without a sign is invalid (`malformed`): a delta cannot be read
/// as a list by mistake, nor a list as a delta.
public enum DeltaParser {
    public struct Parsed: Sendable {
        /// Sorted, distinct; no key is in both.
        public var adds: [Key16] = []
        public var removes: [Key16] = []
        public var stats = BlockStats()
        public var hashKind: HashKind = .md5
    }

    /// How many invalid lines are kept as samples (as `BlockParser` keeps).
    static let sampleLimit = 10

    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Parsed {
        var parsed = Parsed()
        parsed.hashKind = kind(of: bytes)
        // The last sign for each key, in line order.
        var last: [Key16: Bool] = [:]
        var index = 0
        forEachLine(bytes) { line, isFirst in
            defer { index += 1 }
            parsed.stats.lines += 1
            var s = 0
            if isFirst, line.count >= 3, line[0] == 0xEF, line[1] == 0xBB, line[2] == 0xBF { s = 3 }
            while s < line.count, LineParser.isSpace(line[s]) { s += 1 }
            let rest = UnsafeRawBufferPointer(rebasing: line[s...])
            let sign = rest.first
            guard sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else {
                switch LineParser.parse(rest, isFirstLineOfFile: isFirst, hashKind: parsed.hashKind) {
                case .skipped: parsed.stats.skipped += 1
                case .key, .invalid(.malformed): invalid(.malformed, at: index, in: &parsed.stats)
                case .invalid(let kind): invalid(kind, at: index, in: &parsed.stats)
                }
                return
            }
            switch LineParser.parse(UnsafeRawBufferPointer(rebasing: rest.dropFirst()), isFirstLineOfFile: false, hashKind: parsed.hashKind) {
            case .key(let key):
                parsed.stats.keys += 1
                last[key] = sign == UInt8(ascii: "+")
            case .skipped: invalid(.malformed, at: index, in: &parsed.stats)
            case .invalid(let kind): invalid(kind, at: index, in: &parsed.stats)
            }
        }
        for (key, adds) in last {
            if adds { parsed.adds.append(key) } else { parsed.removes.append(key) }
        }
        parsed.adds.sort()
        parsed.removes.sort()
        return parsed
    }

    private static func invalid(_ kind: InvalidLineKind, at index: Int, in stats: inout BlockStats) {
        stats.invalid[kind, default: 0] += 1
        if stats.samples.count < sampleLimit { stats.samples.append(InvalidLineSample(lineInBlock: index, kind: kind)) }
    }

    /// The type most signed lines have: MD5 on a tie or with none.
    static func kind(of bytes: UnsafeRawBufferPointer) -> HashKind {
        var counts: [HashKind: Int] = [:]
        forEachLine(bytes) { line, _ in
            var s = 0, e = line.count
            while s < e, LineParser.isSpace(line[s]) { s += 1 }
            while e > s, LineParser.isSpace(line[e - 1]) { e -= 1 }
            guard s < e, line[s] == UInt8(ascii: "+") || line[s] == UInt8(ascii: "-") else { return }
            let digits = e - s - 1
            guard let type = HashKind.allCases.first(where: { $0.hexDigits == digits }),
                  line[(s + 1)..<e].allSatisfy(HexDigits.isHexDigit) else { return }
            counts[type, default: 0] += 1
        }
        return counts[.sha256, default: 0] > counts[.md5, default: 0] ? .sha256 : .md5
    }

    /// Calls `body` with each line (without its `\n`) and whether it is the first.
    private static func forEachLine(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer, Bool) -> Void) {
        var start = 0
        var first = true
        while start < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[start...])
            let end = rest.firstIndex(of: 0x0A) ?? rest.count
            body(UnsafeRawBufferPointer(rebasing: rest[..<end]), first)
            first = false
            start += end + 1
        }
    }
}
