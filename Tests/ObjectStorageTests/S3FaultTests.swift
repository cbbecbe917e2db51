import DataLake
import Foundation
import NIOCore
import NIOHTTP1
@testable import ObjectStorage
import S3TestSupport
import XCTest

/// The client between Roster and a real server through `FaultProxy`:
/// bounded retries with backoff on 5xx and broken connections, none on 4xx,
/// and an error naming what failed when the retries run out.
final class S3FaultTests: XCTestCase {
    var cleanup: [() async throws -> Void] = []

    override func tearDown() async throws {
        for step in cleanup.reversed() { try? await step() }
        cleanup = []
    }

    func client(through plan: @escaping @Sendable (Int, HTTPMethod, String) -> FaultProxy.Fault,
                _ name: String = #function) throws -> (S3Client, FaultProxy) {
        let server = try S3TestServer.endpoint()
        let proxy = try FaultProxy(upstream: server.endpoint, plan: plan)
        let client = S3Client(try S3TestServer.configuration(name.filter { $0.isLetter }.lowercased(), endpoint: proxy.endpoint))
        cleanup.append { try await proxy.shutdown() }
        cleanup.append { try await client.shutdown() }
        return (client, proxy)
    }

    func testRetriesThroughSlowDownServerErrorsAndBrokenConnections() async throws {
        let faults: [FaultProxy.Fault] = [.slowDown, .internalError, .drop, .none, .slowDown, .cutBody, .slowBody]
        let (s3, proxy) = try client { index, _, _ in index < faults.count ? faults[index] : .none }
        let body = String(repeating: "0123456789abcdef", count: 8_192) // 128 KiB
        try await s3.put("acme/list.txt", body: ByteBuffer(string: body)) // 503, 500, dropped, then stored
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: body.utf8.count, alignment: 1)
        defer { buffer.deallocate() }
        let n = try await s3.read("acme/list.txt", offset: 0, into: buffer) // 503, cut off, then slowly
        XCTAssertEqual(n, body.utf8.count)
        XCTAssertEqual(String(decoding: UnsafeRawBufferPointer(buffer), as: UTF8.self), body)
        XCTAssertEqual(Array(proxy.injected.prefix(faults.count)), faults)
        XCTAssertEqual(s3.usageSoFar.retries, 5)
    }

    func testGivesUpAfterTheBoundedRetriesNamingWhatFailed() async throws {
        let (s3, proxy) = try client { _, _, _ in .slowDown }
        do {
            try await s3.put("acme/list.txt", body: ByteBuffer(string: "x"))
            XCTFail("stored through a server that always answers 503")
        } catch {
            XCTAssertEqual(error.status, 503)
            XCTAssertEqual(error.code, "SlowDown")
            XCTAssertEqual(error.attempts, s3.configuration.maxAttempts)
            XCTAssertTrue(error.description.hasPrefix("PutObject s3://\(s3.bucket)/\(s3.configuration.prefix)acme/list.txt: HTTP 503 SlowDown"),
                          error.description)
            XCTAssertTrue(error.description.contains("after 5 attempts"), error.description)
        }
        XCTAssertEqual(proxy.injected.count, 5)
    }

    func testAClientErrorIsNeverRetried() async throws {
        let (s3, proxy) = try client { _, _, _ in .status(403, code: "AccessDenied") }
        do {
            _ = try await s3.head("acme/list.txt")
            XCTFail("a 403 read as an answer")
        } catch {
            XCTAssertEqual(error.status, 403)
            XCTAssertEqual(error.attempts, 1)
        }
        XCTAssertEqual(proxy.injected.count, 1)
    }

    func testAMultipartUploadThatFailsIsAbortedAndNeverListed() async throws {
        // The second part always fails: the upload is aborted and nothing is listed.
        let (s3, _) = try client { _, method, uri in method == .PUT && uri.contains("partNumber=2") ? .internalError : .none }
        let folder = try TemporaryFolder()
        let file = folder.url.appendingPathComponent("big").path
        try Data(count: 11 << 20).write(to: URL(fileURLWithPath: file))
        do {
            try await s3.upload(file: file, as: "runs/big")
            XCTFail("uploaded without its second part")
        } catch {
            XCTAssertEqual(error.operation, "UploadPart")
        }
        XCTAssertEqual(s3.usageSoFar.requests["AbortMultipartUpload"], 1)
        let listed = try await s3.listAll(prefix: "")
        XCTAssertEqual(listed, [], "nothing half-written is listed")
    }
}
