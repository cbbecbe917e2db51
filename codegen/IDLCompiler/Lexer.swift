/// A lexical token of the schema language.
struct Token: Equatable {
    enum Kind: Equatable {
        case identifier(String)
        case integer(UInt64)
        case string(String)
        /// One of `{ } ( ) < > [ ] ; , = . -`.
        case symbol(Character)
        case endOfFile
    }

    var kind: Kind
    var location: SourceLocation
    /// The `///` or `/** */` comment lines directly before this token.
    var doc: [String]

    /// How the token reads in an error message.
    var display: String {
        switch kind {
        case .identifier(let s): return "'\(s)'"
        case .integer(let n): return "'\(n)'"
        case .string(let s): return "string \"\(s)\""
        case .symbol(let c): return "'\(c)'"
        case .endOfFile: return "end of file"
        }
    }
}

/// Turns schema text into tokens.
///
/// Comments are dropped, except doc comments (`///` and `/** */`), which are
/// attached to the token that follows them so the parser can hand them to the
/// declaration they document. Errors (an unterminated comment or string, a
/// stray character) are reported and lexing goes on, so one run shows them all.
struct Lexer {
    private let bytes: [UInt8]
    private let file: String
    private var index = 0
    private var line = 1
    private var lineStart = 0
    private var pendingDoc: [String] = []
    private(set) var sink = DiagnosticSink()

    init(text: String, file: String) {
        self.bytes = Array(text.utf8)
        self.file = file
    }

    private var location: SourceLocation {
        SourceLocation(file: file, line: line, column: index - lineStart + 1)
    }

    private func peek(_ offset: Int = 0) -> UInt8? {
        index + offset < bytes.count ? bytes[index + offset] : nil
    }

    private mutating func advance() {
        if bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        index += 1
    }

    mutating func tokenize() -> [Token] {
        var tokens: [Token] = []
        while true {
            let token = next()
            tokens.append(token)
            if token.kind == .endOfFile { return tokens }
        }
    }

    private mutating func next() -> Token {
        skipTrivia()
        let start = location
        guard let c = peek() else { return make(.endOfFile, start) }

        if isIdentifierStart(c) {
            let from = index
            while let d = peek(), isIdentifierStart(d) || isDigit(d) { advance() }
            return make(.identifier(String(decoding: bytes[from..<index], as: UTF8.self)), start)
        }
        if isDigit(c) { return lexInteger(start) }
        if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") { return lexString(start) }
        if "{}()<>[];,=.-".utf8.contains(c) {
            advance()
            return make(.symbol(Character(Unicode.Scalar(c))), start)
        }
        // Skip the whole (possibly multi-byte) character and keep going.
        let from = index
        advance()
        while let d = peek(), d & 0xC0 == 0x80 { advance() }
        sink.error(start, "unexpected character '\(String(decoding: bytes[from..<index], as: UTF8.self))'")
        return next()
    }

    private mutating func make(_ kind: Token.Kind, _ location: SourceLocation) -> Token {
        defer { pendingDoc = [] }
        return Token(kind: kind, location: location, doc: pendingDoc)
    }

    private mutating func lexInteger(_ start: SourceLocation) -> Token {
        let from = index
        var radix: UInt64 = 10
        if peek() == UInt8(ascii: "0"), let x = peek(1), x == UInt8(ascii: "x") || x == UInt8(ascii: "X") {
            radix = 16
            advance(); advance()
        }
        var value: UInt64 = 0
        var overflow = false
        var digits = 0
        while let d = peek(), let digit = digitValue(d), digit < radix {
            let (m, o1) = value.multipliedReportingOverflow(by: radix)
            let (a, o2) = m.addingReportingOverflow(digit)
            overflow = overflow || o1 || o2
            value = a
            digits += 1
            advance()
        }
        if let d = peek(), isIdentifierStart(d) || isDigit(d) {
            while let d = peek(), isIdentifierStart(d) || isDigit(d) { advance() }
            sink.error(start, "malformed number '\(String(decoding: bytes[from..<index], as: UTF8.self))'")
        } else if digits == 0 {
            sink.error(start, "malformed number '\(String(decoding: bytes[from..<index], as: UTF8.self))'")
        } else if overflow {
            sink.error(start, "number '\(String(decoding: bytes[from..<index], as: UTF8.self))' is too large")
            value = .max
        }
        return make(.integer(value), start)
    }

    private mutating func lexString(_ start: SourceLocation) -> Token {
        let quote = bytes[index]
        advance()
        var out: [UInt8] = []
        while let c = peek() {
            if c == quote {
                advance()
                return make(.string(String(decoding: out, as: UTF8.self)), start)
            }
            if c == UInt8(ascii: "\n") { break }
            if c == UInt8(ascii: "\\"), let e = peek(1) {
                advance(); advance()
                switch e {
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "'"): out.append(e)
                default:
                    sink.error(start, "unknown escape '\\\(Character(Unicode.Scalar(e)))' in string")
                }
                continue
            }
            out.append(c)
            advance()
        }
        sink.error(start, "unterminated string; expected a closing \(quote == UInt8(ascii: "\"") ? "'\"'" : "\"'\"") before the end of the line")
        return make(.string(String(decoding: out, as: UTF8.self)), start)
    }

    /// Skips white space and comments, collecting doc comments on the way.
    private mutating func skipTrivia() {
        while let c = peek() {
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\r") || c == UInt8(ascii: "\n") {
                advance()
            } else if c == UInt8(ascii: "/"), peek(1) == UInt8(ascii: "/") {
                let isDoc = peek(2) == UInt8(ascii: "/") && peek(3) != UInt8(ascii: "/")
                let from = index + (isDoc ? 3 : 2)
                while let d = peek(), d != UInt8(ascii: "\n") { advance() }
                if isDoc {
                    var text = String(decoding: bytes[from..<index], as: UTF8.self)
                    if text.hasPrefix(" ") { text.removeFirst() }
                    pendingDoc.append(text.trimmingTrailingWhitespace())
                }
            } else if c == UInt8(ascii: "/"), peek(1) == UInt8(ascii: "*") {
                let start = location
                let isDoc = peek(2) == UInt8(ascii: "*") && peek(3) != UInt8(ascii: "/")
                advance(); advance()
                let from = index
                var closed = false
                while let d = peek() {
                    if d == UInt8(ascii: "*"), peek(1) == UInt8(ascii: "/") {
                        closed = true
                        break
                    }
                    advance()
                }
                let body = String(decoding: bytes[from..<index], as: UTF8.self)
                if closed { advance(); advance() } else {
                    sink.error(start, "unterminated comment; expected '*/' before the end of the file")
                }
                if isDoc { pendingDoc = Lexer.blockDocLines(body) }
            } else {
                return
            }
        }
    }

    /// The lines of a `/** ... */` comment without the leading `*` decoration.
    static func blockDocLines(_ body: String) -> [String] {
        var text = Substring(body)
        if text.hasPrefix("*") { text.removeFirst() }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { raw -> String in
            var s = raw.drop { $0 == " " || $0 == "\t" }
            if s.hasPrefix("*") { s.removeFirst(); if s.hasPrefix(" ") { s.removeFirst() } }
            return String(s).trimmingTrailingWhitespace()
        }
        while lines.first?.isEmpty == true { lines.removeFirst() }
        while lines.last?.isEmpty == true { lines.removeLast() }
        return lines
    }

    private func isIdentifierStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_")
    }

    private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    private func digitValue(_ c: UInt8) -> UInt64? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt64(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt64(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt64(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s.removeLast() }
        return String(s)
    }
}
