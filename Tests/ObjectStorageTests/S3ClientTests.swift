import DataLake
import Foundation
import NIOCore
@testable import ObjectStorage
import SegmentStore
import TestSupport
import S3TestSupport
import XCTest

/// The client, the lake and the store against a real S3-compatible server.
final class S3ClientTests: XCTestCase {
    var clients: [S3Client] = []

    override func tearDown() async throws {
        for client in clients { try? await client.shutdown() }
        clients = []
    }

    func client(_ name: String = #function, endpoint: String? = nil, bucket: String? = nil, secret: String? = nil,
                accessKey: String? = nil, now: @escaping @Sendable () -> Date = { Date() }) throws -> S3Client {
        let name = name.filter { $0.isLetter || $0.isNumber }.lowercased()
        let client = S3Client(try S3TestServer.configuration(name, endpoint: endpoint, bucket: bucket, secret: secret, accessKey: accessKey),
                              now: now)
        clients.append(client)
        return client
    }

    func testObjectsRoundTrip() async throws {
        let s3 = try client()
        try await s3.put("acme/list.txt", body: ByteBuffer(string: "0123456789abcdef"))
        let head = try await s3.head("acme/list.txt")
        XCTAssertEqual(head?.size, 16)
        XCTAssertFalse(head?.etag.isEmpty ?? true)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 1)
        defer { buffer.deallocate() }
        var n = try await s3.read("acme/list.txt", offset: 4, into: buffer, ifMatch: head?.etag)
        XCTAssertEqual(String(decoding: UnsafeRawBufferPointer(rebasing: buffer[..<n]), as: UTF8.self), "456789ab")
        n = try await s3.read("acme/list.txt", offset: 12, into: buffer)
        XCTAssertEqual(n, 4, "short at the end")
        n = try await s3.read("acme/list.txt", offset: 16, into: buffer)
        XCTAssertEqual(n, 0, "nothing past the end")
        let missing = try await s3.head("acme/none.txt")
        XCTAssertNil(missing)
        let listed = try await s3.listAll(prefix: "")
        XCTAssertEqual(listed.map(\.key), ["acme/list.txt"])
        XCTAssertEqual(listed.first?.etag, head?.etag)
        try await s3.delete("acme/list.txt")
        try await s3.delete("acme/list.txt") // a missing one is fine
        let gone = try await s3.head("acme/list.txt")
        XCTAssertNil(gone)
    }

    func testMultipartUploadAndStreamingDownload() async throws {
        let s3 = try client()
        let dir = try TemporaryFolder()
        var rng = SplitMix64(seed: 5)
        let bytes = (0..<(11 << 20) + 123).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let source = dir.url.appendingPathComponent("big").path
        try Data(bytes).write(to: URL(fileURLWithPath: source))
        try await s3.upload(file: source, as: "runs/big")
        let usage = s3.usageSoFar
        XCTAssertEqual(usage.requests["UploadPart"], 3, "11 MiB in 5 MiB parts")
        XCTAssertEqual(usage.requests["CompleteMultipartUpload"], 1)
        let target = dir.url.appendingPathComponent("copy").path
        let written = try await s3.download("runs/big", to: target)
        XCTAssertEqual(written, Int64(bytes.count))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: target)), Data(bytes))
        // No multipart upload is left open.
        let left = try await s3.listAll(prefix: "").map(\.key)
        XCTAssertEqual(left, ["runs/big"])
    }

    func testLakeListsEveryPageAndSkipsWhatIsNotAList() async throws {
        let s3 = try client()
        let lake = S3Lake(client: s3)
        // 1,500 files of one advertiser and 2,000 advertisers: several
        // pages of ListObjectsV2 (1,000 keys each) for both.
        var keys = (0..<1_500).map { String(format: "big/%05d.txt", $0) }
        keys += (0..<2_000).map { String(format: "adv%05d/list.txt", $0) }
        // Not lists: a file at the top, one too deep, hidden files and a hidden folder (as the folder lake ignores them).
        keys += ["top.txt", "deep/er/file.txt", "big/.partial", ".dotadv/list.txt"]
        try await withThrowingTaskGroup(of: Void.self) { group in
            let width = keys.count / 32 + 1
            for chunk in stride(from: 0, to: keys.count, by: width) {
                let slice = Array(keys[chunk..<min(keys.count, chunk + width)])
                group.addTask { for key in slice { try await s3.put(key, body: ByteBuffer(string: "x")) } }
            }
            try await group.waitForAll()
        }
        let big = try await lake.list(prefix: "big/", after: nil, limit: 10_000)
        XCTAssertEqual(big.count, 1_500)
        XCTAssertEqual(big.map(\.path), big.map(\.path).sorted())
        // In pages of 700 with `after`, as the coordinator's scan reads it.
        var all: [LakeObject] = []
        var after: String?
        repeat {
            let page = try await lake.list(prefix: "", after: after, limit: 700)
            all += page
            after = page.count == 700 ? page.last?.path : nil
        } while after != nil
        XCTAssertEqual(all.count, 3_500)
        XCTAssertEqual(Set(all.map(\.path)).count, 3_500)
        XCTAssertFalse(all.contains { $0.path == "top.txt" || $0.path.hasPrefix("deep/") || $0.path.hasSuffix(".partial") || $0.path.hasPrefix(".") })
        do {
            _ = try await lake.head(".dotadv/list.txt")
            XCTFail("a hidden folder's file was taken for a list")
        } catch {
            XCTAssertEqual(error, .invalidPath(".dotadv/list.txt"))
        }
    }

    func testLakeReadsDetectAReplacedList() async throws {
        let s3 = try client()
        let lake = S3Lake(client: s3)
        try await s3.put("acme/list.txt", body: ByteBuffer(string: "first version of the list"))
        let first = try await lake.head("acme/list.txt")
        let bytes = try await lake.read("acme/list.txt", offset: 6, length: 7, ifMatch: first.etag)
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "version")
        try await s3.put("acme/list.txt", body: ByteBuffer(string: "second version, replaced mid-ingest"))
        do {
            _ = try await lake.read("acme/list.txt", offset: 0, length: 4, ifMatch: first.etag)
            XCTFail("read the replaced object")
        } catch {
            guard case .changed(let path, let expected, let found) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "acme/list.txt")
            XCTAssertEqual(expected, first.etag)
            XCTAssertNotEqual(found, first.etag)
        }
        do {
            _ = try await lake.head("acme/none.txt")
            XCTFail("found a missing object")
        } catch {
            XCTAssertEqual(error, .notFound("acme/none.txt"))
        }
    }

    func testBadCredentialsMissingBucketAndClockSkewSayWhatToFix() async throws {
        let wrongSecret = try client(secret: "not-the-secret")
        do {
            _ = try await wrongSecret.listPage(prefix: "")
            XCTFail("listed with a wrong secret")
        } catch {
            XCTAssertEqual(error.status, 403)
            XCTAssertEqual(error.attempts, 1, "a 4xx is never retried")
            XCTAssertTrue(error.description.contains("secret key"), error.description)
        }
        let wrongKey = try client(accessKey: "nobody")
        do {
            _ = try await wrongKey.listPage(prefix: "")
            XCTFail("listed with an unknown key")
        } catch {
            XCTAssertEqual(error.status, 403)
            XCTAssertTrue(error.description.contains("access key"), error.description)
        }
        let noBucket = try client(bucket: "no-such-bucket-\(UInt32.random(in: 0...UInt32.max))")
        do {
            _ = try await noBucket.listPage(prefix: "")
            XCTFail("listed a missing bucket")
        } catch {
            XCTAssertEqual(error.status, 404)
            XCTAssertEqual(error.code, "NoSuchBucket")
            XCTAssertTrue(error.description.contains("create the bucket"), error.description)
        }
        let skewed = try client(now: { Date().addingTimeInterval(-3_600) })
        do {
            _ = try await skewed.listPage(prefix: "")
            XCTFail("listed with a clock an hour slow")
        } catch {
            XCTAssertEqual(error.status, 403)
            XCTAssertTrue(error.description.contains("clock"), error.description)
        }
    }

    func testStoreCommitsRunsAndFetchesOnlyWhatAMergeReads() async throws {
        let s3 = try client()
        let dir = try TemporaryFolder()
        let worker = S3SegmentStorage(client: s3, local: dir.url.appendingPathComponent("worker"))
        var rng = SplitMix64(seed: 9)
        let keys = (0..<40_000).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
        let local = try worker.prepareWrite("runs/acme/1/block-0-a.run")
        try keys.withUnsafeBufferPointer { _ = try RunWriter.write($0, partitionBits: 4, version: 1, to: local, durable: false) }
        let size = try FileManager.default.attributesOfItem(atPath: local)[.size] as! Int
        try await worker.commit("runs/acme/1/block-0-a.run")
        XCTAssertFalse(FileManager.default.fileExists(atPath: local), "the local copy goes once uploaded")

        let merger = S3SegmentStorage(client: s3, local: dir.url.appendingPathComponent("merger"))
        let before = s3.usageSoFar.bytesReceived
        let low: UInt64 = 0x4000_0000_0000_0000, high: UInt64 = 0x6000_0000_0000_0000
        let path = try await merger.localRun("runs/acme/1/block-0-a.run", low: low, high: high)
        let fetched = s3.usageSoFar.bytesReceived - before
        var read: [Key16] = []
        try RunFile(path: path).forEachKey(low: low, high: high) { read += $0 }
        XCTAssertEqual(Set(read), Set(keys.filter { $0.hi >= low && $0.hi < high }))
        XCTAssertLessThan(fetched, Int64(size / 4), "an eighth of the key space, not the whole run")
        await merger.discardLocal(path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))

        let lost = try await merger.localRun("runs/acme/1/block-9-z.run", low: low, high: high)
        XCTAssertThrowsError(try RunFile(path: lost), "a missing run is a lost run")

        let listed = try await merger.list(under: "runs/acme/1")
        XCTAssertEqual(listed, ["runs/acme/1/block-0-a.run"])
        try await merger.removeAll(under: "runs/acme/1")
        let after = try await merger.list(under: "runs/acme/1")
        XCTAssertEqual(after, [])
    }
}
