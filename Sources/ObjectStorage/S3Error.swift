import SegmentStore

/// Why an object store request failed: which operation on which bucket and
/// key, the HTTP status and S3's error code, and what to do about it.
public struct S3Error: OutageError, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A flag, an address or the environment is wrong: nothing was sent.
        case configuration
        /// The server answered with an error status.
        case status(Int)
        /// No answer: refused, reset, timed out (after every attempt).
        case transport
        /// The answer could not be understood.
        case malformed
    }

    public var kind: Kind
    public var operation: String
    public var bucket: String
    public var key: String?
    /// S3's error code (`NoSuchBucket`, `SignatureDoesNotMatch`, …) when it sent one.
    public var code: String?
    public var message: String
    public var attempts: Int = 1

    public init(_ kind: Kind, _ message: String, operation: String = "", bucket: String = "", key: String? = nil,
                code: String? = nil) {
        self.kind = kind
        self.message = message
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.code = code
    }

    public var status: Int? { if case .status(let s) = kind { return s } else { return nil } }

    /// True for a 404 (no such key).
    public var isNotFound: Bool { status == 404 && code != "NoSuchBucket" }

    /// The service could not be reached or could not serve now: no answer
    /// (refused, reset, timed out), a 5xx, a 429 or S3's SlowDown. Says
    /// nothing about the object; the same request may work later. A 403,
    /// a 404 or an answer that cannot be understood is not transient.
    public var isTransient: Bool {
        switch kind {
        case .transport: true
        case .status(let s): s >= 500 || s == 429 || code == "SlowDown" || code == "RequestTimeout"
        case .configuration, .malformed: false
        }
    }

    /// What an operator should do, for the errors that have one answer.
    public var hint: String? {
        switch code {
        case "InvalidAccessKeyId": return "check the access key (AWS_ACCESS_KEY_ID or --s3-access-key)"
        case "SignatureDoesNotMatch": return "check the secret key (AWS_SECRET_ACCESS_KEY or --s3-secret-key) and the region (--s3-region)"
        case "RequestTimeTooSkewed": return "this host's clock is too far from the server's: synchronise it (NTP)"
        case "NoSuchBucket": return "create the bucket, or name an existing one in the s3:// address"
        case "AccessDenied": return "grant these credentials the S3 permissions in docs/OBJECT_STORAGE.md"
        case "AuthorizationHeaderMalformed": return "check the region (--s3-region)"
        default: return nil
        }
    }

    public var description: String {
        if kind == .configuration { return message }
        var where_ = "s3://\(bucket)"
        if let key { where_ += "/" + key }
        var text = "\(operation) \(where_): "
        switch kind {
        case .status(let s): text += "HTTP \(s)" + (code.map { " \($0)" } ?? "") + (message.isEmpty ? "" : ": \(message)")
        case .transport: text += message
        case .malformed: text += "unexpected answer: \(message)"
        case .configuration: break
        }
        if attempts > 1 { text += " (after \(attempts) attempts)" }
        if let hint { text += " — \(hint)" }
        return text
    }
}
