import Foundation

/// Where a bucket is and how to reach it.
public struct S3Configuration: Sendable {
    /// How the bucket is named in a request.
    public enum Addressing: String, Sendable, CaseIterable {
        /// `http://endpoint/bucket/key`: what S3-compatible servers (SeaweedFS,
        /// MinIO) answer on one host name.
        case path
        /// `https://bucket.endpoint/key`: AWS's preferred form.
        case virtualHost = "virtual-host"
    }

    public var bucket: String
    /// Keys start with this (no leading `/`; empty, or ending in `/`).
    public var prefix: String
    /// `scheme://host[:port]`, e.g. `http://127.0.0.1:8333` or `https://s3.eu-west-1.amazonaws.com`.
    public var endpoint: URL
    public var region: String
    public var addressing: Addressing
    public var credentials: S3Credentials
    /// Attempts per request, the first included: a 500, a 503 SlowDown or a
    /// broken connection is tried again after an exponential, jittered pause;
    /// a 4xx never is.
    public var maxAttempts: Int = 5
    public var firstBackoff: Duration = .milliseconds(100)
    public var maxBackoff: Duration = .seconds(5)
    /// Longest a request may take, its body included.
    public var requestTimeout: Duration = .seconds(120)
    /// Objects up to this size are uploaded with one PUT; larger ones in
    /// parts of this size (S3 requires parts of 5 MiB or more).
    public var partSize: Int = 16 << 20
    /// Parts of one multipart upload in flight at once (memory: this many parts).
    public var uploadConcurrency: Int = 4

    public init(bucket: String, prefix: String = "", endpoint: URL, region: String, addressing: Addressing,
                credentials: S3Credentials) {
        self.bucket = bucket
        self.prefix = prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
        self.endpoint = endpoint
        self.region = region
        self.addressing = addressing
        self.credentials = credentials
    }

    /// Splits `s3://bucket/prefix` into its bucket and prefix.
    public static func parse(location: String) throws(S3Error) -> (bucket: String, prefix: String) {
        guard location.hasPrefix("s3://") else {
            throw S3Error(.configuration, "'\(location)' is not an s3:// address (s3://bucket/prefix)")
        }
        let rest = location.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        var prefix = String(rest.dropFirst(bucket.count).drop { $0 == "/" })
        guard !bucket.isEmpty, bucket.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" || $0 == "." }) else {
            throw S3Error(.configuration, "'\(location)': '\(bucket)' is not a bucket name (lower-case letters, digits, '-' and '.')")
        }
        if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
        return (bucket, prefix)
    }

    /// From `s3://bucket/prefix` and what flags and the environment say:
    /// `endpoint` (or `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`; AWS's regional
    /// endpoint when none), `region` (or `AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// `us-east-1`), credentials (or `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`). Addressing is by path with a custom endpoint and
    /// by virtual host on AWS, unless `addressing` says otherwise.
    public static func resolve(location: String, endpoint: String? = nil, region: String? = nil,
                               addressing: Addressing? = nil, credentials: S3Credentials? = nil,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws(S3Error) -> S3Configuration {
        let (bucket, prefix) = try parse(location: location)
        let region = region ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let custom = endpoint ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"]
        let endpointText = custom ?? "https://s3.\(region).amazonaws.com"
        guard let url = URL(string: endpointText), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
            throw S3Error(.configuration, "'\(endpointText)' is not an endpoint (http[s]://host[:port])")
        }
        guard let credentials = credentials ?? S3Credentials.fromEnvironment(environment) else {
            throw S3Error(.configuration, "no credentials for \(location): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or pass --s3-access-key and --s3-secret-key)")
        }
        return S3Configuration(bucket: bucket, prefix: prefix, endpoint: url, region: region,
                               addressing: addressing ?? (custom == nil ? .virtualHost : .path), credentials: credentials)
    }

    /// The host header and the URL path for `key` (nil: the bucket itself).
    func target(key: String?) -> (host: String, encodedPath: String, base: String) {
        let scheme = endpoint.scheme ?? "https"
        let port = endpoint.port.map { ":\($0)" } ?? ""
        let host = endpoint.host!
        switch addressing {
        case .path:
            let raw = "/" + bucket + "/" + (key ?? "")
            return (host + port, SigV4Signer.encodePath(raw), "\(scheme)://\(host)\(port)")
        case .virtualHost:
            return ("\(bucket).\(host)\(port)", SigV4Signer.encodePath(key ?? ""), "\(scheme)://\(bucket).\(host)\(port)")
        }
    }
}
