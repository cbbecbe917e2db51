import Crypto
import Foundation
import HexDigits

/// Credentials for AWS Signature Version 4.
public struct S3Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// Temporary credentials' token, sent as `x-amz-security-token`.
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> S3Credentials? {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
              let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else { return nil }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret,
                             sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
    }
}

/// AWS Signature Version 4 (header form), as S3 checks it.
///
/// Written once, pure (no I/O, the time passed in), and tested step by step
/// against AWS's published vectors: the canonical request, the string to
/// sign and the signature. S3's flavour differs from the generic one in one
/// place: the path is encoded once and never normalised (`a//b` and `a/./b`
/// are keys of their own), so `encodePath` is used for both the URL sent and
/// the canonical request.
public struct SigV4Signer: Sendable {
    public let credentials: S3Credentials
    public let region: String
    public let service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of an empty body.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public static func hexSHA256(_ bytes: some DataProtocol) -> String { hex(SHA256.hash(data: bytes)) }

    /// `20130524T000000Z`.
    public static func amzDate(_ date: Date) -> String {
        let c = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: date)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    }

    /// RFC 3986 encoding: everything but `A-Z a-z 0-9 - . _ ~` as `%XX`
    /// (upper-case hex, UTF-8 bytes); `/` too unless `keepSlash`.
    public static func encode(_ text: String, keepSlash: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// An object's path as sent and as signed: `/` + each segment encoded.
    public static func encodePath(_ raw: String) -> String {
        raw.hasPrefix("/") ? encode(raw, keepSlash: true) : "/" + encode(raw, keepSlash: true)
    }

    /// The query as sent and as signed: pairs encoded, sorted by name then value.
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (encode($0.0), encode($0.1)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// Header names lower-cased and sorted; values trimmed, runs of spaces
    /// made one, repeated names joined with commas in the order given.
    static func canonicalHeaders(_ headers: [(String, String)]) -> (block: String, signed: String) {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            let squeezed = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[name.lowercased(), default: []].append(squeezed.trimmingCharacters(in: .whitespaces))
        }
        let names = merged.keys.sorted()
        let block = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        return (block, names.joined(separator: ";"))
    }

    /// Step 1: the canonical request (the path already encoded by `encodePath`).
    public func canonicalRequest(method: String, encodedPath: String, query: [(String, String)],
                                 headers: [(String, String)], payloadHash: String) -> (request: String, signedHeaders: String) {
        let (block, signed) = Self.canonicalHeaders(headers)
        return ("\(method)\n\(encodedPath)\n\(Self.canonicalQuery(query))\n\(block)\n\(signed)\n\(payloadHash)", signed)
    }

    public func scope(_ date: Date) -> String { "\(Self.amzDate(date).prefix(8))/\(region)/\(service)/aws4_request" }

    /// Step 2: the string to sign.
    public func stringToSign(canonicalRequest: String, date: Date) -> String {
        "AWS4-HMAC-SHA256\n\(Self.amzDate(date))\n\(scope(date))\n\(Self.hexSHA256(Array(canonicalRequest.utf8)))"
    }

    /// Step 3: the signature.
    public func signature(stringToSign: String, date: Date) -> String {
        var key = SymmetricKey(data: Array(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [String(Self.amzDate(date).prefix(8)), region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
    }

    /// The `Authorization` header for a request whose `headers` already hold
    /// every header to sign (at least `host` and `x-amz-date`).
    public func authorization(method: String, encodedPath: String, query: [(String, String)],
                              headers: [(String, String)], payloadHash: String, date: Date) -> String {
        let (request, signed) = canonicalRequest(method: method, encodedPath: encodedPath, query: query,
                                                 headers: headers, payloadHash: payloadHash)
        let signature = signature(stringToSign: stringToSign(canonicalRequest: request, date: date), date: date)
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope(date)), SignedHeaders=\(signed), Signature=\(signature)"
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256`, the session token and
    /// `Authorization` to `headers` (which hold `host`).
    public func sign(method: String, encodedPath: String, query: [(String, String)], headers: inout [(String, String)],
                     payloadHash: String, date: Date) {
        headers.append(("x-amz-date", Self.amzDate(date)))
        headers.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
        headers.append(("Authorization", authorization(method: method, encodedPath: encodedPath, query: query,
                                                       headers: headers, payloadHash: payloadHash, date: date)))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String { HexDigits.lowercase(bytes) }
}
