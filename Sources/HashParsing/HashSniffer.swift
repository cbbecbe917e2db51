import DataLake
import HexDigits
import SegmentStore

/// Says which hash type a list file holds, from its first bytes.
///
/// A file holds one type (docs/INGEST.md). Every block of a file is parsed
/// by its own worker, and each must treat the same lines as valid, so each
/// reads the same head of the file (pinned by its etag) and decides the
/// same way: among the lines that start in the first `headBytes`, the type
/// with more lines of its exact length in hex digits (32 for MD5, 64 for
/// SHA-256) wins, MD5 on a tie or with none. Lines of the other type then
/// count as invalid (`wrongHashType`) against the file's invalid-line
/// threshold, so a file that mixes the two in earnest is rejected, while
/// one stray line of the other type near the top does not flip it.
public enum HashSniffer {
    /// How much of the file is read: a thousand-odd lines of either type.
    public static let headBytes = 64 << 10

    /// The type of the hashes in `object`.
    public static func detect(_ lake: some DataLake, object: LakeObject) async throws -> HashKind {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: headBytes, alignment: 16)
        defer { buffer.deallocate() }
        var filled = 0
        while filled < headBytes {
            let n = try await lake.read(object.path, offset: Int64(filled),
                                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), ifMatch: object.etag)
            if n == 0 { break }
            filled += n
        }
        return detect(head: UnsafeRawBufferPointer(rebasing: buffer[..<filled]), isWholeFile: filled < headBytes)
    }

    /// The type of the hashes in `head`, the first bytes of a file (all of
    /// it when `isWholeFile`; otherwise its last, unfinished line is not looked at).
    public static func detect(head: UnsafeRawBufferPointer, isWholeFile: Bool) -> HashKind {
        var counts: [HashKind: Int] = [:]
        var start = 0
        while start < head.count {
            let rest = UnsafeRawBufferPointer(rebasing: head[start...])
            guard let newline = rest.firstIndex(of: 0x0A) else {
                if isWholeFile { count(rest, into: &counts) }
                break
            }
            count(UnsafeRawBufferPointer(rebasing: rest[..<newline]), into: &counts)
            start += newline + 1
        }
        return counts[.sha256, default: 0] > counts[.md5, default: 0] ? .sha256 : .md5
    }

    private static func count(_ line: UnsafeRawBufferPointer, into counts: inout [HashKind: Int]) {
        var s = 0, e = line.count
        while s < e, LineParser.isSpace(line[s]) { s += 1 }
        while e > s, LineParser.isSpace(line[e - 1]) { e -= 1 }
        guard let type = HashKind.allCases.first(where: { $0.hexDigits == e - s }),
              line[s..<e].allSatisfy(HexDigits.isHexDigit) else { return }
        counts[type, default: 0] += 1
    }
}
