import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SegmentStore
import Synchronization

/// One object as a listing describes it.
public struct S3Object: Sendable, Equatable {
    /// The key, without the configuration's prefix.
    public var key: String
    public var size: Int64
    /// Without quotes.
    public var etag: String
    public var lastModified: Date
}

/// Requests by kind and bytes moved: what a benchmark reports and what an
/// operator pays for.
public struct S3Usage: Sendable, Equatable {
    public var requests: [String: Int] = [:]
    public var retries = 0
    public var bytesReceived: Int64 = 0
    public var bytesSent: Int64 = 0
}

/// The S3 operations Roster uses, signed with SigV4 and sent through
/// async-http-client's connection pool, with bounded retries.
///
/// Every key here is relative to the configuration's prefix. A failure is an
/// `S3Error` naming the operation, bucket, key, HTTP status and S3 code.
/// Retries: a 500, 502, 503 (SlowDown), 504 or a failed connection is tried
/// again after `firstBackoff · 2^n` with full jitter (at most `maxBackoff`),
/// up to `maxAttempts` in all; a 4xx is final at once.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    let http: HTTPClient
    let signer: SigV4Signer
    let now: @Sendable () -> Date
    let logger: Logger
    private let usage = Mutex(S3Usage())

    public init(_ configuration: S3Configuration, now: @escaping @Sendable () -> Date = { Date() },
                logger: Logger = Logger(label: "roster.s3")) {
        self.configuration = configuration
        var http = HTTPClient.Configuration()
        http.connectionPool = .init(idleTimeout: .seconds(60))
        // A refused connection fails now and is retried by `send`, within its
        // bound; async-http-client would otherwise keep trying until the
        // request's deadline (minutes, for a server that is down).
        http.connectionPool.retryConnectionEstablishment = false
        http.timeout = .init(connect: .seconds(10), read: .seconds(60))
        http.decompression = .disabled
        http.redirectConfiguration = .disallow
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        self.signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        self.now = now
        self.logger = logger
    }

    /// Closes the connection pool; call once, when done.
    public func shutdown() async throws { try await http.shutdown() }

    public var usageSoFar: S3Usage { usage.withLock { $0 } }

    public var bucket: String { configuration.bucket }

    /// `s3://bucket/prefix…key`, for messages.
    public func address(_ key: String) -> String { "s3://\(bucket)/\(configuration.prefix)\(key)" }

    // MARK: Requests

    struct Request {
        var operation: String
        var method: HTTPMethod
        var key: String?
        var query: [(String, String)] = []
        var headers: [(String, String)] = []
        var body: ByteBuffer?
        /// Signs `UNSIGNED-PAYLOAD` instead of the body's SHA-256: for object
        /// bodies, whose integrity `Content-MD5` checks (hashing each body
        /// twice cost a worker about a fifth of its CPU).
        var unsignedPayload = false
    }

    /// Sends `request`, retrying as the type says, and hands a successful
    /// (2xx, or one of `accept`) response to `read`; an error status becomes
    /// an `S3Error` with S3's code. `read` runs inside the retry loop, so a
    /// body cut off midway is fetched again.
    func send<T>(_ request: Request, accept: Set<Int> = [], read: (HTTPClientResponse) async throws -> T) async throws(S3Error) -> T {
        let fullKey = request.key.map { configuration.prefix + $0 }
        let target = configuration.target(key: fullKey)
        let payloadHash = request.unsignedPayload ? "UNSIGNED-PAYLOAD"
            : request.body.map { $0.withUnsafeReadableBytes { SigV4Signer.hexSHA256($0) } } ?? SigV4Signer.emptyPayloadHash
        var attempt = 0
        while true {
            attempt += 1
            var headers: [(String, String)] = [("host", target.host)] + request.headers
            signer.sign(method: request.method.rawValue, encodedPath: target.encodedPath, query: request.query,
                        headers: &headers, payloadHash: payloadHash, date: now())
            let query = SigV4Signer.canonicalQuery(request.query)
            var http = HTTPClientRequest(url: target.base + target.encodedPath + (query.isEmpty ? "" : "?" + query))
            http.method = request.method
            for (name, value) in headers { http.headers.add(name: name, value: value) }
            if let body = request.body { http.body = .bytes(body) }
            usage.withLock {
                $0.requests[request.operation, default: 0] += 1
                $0.bytesSent += Int64(request.body?.readableBytes ?? 0)
                if attempt > 1 { $0.retries += 1 }
            }
            var failure: S3Error
            var retryable: Bool
            do {
                let response = try await self.http.execute(http, timeout: .nanoseconds(Int64(configuration.requestTimeout.components.seconds) * 1_000_000_000))
                let status = Int(response.status.code)
                if (200..<300).contains(status) || accept.contains(status) {
                    do {
                        return try await read(response)
                    } catch let error as S3Error {
                        throw error
                    } catch is CancellationError {
                        throw S3Error(.transport, "cancelled", operation: request.operation, bucket: bucket, key: fullKey)
                    } catch {
                        failure = S3Error(.transport, "the body was cut off: \(error)", operation: request.operation, bucket: bucket, key: fullKey)
                        retryable = true
                    }
                } else {
                    let body = (try? await response.body.collect(upTo: 64 << 10)).map { Array($0.readableBytesView) } ?? []
                    let xml = S3XML(body)
                    failure = S3Error(.status(status), xml.value("Message") ?? (body.isEmpty ? "" : String(decoding: body.prefix(200), as: UTF8.self)),
                                      operation: request.operation, bucket: bucket, key: fullKey,
                                      code: xml.value("Code") ?? (status == 404 && request.method == .HEAD ? "NoSuchKey" : nil))
                    retryable = [500, 502, 503, 504].contains(status)
                }
            } catch let error as S3Error {
                throw error
            } catch is CancellationError {
                throw S3Error(.transport, "cancelled", operation: request.operation, bucket: bucket, key: fullKey)
            } catch {
                failure = S3Error(.transport, "\(configuration.endpoint.absoluteString): \(Self.describe(error))", operation: request.operation,
                                  bucket: bucket, key: fullKey)
                retryable = true
            }
            failure.attempts = attempt
            guard retryable, attempt < configuration.maxAttempts, !Task.isCancelled else { throw failure }
            let pause = backoff(attempt: attempt)
            logger.debug("retrying", metadata: ["error": "\(failure)", "pause": "\(pause)"])
            do { try await Task.sleep(for: pause) } catch { throw failure }
        }
    }

    /// Full jitter: uniformly in [0, min(max, first · 2^(attempt-1))].
    func backoff(attempt: Int) -> Duration {
        let ceiling = min(configuration.maxBackoff, configuration.firstBackoff * (1 << min(attempt - 1, 20)))
        let nanos = ceiling.components.seconds * 1_000_000_000 + ceiling.components.attoseconds / 1_000_000_000
        return .nanoseconds(Int64.random(in: 0...max(0, nanos)))
    }

    func collect(_ response: HTTPClientResponse, limit: Int = 16 << 20) async throws -> [UInt8] {
        var out: [UInt8] = []
        for try await chunk in response.body {
            guard out.count + chunk.readableBytes <= limit else { throw S3Error(.malformed, "answer larger than \(limit) bytes") }
            out += chunk.readableBytesView
        }
        usage.withLock { $0.bytesReceived += Int64(out.count) }
        return out
    }

    // MARK: Operations

    /// One page of ListObjectsV2 under `prefix` (relative to the configured
    /// prefix), after `startAfter`, continuing `token`.
    public func listPage(prefix: String, startAfter: String? = nil, token: String? = nil,
                         maxKeys: Int = 1000) async throws(S3Error) -> (objects: [S3Object], next: String?) {
        var query = [("list-type", "2"), ("prefix", configuration.prefix + prefix), ("max-keys", String(min(1000, max(1, maxKeys))))]
        if let token { query.append(("continuation-token", token)) }
        if let startAfter, token == nil { query.append(("start-after", configuration.prefix + startAfter)) }
        let body = try await send(Request(operation: "ListObjectsV2", method: .GET, key: nil, query: query)) { try await collect($0) }
        let xml = S3XML(body)
        guard body.isEmpty || xml.all("ListBucketResult").count == 1 else {
            throw S3Error(.malformed, "no ListBucketResult", operation: "ListObjectsV2", bucket: bucket, key: configuration.prefix + prefix)
        }
        var objects: [S3Object] = []
        for item in xml.all("Contents") {
            guard let key = item.value("Key"), key.hasPrefix(configuration.prefix), let size = item.value("Size").flatMap({ Int64($0) }) else {
                throw S3Error(.malformed, "a listed object without a key or size", operation: "ListObjectsV2", bucket: bucket)
            }
            objects.append(S3Object(key: String(key.dropFirst(configuration.prefix.count)), size: size,
                                    etag: Self.unquote(item.value("ETag") ?? ""),
                                    lastModified: Self.parseDate(item.value("LastModified") ?? "") ?? Date(timeIntervalSince1970: 0)))
        }
        let truncated = xml.value("IsTruncated") == "true"
        let next = truncated ? xml.value("NextContinuationToken") : nil
        if truncated && next == nil {
            throw S3Error(.malformed, "a truncated listing without a continuation token", operation: "ListObjectsV2", bucket: bucket)
        }
        return (objects, next)
    }

    /// Every object under `prefix`, page by page.
    public func listAll(prefix: String) async throws(S3Error) -> [S3Object] {
        var out: [S3Object] = []
        var token: String?
        repeat {
            let page = try await listPage(prefix: prefix, token: token)
            out += page.objects
            token = page.next
        } while token != nil
        return out
    }

    /// Size, ETag and modification time; nil when there is no such key.
    public func head(_ key: String) async throws(S3Error) -> S3Object? {
        do {
            return try await send(Request(operation: "HeadObject", method: .HEAD, key: key)) { response in
                guard let size = response.headers.first(name: "content-length").flatMap({ Int64($0) }) else {
                    throw S3Error(.malformed, "no Content-Length", operation: "HeadObject", bucket: bucket, key: key)
                }
                return S3Object(key: key, size: size, etag: Self.unquote(response.headers.first(name: "etag") ?? ""),
                                lastModified: response.headers.first(name: "last-modified").flatMap(Self.parseHTTPDate) ?? Date(timeIntervalSince1970: 0))
            }
        } catch where error.isNotFound {
            return nil
        }
    }

    /// Bytes `[offset, offset + buffer.count)` of `key` into `buffer`,
    /// streamed chunk by chunk (no copy of the whole range); with `ifMatch`,
    /// a 412 if the object changed. Returns how many bytes were read (fewer
    /// at the end of the object, 0 past it).
    public func read(_ key: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer,
                     ifMatch etag: String? = nil) async throws(S3Error) -> Int {
        guard buffer.count > 0 else { return 0 }
        var headers = [("range", "bytes=\(offset)-\(offset + Int64(buffer.count) - 1)")]
        if let etag { headers.append(("if-match", "\"\(etag)\"")) }
        nonisolated(unsafe) let target = buffer
        return try await send(Request(operation: "GetObject", method: .GET, key: key, headers: headers), accept: [416]) { response in
            if response.status.code == 416 { return 0 }
            var filled = 0
            for try await chunk in response.body {
                let n = min(chunk.readableBytes, target.count - filled)
                chunk.withUnsafeReadableBytes { target.baseAddress!.advanced(by: filled).copyMemory(from: $0.baseAddress!, byteCount: n) }
                filled += n
            }
            usage.withLock { $0.bytesReceived += Int64(filled) }
            return filled
        }
    }

    /// Downloads `key` to the local file `path` (written under a temporary
    /// name, then renamed): a memory-mapped segment is read from disk.
    public func download(_ key: String, to path: String) async throws(S3Error) -> Int64 {
        let temporary = path + ".download-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw S3Error(.configuration, "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        defer { unlink(temporary) }
        let written: Int64
        do {
            written = try await download(key, range: nil, into: fd)
            close(fd)
        } catch {
            close(fd)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            throw S3Error(.configuration, "cannot rename \(temporary): \(String(cString: strerror(errno)))")
        }
        return written
    }

    /// Streams `key` (or bytes `range` of it) into `fd`, at the same offsets
    /// as in the object (0 for a whole object): chunk by chunk, so memory
    /// does not grow with the size. A retried request writes over the same
    /// bytes again.
    @discardableResult
    public func download(_ key: String, range: Range<Int>?, into fd: Int32) async throws(S3Error) -> Int64 {
        if let range, range.isEmpty { return 0 }
        let headers = range.map { [("range", "bytes=\($0.lowerBound)-\($0.upperBound - 1)")] } ?? []
        let start = range?.lowerBound ?? 0
        return try await send(Request(operation: "GetObject", method: .GET, key: key, headers: headers)) { response -> Int64 in
            var total: Int64 = 0
            for try await chunk in response.body {
                do {
                    try chunk.withUnsafeReadableBytes { try AtomicFile.writeAll(fd, $0, at: start + Int(total), path: key) }
                } catch {
                    throw S3Error(.configuration, "cannot write the download of \(key): \(error)")
                }
                total += Int64(chunk.readableBytes)
            }
            usage.withLock { $0.bytesReceived += total }
            if let range, total != Int64(range.count) {
                throw S3Error(.malformed, "\(total) bytes for a range of \(range.count)", operation: "GetObject", bucket: bucket, key: key)
            }
            return total
        }
    }

    /// One PUT with Content-MD5, so a body damaged on the way is refused.
    public func put(_ key: String, body: ByteBuffer) async throws(S3Error) {
        let md5 = Self.contentMD5(body)
        _ = try await send(Request(operation: "PutObject", method: .PUT, key: key, headers: [("content-md5", md5)], body: body,
                                   unsignedPayload: true)) {
            try await collect($0)
        }
    }

    /// Uploads the local file at `path` as `key`: one PUT up to `partSize`,
    /// else a multipart upload in parts of `partSize`, aborted on any failure
    /// so that no half-written object is ever listed. Memory: one part.
    public func upload(file path: String, as key: String) async throws(S3Error) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw S3Error(.configuration, "cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let size = Int(st.st_size)
        let partSize = max(5 << 20, configuration.partSize)
        func part(at offset: Int, count: Int) throws(S3Error) -> ByteBuffer {
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            do {
                try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
                    if count > 0 { try AtomicFile.readExactly(fd, target.baseAddress!, count, at: offset, path: path) }
                    return count
                }
            } catch {
                throw S3Error(.configuration, "cannot read \(path) to upload it: \(error)")
            }
            return buffer
        }
        if size <= partSize {
            try await put(key, body: try part(at: 0, count: size))
            return
        }
        let created = try await send(Request(operation: "CreateMultipartUpload", method: .POST, key: key, query: [("uploads", "")])) {
            try await collect($0)
        }
        guard let uploadID = S3XML(created).value("UploadId") else {
            throw S3Error(.malformed, "no UploadId", operation: "CreateMultipartUpload", bucket: bucket, key: configuration.prefix + key)
        }
        do throws(S3Error) {
            // Parts go up `uploadConcurrency` at a time: memory is that many parts.
            let parts = stride(from: 0, to: size, by: partSize).map { ($0, min(partSize, size - $0)) }
            var etags = [String](repeating: "", count: parts.count)
            do {
                try await withThrowingTaskGroup(of: (Int, String).self) { group in
                    var next = 0
                    func start() throws(S3Error) {
                        let index = next, (offset, count) = parts[index]
                        next += 1
                        let body = try part(at: offset, count: count)
                        group.addTask {
                            let etag = try await self.send(Request(
                                operation: "UploadPart", method: .PUT, key: key,
                                query: [("partNumber", String(index + 1)), ("uploadId", uploadID)],
                                headers: [("content-md5", Self.contentMD5(body))], body: body, unsignedPayload: true)) { response -> String in
                                _ = try await self.collect(response)
                                guard let etag = response.headers.first(name: "etag") else {
                                    throw S3Error(.malformed, "a part without an ETag", operation: "UploadPart", bucket: self.bucket, key: key)
                                }
                                return etag
                            }
                            return (index, etag)
                        }
                    }
                    while next < min(parts.count, max(1, configuration.uploadConcurrency)) { try start() }
                    while let (index, etag) = try await group.next() {
                        etags[index] = etag
                        if next < parts.count { try start() }
                    }
                }
            } catch let error as S3Error {
                throw error
            } catch {
                throw S3Error(.transport, "\(error)", operation: "UploadPart", bucket: bucket, key: configuration.prefix + key)
            }
            var xml = "<CompleteMultipartUpload>"
            for (i, etag) in etags.enumerated() { xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(S3XML.escape(etag))</ETag></Part>" }
            xml += "</CompleteMultipartUpload>"
            let answer = try await send(Request(operation: "CompleteMultipartUpload", method: .POST, key: key,
                                                query: [("uploadId", uploadID)], body: ByteBuffer(string: xml))) { try await collect($0) }
            // S3 may answer 200 with an <Error> body when completing fails late.
            let reply = S3XML(answer)
            if let code = reply.all("Error").first?.value("Code") {
                throw S3Error(.status(200), reply.value("Message") ?? "", operation: "CompleteMultipartUpload", bucket: bucket,
                              key: configuration.prefix + key, code: code)
            }
        } catch {
            _ = try? await send(Request(operation: "AbortMultipartUpload", method: .DELETE, key: key, query: [("uploadId", uploadID)])) {
                try await collect($0)
            }
            throw error
        }
    }

    /// Deletes one object; a missing one is not an error.
    public func delete(_ key: String) async throws(S3Error) {
        do {
            _ = try await send(Request(operation: "DeleteObject", method: .DELETE, key: key)) { try await collect($0) }
        } catch where error.isNotFound {}
    }

    /// Deletes `keys` with DeleteObjects, 1,000 a request.
    public func delete(keys: [String]) async throws(S3Error) {
        var start = 0
        while start < keys.count {
            let batch = keys[start..<min(keys.count, start + 1000)]
            start += batch.count
            var xml = "<Delete><Quiet>true</Quiet>"
            for key in batch { xml += "<Object><Key>\(S3XML.escape(configuration.prefix + key))</Key></Object>" }
            xml += "</Delete>"
            let body = ByteBuffer(string: xml)
            let md5 = Self.contentMD5(body)
            let answer = try await send(Request(operation: "DeleteObjects", method: .POST, key: nil, query: [("delete", "")],
                                                headers: [("content-md5", md5)], body: body)) { try await collect($0) }
            if let failed = S3XML(answer).all("Error").first, let code = failed.value("Code"), code != "NoSuchKey" {
                throw S3Error(.status(200), failed.value("Message") ?? "", operation: "DeleteObjects", bucket: bucket,
                              key: failed.value("Key"), code: code)
            }
        }
    }

    /// Deletes every object under `prefix`.
    public func deleteAll(under prefix: String) async throws(S3Error) {
        try await delete(keys: try await listAll(prefix: prefix).map(\.key))
    }

    // MARK: Formats

    static func contentMD5(_ body: ByteBuffer) -> String {
        body.withUnsafeReadableBytes { Data(Insecure.MD5.hash(data: $0)).base64EncodedString() }
    }

    static func unquote(_ etag: String) -> String {
        etag.count >= 2 && etag.hasPrefix("\"") && etag.hasSuffix("\"") ? String(etag.dropFirst().dropLast()) : etag
    }

    static func parseDate(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }

    static func parseHTTPDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }
}

extension S3Client {
    /// A connection failure in words: "connection refused", not NIO's nested
    /// "connection reset (error set): Connection refused) (errno: 111)".
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)).lowercased() }
        let text = "\(error)"
        if let range = text.range(of: #"errno: (\d+)"#, options: .regularExpression),
           let code = Int32(text[range].dropFirst("errno: ".count)) {
            return String(cString: strerror(code)).lowercased()
        }
        return text
    }
}
