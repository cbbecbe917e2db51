import HexDigits
import SegmentStore

/// What is wrong with a line that is not a hash.
public enum InvalidLineKind: String, Sendable, Hashable, CaseIterable {
    /// A hash of another type than the file's (docs/INGEST.md): 32 hex
    /// digits (MD5), 40 (SHA-1) or 64 (SHA-256) where the file holds the other.
    case wrongHashType = "wrong_hash_type"
    /// Contains `@`: an email that was never hashed. Its content is never kept or logged.
    case unhashedEmail = "unhashed_email"
    /// Anything else that is not a hash.
    case malformed
}

/// The result of reading one line.
public enum ParsedLine: Equatable, Sendable {
    case key(Key16)
    /// Blank, or the file's header line: skipped, not counted as invalid.
    case skipped
    case invalid(InvalidLineKind)
}

/// Parses member-list lines, on bytes (never a `String` per line).
///
/// A valid line is a hash of the file's type (32 hex digits for MD5, 64
/// for SHA-256; `HashSniffer` says which) in either case, with optional surrounding
/// spaces, tabs and CR, and (at the start of the file) a UTF-8 byte-order
/// mark. Blank lines are skipped. The file's first line is skipped when it is
/// not a hash (a header such as `email_md5`), unless it looks like a hash of
/// another kind or an email, which are data errors, not headers.
public enum LineParser {
    @inline(__always)
    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0B || b == 0x0C }

    /// Parses the line `bytes[start..<end]` (without its `\n`) of a file of
    /// `hashKind`. `isFirstLineOfFile` enables the BOM and header rules.
    public static func parse(_ bytes: UnsafeRawBufferPointer, isFirstLineOfFile: Bool, hashKind: HashKind = .md5) -> ParsedLine {
        var s = 0
        var e = bytes.count
        if isFirstLineOfFile, e >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { s = 3 }
        while s < e, isSpace(bytes[s]) { s += 1 }
        while e > s, isSpace(bytes[e - 1]) { e -= 1 }
        let n = e - s
        if n == 0 { return .skipped }
        if n == hashKind.hexDigits, let key = HexKey.decode(bytes.baseAddress! + s, hashKind) { return .key(key) }
        let kind = classify(UnsafeRawBufferPointer(rebasing: bytes[s..<e]))
        if isFirstLineOfFile, kind == .malformed { return .skipped }
        return .invalid(kind)
    }

    static func classify(_ line: UnsafeRawBufferPointer) -> InvalidLineKind {
        if line.contains(UInt8(ascii: "@")) { return .unhashedEmail }
        if line.count == 32 || line.count == 40 || line.count == 64, line.allSatisfy(HexDigits.isHexDigit) { return .wrongHashType }
        return .malformed
    }
}
