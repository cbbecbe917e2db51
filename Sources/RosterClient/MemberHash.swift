import Foundation

/// The 16-byte key of a member: the MD5 of the normalised email, as lists
/// in the lake hold it in hex.
public struct MemberHash: Hashable, Sendable, CustomStringConvertible {
    public let bytes: Data

    /// From 32 hex digits (either case; surrounding whitespace ignored).
    public init?(hex: some StringProtocol) {
        let text = hex.trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.utf8.count == 32 else { return nil }
        var out = Data(capacity: 16)
        var iterator = text.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            guard let h = Self.nibble(high), let l = Self.nibble(low) else { return nil }
            out.append(h << 4 | l)
        }
        bytes = out
    }

    /// From an email: trimmed, lowercased, then MD5.
    public init(email: String) {
        let normalised = email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        bytes = Data(MD5.digest(Array(normalised.utf8)))
    }

    public init?(bytes: Data) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var hex: String { bytes.map { String(format: "%02x", $0) }.joined() }
    public var description: String { hex }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
