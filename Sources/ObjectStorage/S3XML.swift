/// Reads the few XML documents S3 answers with (listings, errors, upload
/// ids, delete results): elements by name, text with the five predefined
/// entities and character references decoded. Not a general XML parser —
/// S3's answers have no attributes we need, no CDATA and no comments — and
/// kept small so that it can be read whole.
struct S3XML {
    let text: Substring

    init(_ bytes: [UInt8]) { text = Substring(String(decoding: bytes, as: UTF8.self)) }
    init(_ text: Substring) { self.text = text }

    /// The contents of every `<name>…</name>` (or `<name attr…>`) at any depth, in order.
    func all(_ name: String) -> [S3XML] {
        var out: [S3XML] = []
        var rest = text[...]
        let close = "</\(name)>"
        while let open = rest.range(of: "<\(name)") {
            let after = rest[open.upperBound...]
            guard let next = after.first, next == ">" || next == " " || next == "/" else { rest = after; continue }
            guard let tagEnd = after.firstIndex(of: ">") else { break }
            if tagEnd > after.startIndex, after[after.index(before: tagEnd)] == "/" { // <name/>
                out.append(S3XML(after[after.index(after: tagEnd)..<after.index(after: tagEnd)]))
                rest = after[after.index(after: tagEnd)...]
                continue
            }
            let body = after[after.index(after: tagEnd)...]
            guard let end = body.range(of: close) else { break }
            out.append(S3XML(body[..<end.lowerBound]))
            rest = body[end.upperBound...]
        }
        return out
    }

    /// The decoded text of the first `<name>`, nil if there is none.
    func value(_ name: String) -> String? { all(name).first.map { Self.decode($0.text) } }

    static func decode(_ raw: Substring) -> String {
        guard raw.contains("&") else { return String(raw) }
        var out = ""
        var rest = raw[...]
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semi = rest[amp...].firstIndex(of: ";") else { break }
            let entity = rest[rest.index(after: amp)..<semi]
            switch entity {
            case "amp": out += "&"
            case "lt": out += "<"
            case "gt": out += ">"
            case "quot": out += "\""
            case "apos": out += "'"
            default:
                var scalar: UInt32?
                if entity.hasPrefix("#x") { scalar = UInt32(entity.dropFirst(2), radix: 16) }
                else if entity.hasPrefix("#") { scalar = UInt32(entity.dropFirst(), radix: 10) }
                if let scalar, let u = Unicode.Scalar(scalar) { out.unicodeScalars.append(u) } else { out += "&\(entity);" }
            }
            rest = rest[rest.index(after: semi)...]
        }
        return out + rest
    }

    /// Text escaped for an XML element (keys in a DeleteObjects body).
    static func escape(_ text: String) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
